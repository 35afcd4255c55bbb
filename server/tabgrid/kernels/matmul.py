"""c = a @ b in float32, tiled through workgroup memory; a Freivalds verifier.

Inputs ``a`` (m, k) and ``b`` (k, n), float32; output ``c`` (m, n) float32. No params.
"""

from __future__ import annotations

import struct
from typing import Any

from tabgrid.kernels import shader_source
from tabgrid.kernels.params import Described, check_unknown
from tabgrid.runtime.array import Array
from tabgrid.runtime.gpu import (
    MAX_STORAGE_BUFFER_BINDING_SIZE,
    MAX_WORKGROUPS_PER_DIMENSION,
    Gpu,
)

NAME = "matmul"
VERSION = "1"
TILE = 16
FREIVALDS_ROUNDS = 3
_INPUTS = frozenset({"a", "b"})
_NO_PARAMS: frozenset[str] = frozenset()
_MAX_ELEMENTS = MAX_STORAGE_BUFFER_BINDING_SIZE // 4
_MAX_SIDE = TILE * MAX_WORKGROUPS_PER_DIMENSION
SHADER = shader_source("matmul.wgsl")


def _matrix(name: str, described: tuple[str, tuple[int, ...]], errors: list[str]) -> None:
    dtype, shape = described
    if dtype != "float32":
        errors.append(f"input {name!r} must be float32, not {dtype}")
    if len(shape) != 2:
        errors.append(f"input {name!r} must be 2-D, not shape {shape}")
    elif not (shape[0] > 0 and shape[1] > 0 and shape[0] * shape[1] <= _MAX_ELEMENTS):
        errors.append(f"input {name!r} of shape {shape} is empty or over {_MAX_ELEMENTS} elements")


def _check(params: dict[str, Any], inputs: Described, *, complete: bool) -> list[str]:
    errors: list[str] = []
    if params:
        check_unknown(params, _NO_PARAMS, "param(s)", errors)
    check_unknown(inputs, _INPUTS, "input(s)", errors)
    for name in ("a", "b"):
        if name in inputs:
            _matrix(name, inputs[name], errors)
        elif complete:
            errors.append(f"input {name!r} is missing")
    if errors or "a" not in inputs or "b" not in inputs:
        return errors
    (m, k), (k2, n) = inputs["a"][1], inputs["b"][1]
    if k != k2:
        errors.append(f"a is {m}x{k} and b is {k2}x{n}: a's columns must equal b's rows")
    if m > _MAX_SIDE or n > _MAX_SIDE or m * n > _MAX_ELEMENTS:
        errors.append(f"c would be {m}x{n}, larger than one dispatch can compute")
    return errors


def validate_job(params: dict[str, Any], inputs: Described) -> list[str]:
    """The job-level inputs present: float32, 2-D, inner dimensions agree."""
    return _check(params, inputs, complete=False)


def validate_unit(params: dict[str, Any], inputs: Described) -> list[str]:
    return _check(params, inputs, complete=True)


async def run(gpu: Gpu, params: dict[str, Any], inputs: dict[str, Array]) -> dict[str, Array]:
    a, b = inputs["a"], inputs["b"]
    (m, k), n = a.shape, b.shape[1]
    bufs = [
        await gpu.upload(a.data),
        await gpu.upload(b.data),
        await gpu.empty(m * n * 4),
        await gpu.upload(struct.pack("<4I", m, n, k, 0), usage="uniform"),
    ]
    try:
        groups = (-(-n // TILE), -(-m // TILE), 1)
        await gpu.dispatch(SHADER, "main", dict(enumerate(bufs)), groups)
        return {"c": Array("float32", (m, n), await gpu.read(bufs[2]))}
    finally:
        gpu.release(*bufs)


def reference(params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    a = np.asarray(inputs["a"], dtype=np.float32)
    b = np.asarray(inputs["b"], dtype=np.float32)
    return {"c": (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)}


def flops(params: dict[str, Any], inputs: Described) -> float:
    """2*m*n*k: one multiply and one add per term."""
    (m, k), n = inputs["a"][1], inputs["b"][1][1]
    return 2.0 * m * n * k


def verify(
    params: dict[str, Any],
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    *,
    seed: int | None = None,
) -> bool:
    """Freivalds: c @ r == a @ (b @ r) for random r, within float32 rounding of a @ b.

    In any summation order a float32 dot product of length k differs from the exact one by
    at most (k + 1) * 2**-24 * sum_j |a_ij| |b_jl|, so the residual is held to that bound
    applied to |a| (|b| |r|): an honest result always passes, and a wrong element is caught
    unless its error is within that rounding envelope. Non-finite values cannot be checked
    this way, so such a result is not accepted on its own.
    """
    import numpy as np

    a = np.asarray(inputs["a"], dtype=np.float64)
    b = np.asarray(inputs["b"], dtype=np.float64)
    c = outputs.get("c")
    if c is None or a.ndim != 2 or b.ndim != 2 or np.shape(c) != (a.shape[0], b.shape[1]):
        return False
    c = np.asarray(c, dtype=np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all() and np.isfinite(c).all()):
        return False
    k = a.shape[1]
    r = np.random.default_rng(seed).standard_normal((b.shape[1], FREIVALDS_ROUNDS))
    residual = np.abs(c @ r - a @ (b @ r))
    abs_r = np.abs(r)
    rounding = (k + 2) * 2.0**-24 * (np.abs(a) @ (np.abs(b) @ abs_r))
    # Devices that flush subnormals lose up to the smallest normal per operation; the
    # float64 check itself adds a relative error far below float32's.
    flushed = 2 * k * np.finfo(np.float32).tiny * abs_r.sum(axis=0)
    checking = 1e-12 * (np.abs(c) @ abs_r)
    return bool(np.all(residual <= rounding + flushed + checking))
