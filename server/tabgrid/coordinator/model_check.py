"""Checks a model import: a BERT sentence encoder with mean pooling and normalisation, its
config within bounds, every weight tensor the encoder needs in the shape its config implies.

Every mistake is reported at once. What is accepted is what the ``embed`` kernel computes:
BERT (absolute positions, GELU), then the mean over the attention mask, then L2 normalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any

from tabgrid.protocol import BlobRef, ModelImport
from tabgrid.runtime.array import ITEMSIZE
from tabgrid.store.models import ModelRecord

PREFIX = "bert."  # BertForMaskedLM and friends keep the encoder under this name
# Bounds on what a volunteer's GPU is asked to hold and run (bert-large is 24 x 1024).
BOUNDS = {
    "hidden_size": 4096,
    "num_hidden_layers": 48,
    "num_attention_heads": 64,
    "intermediate_size": 16384,
    "max_position_embeddings": 8192,
    "type_vocab_size": 16,
    "vocab_size": 500_000,
}
SUPPORTED_ACT = ("gelu",)  # the erf GELU; gelu_new (tanh) is another function
POOLING_MODES = ("cls_token", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens")
TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"


@dataclass(frozen=True)
class Checked:
    record: ModelRecord | None
    errors: list[str]
    ignored: list[str]


def check(body: ModelImport, size_of: Callable[[str], int | None]) -> Checked:
    """The record to register, or every reason not to. ``size_of`` gives a stored blob's size
    (None when the coordinator does not have it)."""
    errors: list[str] = []
    config = _config(body.config, errors)
    _modules(body.modules, errors)
    _pooling(body.pooling, config.get("hidden_size"), errors)
    max_seq = _max_seq_length(body.sentence_bert, config, errors)
    errors += _blob_errors("tokenizer", body.tokenizer, size_of, dtype="uint8")
    tensors = {_strip(name): ref for name, ref in body.tensors.items()}
    wanted = expected_tensors(config) if all(k in config for k in BOUNDS) else {}
    ignored = sorted(name for name in tensors if wanted and name not in wanted)
    for name, shape in wanted.items():
        ref = tensors.get(name)
        if ref is None:
            errors.append(f"tensors: {name} is missing (a BERT encoder needs {shape})")
        elif list(ref.shape) != shape:
            errors.append(f"tensors.{name}: shape {list(ref.shape)}; the config implies {shape}")
        else:
            errors += _blob_errors(f"tensors.{name}", ref, size_of, dtype="float32")
    if errors:
        return Checked(None, errors, ignored)
    kernel_config = {k: config[k] for k in BOUNDS} | {
        "layer_norm_eps": config["layer_norm_eps"],
        "max_seq_length": max_seq,
        "pooling": "mean",
        "normalize": True,
    }
    record = ModelRecord(
        name=body.name,
        architecture="bert",
        config=kernel_config,
        tokenizer=body.tokenizer,
        tensors={name: tensors[name] for name in wanted},
        lowercase=body.sentence_bert.get("do_lower_case") is True,
    )
    return Checked(record, [], ignored)


def _strip(name: str) -> str:
    return name.removeprefix(PREFIX)


def _config(config: dict[str, Any], errors: list[str]) -> dict[str, Any]:
    """config.json's fields the kernel needs, each checked; {} of those that are wrong."""
    if config.get("model_type") != "bert":
        archs = config.get("architectures") or []
        errors.append(
            f"config.json: model_type {config.get('model_type')!r} (architectures {archs}); "
            "only BERT encoders (model_type 'bert', e.g. BertModel) are supported"
        )
    act = config.get("hidden_act", "gelu")
    if act not in SUPPORTED_ACT:
        errors.append(f"config.json: hidden_act {act!r}; the embed kernel computes 'gelu' (erf)")
    position = config.get("position_embedding_type", "absolute")
    if position != "absolute":
        errors.append(f"config.json: position_embedding_type {position!r}; only 'absolute'")
    found: dict[str, Any] = {}
    for key, high in BOUNDS.items():
        value = config.get(key)
        if not _is_int(value) or not 1 <= value <= high:
            errors.append(f"config.json: {key} must be an integer from 1 to {high}, not {value!r}")
        else:
            found[key] = value
    eps = config.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 < eps < 1:
        errors.append(f"config.json: layer_norm_eps must be a number in (0, 1), not {eps!r}")
    else:
        found["layer_norm_eps"] = float(eps)
    hidden, heads = found.get("hidden_size"), found.get("num_attention_heads")
    if hidden and heads and hidden % heads:
        errors.append(
            f"config.json: hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
        )
    return found


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _modules(modules: list[dict[str, Any]], errors: list[str]) -> None:
    types = [m.get("type") for m in sorted(modules, key=_index)]
    if types != [TRANSFORMER, POOLING, NORMALIZE]:
        short = [str(t).rsplit(".", 1)[-1] for t in types]
        errors.append(
            f"modules.json: the modules are {short}; supported is Transformer, Pooling, "
            "Normalize (a model without Normalize, or with a Dense layer, computes something "
            "the embed kernel does not)"
        )


