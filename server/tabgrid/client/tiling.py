"""Split a big computation into units and put the results back together.

Results are what ``Client.results`` returns: ``{unit index: {output name: array}}``, where the
unit index is the position of the unit in the list that was submitted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Results = Mapping[int, Mapping[str, np.ndarray]]
Unit = dict[str, Any]


def _spans(length: int, tile: int) -> list[tuple[int, int]]:
    return [(start, min(start + tile, length)) for start in range(0, length, tile)]


def _check_tile(tile: int) -> None:
    if not isinstance(tile, int) or tile <= 0:
        raise ValueError(f"tile must be a positive integer, got {tile!r}")


def _output(results: Results, index: int, name: str, where: str) -> np.ndarray:
    try:
        return np.asarray(results[index][name])
    except KeyError:
        raise KeyError(f"no output {name!r} for unit {index} ({where})") from None


def matmul_units(
    a: np.ndarray, b: np.ndarray, tile: int
) -> tuple[list[Unit], Callable[[Results], np.ndarray]]:
    """Units computing ``a @ b`` in ``tile`` x ``tile`` blocks of the result.

    Unit (i, j) gets row block i of ``a`` (tile, K) and column block j of ``b`` (K, tile); each
    block is one array object shared by the units that use it, so uploading sends it once.
    Returns the units and ``assemble(results) -> (M, N) float32``.
    """
    _check_tile(tile)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"a and b must be 2-D, got shapes {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: a is {a.shape}, b is {b.shape}")
    m, n = a.shape[0], b.shape[1]
    rows, cols = _spans(m, tile), _spans(n, tile)
    a_blocks = [np.ascontiguousarray(a[r0:r1], dtype="<f4") for r0, r1 in rows]
    b_blocks = [np.ascontiguousarray(b[:, c0:c1], dtype="<f4") for c0, c1 in cols]
    # The kernel takes no params: a tile's place is kept here, by unit index.
    places = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
    units: list[Unit] = [{"inputs": {"a": a_blocks[i], "b": b_blocks[j]}} for i, j in places]

    def assemble(results: Results) -> np.ndarray:
        c = np.empty((m, n), dtype=np.float32)
        for index, (i, j) in enumerate(places):
            (r0, r1), (c0, c1) = rows[i], cols[j]
            block = _output(results, index, "c", f"tile i={i} j={j}")
            if block.shape != (r1 - r0, c1 - c0):
                raise ValueError(
                    f"unit {index} (tile i={i} j={j}) returned c of shape {block.shape}, "
                    f"expected {(r1 - r0, c1 - c0)}"
                )
            c[r0:r1, c0:c1] = block
        return c

    return units, assemble


def _edges(lo: float, hi: float, pixels: int) -> list[float]:
    # Neighbouring tiles share one computed edge, so the tiles cover the region without gaps.
    return [lo + (hi - lo) * k / pixels for k in range(pixels + 1)]


def mandelbrot_units(
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    width: int,
    height: int,
    tile: int,
    max_iter: int,
) -> list[Unit]:
    """Units rendering the region [x0, x1] x [y0, y1] as a ``height`` x ``width`` image.

    Image row 0 is at y0 and column 0 at x0, as in the kernel. Tiles are at most ``tile`` x
    ``tile`` pixels, listed row by row; each unit's params describe its own sub-region.
    """
    _check_tile(tile)
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width} x {height}")
    xs, ys = _edges(x0, x1, width), _edges(y0, y1, height)
    return [
        {
            "params": {
                "x0": xs[c0],
                "y0": ys[r0],
                "x1": xs[c1],
                "y1": ys[r1],
                "width": c1 - c0,
                "height": r1 - r0,
                "max_iter": max_iter,
            }
        }
        for r0, r1 in _spans(height, tile)
        for c0, c1 in _spans(width, tile)
    ]


def assemble_mandelbrot(results: Results, width: int, height: int, tile: int) -> np.ndarray:
    """The (height, width) uint32 image from the results of ``mandelbrot_units``."""
    _check_tile(tile)
    image = np.empty((height, width), dtype=np.uint32)
    spans = [(r, c) for r in _spans(height, tile) for c in _spans(width, tile)]
    for index, ((r0, r1), (c0, c1)) in enumerate(spans):
        block = _output(results, index, "iters", f"rows {r0}:{r1}, columns {c0}:{c1}")
        if block.shape != (r1 - r0, c1 - c0):
            raise ValueError(
                f"unit {index} returned iters of shape {block.shape}, expected {(r1 - r0, c1 - c0)}"
            )
        image[r0:r1, c0:c1] = block
    return image
