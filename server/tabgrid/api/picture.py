"""A mandelbrot job's picture as far as its tiles are validated, as a PNG (for the console)."""

from __future__ import annotations

from typing import Any

from tabgrid import png

MAX_PIXELS = 4096 * 4096
MAX_TILES = 10_000
PENDING = (42, 47, 58)  # tiles not validated yet
# Blue through white to amber, a palette that reads on a dark page; the set itself is black.
_STOPS = ((0.0, (12, 20, 69)), (0.35, (36, 104, 196)), (0.7, (238, 242, 255)), (1.0, (255, 170, 0)))


class PictureError(ValueError):
    """The job is not a picture this coordinator will draw."""


def _palette(t: Any) -> Any:
    import numpy as np

    xs = [s[0] for s in _STOPS]
    return np.stack([np.interp(t, xs, [s[1][c] for s in _STOPS]) for c in range(3)], axis=-1)


def render(tiles: list[tuple[dict, Any | None]]) -> bytes:
    """tiles: (unit params, its iters array or None when not validated yet) -> PNG bytes.

    Each tile's place comes from its region: the picture spans all tiles' regions at the
    pixel size of the first tile.
    """
    import numpy as np

    if not tiles:
        raise PictureError("the job has no tiles")
    if len(tiles) > MAX_TILES:
        raise PictureError(f"the job has {len(tiles)} tiles; pictures are drawn up to {MAX_TILES}")
    p0 = tiles[0][0]
    dx = (p0["x1"] - p0["x0"]) / p0["width"]
    dy = (p0["y1"] - p0["y0"]) / p0["height"]
    x_lo = min(p["x0"] for p, _ in tiles)
    y_lo = min(p["y0"] for p, _ in tiles)
    places = [(round((p["y0"] - y_lo) / dy), round((p["x0"] - x_lo) / dx)) for p, _ in tiles]
    height = max(r + p["height"] for (r, _), (p, _) in zip(places, tiles, strict=True))
    width = max(c + p["width"] for (_, c), (p, _) in zip(places, tiles, strict=True))
    if width * height > MAX_PIXELS:
        raise PictureError(f"the picture would be {width}x{height}, over {MAX_PIXELS} pixels")
    image = np.empty((height, width, 3), np.uint8)
    image[:] = PENDING
    for (row, col), (params, iters) in zip(places, tiles, strict=True):
        if iters is None:
            continue
        max_iter = max(int(params["max_iter"]), 1)
        t = np.log1p(iters.astype(np.float64)) / np.log1p(max_iter)
        rgb = _palette(t)
        rgb[iters >= max_iter] = 0
        h, w = iters.shape
        image[row : row + h, col : col + w] = rgb.astype(np.uint8)
    return png.encode(np.ascontiguousarray(image[::-1]))  # row 0 is y0: the bottom