def _index(module: dict[str, Any]) -> int:
    idx = module.get("idx", 0)
    return idx if _is_int(idx) else 0


def _pooling(pooling: dict[str, Any], hidden: int | None, errors: list[str]) -> None:
    if pooling.get("pooling_mode_mean_tokens") is not True:
        errors.append("1_Pooling/config.json: pooling_mode_mean_tokens must be true")
    others = [m for m in POOLING_MODES if pooling.get(f"pooling_mode_{m}")]
    if others:
        errors.append(f"1_Pooling/config.json: only mean pooling is supported, not {others}")
    dims = pooling.get("word_embedding_dimension", hidden)
    if hidden is not None and dims != hidden:
        errors.append(
            f"1_Pooling/config.json: word_embedding_dimension {dims!r} is not hidden_size {hidden}"
        )


def _max_seq_length(
    sentence_bert: dict[str, Any], config: dict[str, Any], errors: list[str]
) -> int:
    positions = config.get("max_position_embeddings", 512)
    value = sentence_bert.get("max_seq_length", min(positions, 512))
    if not _is_int(value) or not 2 <= value <= positions:
        errors.append(
            f"sentence_bert_config.json: max_seq_length must be an integer from 2 to "
            f"max_position_embeddings ({positions}), not {value!r}"
        )
        return 0
    return value


def expected_tensors(config: dict[str, Any]) -> dict[str, list[int]]:
    """Every weight of the BERT encoder by name (without the 'bert.' prefix), with its shape."""
    h, i = config["hidden_size"], config["intermediate_size"]
    shapes = {
        "embeddings.word_embeddings.weight": [config["vocab_size"], h],
        "embeddings.position_embeddings.weight": [config["max_position_embeddings"], h],
        "embeddings.token_type_embeddings.weight": [config["type_vocab_size"], h],
        "embeddings.LayerNorm.weight": [h],
        "embeddings.LayerNorm.bias": [h],
    }
    for n in range(config["num_hidden_layers"]):
        layer = f"encoder.layer.{n}"
        for part in ("query", "key", "value"):
            shapes[f"{layer}.attention.self.{part}.weight"] = [h, h]
            shapes[f"{layer}.attention.self.{part}.bias"] = [h]
        shapes[f"{layer}.attention.output.dense.weight"] = [h, h]
        shapes[f"{layer}.attention.output.dense.bias"] = [h]
        shapes[f"{layer}.attention.output.LayerNorm.weight"] = [h]
        shapes[f"{layer}.attention.output.LayerNorm.bias"] = [h]
        shapes[f"{layer}.intermediate.dense.weight"] = [i, h]
        shapes[f"{layer}.intermediate.dense.bias"] = [i]
        shapes[f"{layer}.output.dense.weight"] = [h, i]
        shapes[f"{layer}.output.dense.bias"] = [h]
        shapes[f"{layer}.output.LayerNorm.weight"] = [h]
        shapes[f"{layer}.output.LayerNorm.bias"] = [h]
    return shapes


def _blob_errors(
    where: str, ref: BlobRef, size_of: Callable[[str], int | None], dtype: str
) -> list[str]:
    if ref.dtype != dtype:
        return [f"{where}: dtype {ref.dtype}, expected {dtype}"]
    have = size_of(ref.digest)
    if have is None:
        return [f"{where}: blob {ref.digest} is not stored; upload it first (PUT /api/v1/blobs)"]
    need = prod(ref.shape) * ITEMSIZE[ref.dtype]
    if have != need:
        return [f"{where}: blob {ref.digest} holds {have} bytes, its shape needs {need}"]
    return []
