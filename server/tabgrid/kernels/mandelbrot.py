"""Escape iteration counts over one tile of the complex plane: a picture people can look at.

Params: the tile's corners ``x0, y0, x1, y1``, its size ``width, height`` in pixels and
``max_iter``. Output ``iters`` (height, width) uint32; row 0 is ``y0``, column 0 is ``x0``,
and each pixel is sampled at its centre.
"""

from __future__ import annotations

import struct
from typing import Any

from tabgrid.kernels import shader_source
from tabgrid.kernels.params import Described, check_int, check_real, check_unknown
from tabgrid.runtime.array import Array
from tabgrid.runtime.gpu import (
    MAX_STORAGE_BUFFER_BINDING_SIZE,
    MAX_WORKGROUPS_PER_DIMENSION,
    Gpu,
)

NAME = "mandelbrot"
VERSION = "1"
TILE = 16
MAX_ITER = 1_000_000
COORD_BOUND = 1e30
FLOPS_PER_ITERATION = 8  # 3 multiplies, 4 adds, one compare in the shader's loop
MAX_DIFFERING_FRACTION = 0.01  # of pixels, by default; see compare()
_SIDE = TILE * MAX_WORKGROUPS_PER_DIMENSION
_CORNERS = ("x0", "y0", "x1", "y1")
_PARAMS = frozenset({*_CORNERS, "width", "height", "max_iter"})
_NO_INPUTS: frozenset[str] = frozenset()
SHADER = shader_source("mandelbrot.wgsl")


def _check(params: dict[str, Any], inputs: Described, *, complete: bool) -> list[str]:
    errors: list[str] = []
    check_unknown(params, _PARAMS, "param(s)", errors)
    if inputs:
        check_unknown(inputs, _NO_INPUTS, "input(s)", errors)
    for name in _CORNERS:
        check_real(params, name, COORD_BOUND, errors, required=complete)
    check_int(params, "width", 1, _SIDE, errors, required=complete)
    check_int(params, "height", 1, _SIDE, errors, required=complete)
    check_int(params, "max_iter", 1, MAX_ITER, errors, required=complete)
    if (
        not errors
        and complete
        and params["width"] * params["height"] * 4 > (MAX_STORAGE_BUFFER_BINDING_SIZE)
    ):
        errors.append("width * height is too large for one tile")
    return errors


def validate_job(params: dict[str, Any], inputs: Described) -> list[str]:
    """The params present at job level (the rest may come with each unit); no inputs."""
    return _check(params, inputs, complete=False)


def validate_unit(params: dict[str, Any], inputs: Described) -> list[str]:
    return _check(params, inputs, complete=True)


def _centres(lo: float, hi: float, count: int) -> list[float]:
    # Computed in float64, in this order, by reference() too: both then round to float32.
    return [lo + (hi - lo) * (j + 0.5) / count for j in range(count)]


async def run(gpu: Gpu, params: dict[str, Any], inputs: dict[str, Array]) -> dict[str, Array]:
    width, height, max_iter = params["width"], params["height"], params["max_iter"]
    xs = _centres(params["x0"], params["x1"], width)
    ys = _centres(params["y0"], params["y1"], height)
    bufs = [
        await gpu.upload(struct.pack(f"<{width}f", *xs)),
        await gpu.upload(struct.pack(f"<{height}f", *ys)),
        await gpu.empty(width * height * 4),
        await gpu.upload(struct.pack("<4I", width, height, max_iter, 0), usage="uniform"),
    ]
    try:
        groups = (-(-width // TILE), -(-height // TILE), 1)
        await gpu.dispatch(SHADER, "main", dict(enumerate(bufs)), groups)
        return {"iters": Array("uint32", (height, width), await gpu.read(bufs[2]))}
    finally:
        gpu.release(*bufs)


def reference(params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The shader's float32 arithmetic, in the same order, vectorised over the tile."""
    import numpy as np

    width, height, max_iter = params["width"], params["height"], params["max_iter"]
    cx = np.array(_centres(params["x0"], params["x1"], width), dtype=np.float32)[None, :]
    cy = np.array(_centres(params["y0"], params["y1"], height), dtype=np.float32)[:, None]
    cx, cy = np.broadcast_arrays(cx, cy)
    zx = np.zeros((height, width), np.float32)
    zy = np.zeros((height, width), np.float32)
    iters = np.zeros((height, width), np.uint32)
    alive = np.ones((height, width), bool)
    two, four = np.float32(2.0), np.float32(4.0)
    for _ in range(max_iter):
        x2, y2 = zx * zx, zy * zy
        alive &= ~(x2 + y2 > four)  # as the shader's test, so NaN stays alive in both
        if not alive.any():
            break
        next_x = x2 - y2 + cx
        zy = np.where(alive, two * zx * zy + cy, zy)
        zx = np.where(alive, next_x, zx)
        iters += alive
    return {"iters": iters}


def compare(a: dict[str, Any], b: dict[str, Any], rtol: float = 0.0, atol: float = 0.0) -> bool:
    """Tiles agree when few enough of their pixels differ.

    Devices round differently (some fuse multiply-adds), and near the set's boundary the
    iteration amplifies that into different counts, so exact equality is too strict. A
    pixel differs when its counts differ by more than ``atol``; the tiles agree when at
    most ``max(rtol, MAX_DIFFERING_FRACTION)`` of the pixels differ. Deep zooms into the
    boundary, where a fifth of the pixels may differ between honest devices, need a job
    policy with a larger rtol.
    """
    import numpy as np

    x, y = np.asarray(a.get("iters")), np.asarray(b.get("iters"))
    if x.shape != y.shape or x.ndim != 2 or x.size == 0:
        return False
    differing = np.abs(x.astype(np.int64) - y.astype(np.int64)) > atol
    return int(differing.sum()) <= max(rtol, MAX_DIFFERING_FRACTION) * x.size


def flops(params: dict[str, Any], inputs: Described) -> float:
    """An upper bound: every pixel running max_iter iterations of the loop."""
    return float(params["width"] * params["height"] * params["max_iter"] * FLOPS_PER_ITERATION)
