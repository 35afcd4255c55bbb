"""The job file: a JSON description of a job whose arrays are .npy files beside it.

A ``"shader"`` param that names a ``.wgsl`` file (``"shader": "sum.wgsl"``) is read from that
file, relative to the job file, so a wgsl kernel's source need not be an escaped JSON string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


from tabgrid.cli.common import CliError

JOB_KEYS = frozenset({"kernel", "name", "params", "policy", "inputs", "units"})
UNIT_KEYS = frozenset({"params", "inputs"})
# a "shader" that is a file's name rather than WGSL source: one line, no braces or semicolons
SHADER_FILE = re.compile(r"[^\n{};()]+\.wgsl")


class JobFileError(CliError):
    """Everything wrong with one job file, listed at once."""

    def __init__(self, path: Path, errors: Sequence[str]) -> None:
        self.path = path
        self.errors = list(errors)
        lines = [f"{path}: {error}" for error in self.errors]
        super().__init__("\n".join(lines))


@dataclass
class JobFile:
    """A job file with its .npy inputs loaded, ready for ``Client.submit``."""

    kernel: str
    units: list[dict[str, Any]]
    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)


def load_job_file(path: Path) -> JobFile:
    """Read a JSON job file; .npy paths in it are relative to the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"job file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read job file {path}: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise JobFileError(path, [f"not valid JSON at {where}: {exc.msg}"]) from None
    return _JobFileReader(path).read(doc)


class _JobFileReader:
    """Checks the document's shape and loads arrays, collecting every mistake."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent
        self.errors: list[str] = []
        self._arrays: dict[Path, np.ndarray] = {}

    def read(self, doc: object) -> JobFile:
        if not isinstance(doc, dict):
            raise JobFileError(self.path, [f"expected a JSON object, got {_kind(doc)}"])
        self._unknown_keys(doc, JOB_KEYS, "the job")
        kernel = doc.get("kernel")
        if not isinstance(kernel, str) or not kernel:
            self.errors.append('"kernel" is required: the name of a kernel, e.g. "matmul"')
        name = doc.get("name", "")
        if not isinstance(name, str):
            self.errors.append(f'"name" must be a string, got {_kind(name)}')
        params = self._shader(self._object(doc.get("params", {}), '"params"'), '"params"')
        policy = self._policy(doc.get("policy", {}))
        inputs = self._inputs(doc.get("inputs", {}), '"inputs"')
        units = self._units(doc.get("units"))
        if self.errors:
            raise JobFileError(self.path, self.errors)
        return JobFile(
            kernel=str(kernel),
            units=units,
            name=str(name),
            params=params,
            policy=policy,
            inputs=inputs,
        )

    def _unknown_keys(self, obj: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
        for key in sorted(set(obj) - allowed):
            expected = ", ".join(sorted(allowed))
            self.errors.append(f"unknown key {key!r} in {where} (expected: {expected})")

    def _object(self, value: object, where: str) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        self.errors.append(f"{where} must be an object, got {_kind(value)}")
        return {}

    def _policy(self, value: object) -> dict[str, Any]:
        import msgspec

        from tabgrid.protocol import Policy

        policy = self._object(value, '"policy"')
        try:
            msgspec.convert(policy, Policy)
        except msgspec.ValidationError as exc:
            self.errors.append(f'"policy": {exc}')
        return policy

    def _units(self, value: object) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not value:
            self.errors.append('"units" is required: a non-empty list of {"params", "inputs"}')
            return []
        units = []
        for index, unit in enumerate(value):
            where = f"unit {index}"
            if not isinstance(unit, dict):
                self.errors.append(f"{where} must be an object, got {_kind(unit)}")
                continue
            self._unknown_keys(unit, UNIT_KEYS, where)
            params = self._shader(
                self._object(unit.get("params", {}), f'"params" of {where}'), f'"params" of {where}'
            )
            inputs = self._inputs(unit.get("inputs", {}), f'"inputs" of {where}')
            units.append({"params": params, "inputs": inputs})
        return units

    def _shader(self, params: dict[str, Any], where: str) -> dict[str, Any]:
        """``params`` with a ``"shader": "file.wgsl"`` replaced by that file's text."""
        ref = params.get("shader")
        if not isinstance(ref, str) or not SHADER_FILE.fullmatch(ref.strip()):
            return params
        path = (self.base / ref.strip()).resolve()
        what = f'{where}: "shader"'
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.errors.append(
                f"{what}: file not found: {ref} (looked for {path}); name a .wgsl file relative "
                "to the job file, or give the WGSL source itself"
            )
            return params
        except (OSError, UnicodeDecodeError) as exc:
            self.errors.append(f"{what}: cannot read {ref}: {exc}")
            return params
        if not text.strip():
            self.errors.append(f"{what}: {ref} is empty; it should hold the WGSL source")
            return params
        return {**params, "shader": text}

    def _inputs(self, value: object, where: str) -> dict[str, np.ndarray]:
        arrays = {}
        for name, ref in self._object(value, where).items():
            if not isinstance(ref, str) or not ref:
                self.errors.append(f"{where}: {name!r} must be the path of a .npy file")
                continue
            array = self._array(ref, f"input {name!r} ({where})")
            if array is not None:
                arrays[name] = array
        return arrays

    def _array(self, ref: str, what: str) -> np.ndarray | None:
        path = (self.base / ref).resolve()
        if path not in self._arrays:
            array = self._load(path, ref, what)
            if array is None:
                return None
            self._arrays[path] = array
        return self._arrays[path]

    def _load(self, path: Path, ref: str, what: str) -> np.ndarray | None:
        import numpy as np

        from tabgrid.protocol import DType

        if not path.is_file():
            self.errors.append(f"{what}: file not found: {ref} (looked for {path})")
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            self.errors.append(f"{what}: {ref} is not a .npy array: {exc}")
            return None
        if not isinstance(array, np.ndarray):
            self.errors.append(f"{what}: {ref} holds several arrays; save one array per .npy")
            return None
        allowed = DType.__args__
        if array.dtype.name not in allowed:
            names = ", ".join(allowed)
            self.errors.append(f"{what}: {ref} has dtype {array.dtype.name}; use one of {names}")
            return None
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "null"
    return names.get(type(value), f"a {type(value).__name__}")
