from __future__ import annotations

import numpy as np
import pytest

from tabgrid.client.tiling import assemble_mandelbrot, mandelbrot_units, matmul_units


def run_matmul(units: list[dict]) -> dict[int, dict[str, np.ndarray]]:
    """Numpy standing in for the matmul kernel, unit by unit."""
    return {k: {"c": u["inputs"]["a"] @ u["inputs"]["b"]} for k, u in enumerate(units)}


@pytest.mark.parametrize(("m", "k", "n", "tile"), [(64, 32, 48, 16), (37, 5, 23, 8), (3, 4, 5, 64)])
def test_matmul_tiles_reassemble_to_the_product(m: int, k: int, n: int, tile: int) -> None:
    rng = np.random.default_rng(m * n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    units, assemble = matmul_units(a, b, tile)
    assert len(units) == -(-m // tile) * -(-n // tile)
    for unit in units:
        block_a, block_b = unit["inputs"]["a"], unit["inputs"]["b"]
        assert block_a.dtype == np.float32 and block_a.flags.c_contiguous
        assert block_b.flags.c_contiguous and block_a.shape[1] == block_b.shape[0] == k
    c = assemble(run_matmul(units))
    assert c.dtype == np.float32 and c.shape == (m, n)
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)


def test_matmul_blocks_are_shared_so_they_upload_once() -> None:
    a = np.ones((32, 8), np.float32)
    b = np.ones((8, 32), np.float32)
    units, _ = matmul_units(a, b, 16)
    assert len(units) == 4
    assert len({id(u["inputs"]["a"]) for u in units}) == 2
    assert len({id(u["inputs"]["b"]) for u in units}) == 2
    assert all("params" not in u for u in units), "matmul takes no params"
    assert units[1]["inputs"]["a"] is units[0]["inputs"]["a"]
    assert units[2]["inputs"]["b"] is units[0]["inputs"]["b"]


def test_matmul_rejects_bad_shapes_and_reports_missing_tiles() -> None:
    with pytest.raises(ValueError, match="inner dimensions"):
        matmul_units(np.ones((2, 3)), np.ones((4, 2)), 2)
    with pytest.raises(ValueError, match="tile"):
        matmul_units(np.ones((2, 3)), np.ones((3, 2)), 0)
    units, assemble = matmul_units(np.ones((4, 3)), np.ones((3, 4)), 2)
    results = run_matmul(units)
    del results[2]
    with pytest.raises(KeyError, match="unit 2 .tile i=1 j=0"):
        assemble(results)
    results = run_matmul(units)
    results[1]["c"] = np.zeros((1, 2), np.float32)
    with pytest.raises(ValueError, match="shape"):
        assemble(results)


def mandelbrot(p: dict) -> np.ndarray:
    """Numpy standing in for the mandelbrot kernel: pixel centres, row 0 at y0."""
    xs = p["x0"] + (np.arange(p["width"]) + 0.5) * (p["x1"] - p["x0"]) / p["width"]
    ys = p["y0"] + (np.arange(p["height"]) + 0.5) * (p["y1"] - p["y0"]) / p["height"]
    c = xs[None, :] + 1j * ys[:, None]
    z = np.zeros_like(c)
    iters = np.zeros(c.shape, np.uint32)
    for _ in range(p["max_iter"]):
        inside = np.abs(z) <= 2
        z[inside] = z[inside] ** 2 + c[inside]
        iters += inside
    return iters


def test_mandelbrot_tiles_cover_the_region_exactly() -> None:
    units = mandelbrot_units(-2.0, -1.25, 0.5, 1.25, 50, 40, 16, 30)
    assert len(units) == 4 * 3
    params = [u["params"] for u in units]
    assert params[0]["x0"] == -2.0 and params[0]["y0"] == -1.25
    assert params[-1]["x1"] == 0.5 and params[-1]["y1"] == 1.25
    assert params[3]["width"] == 50 - 48 and params[-1]["height"] == 40 - 32
    # Neighbours share their edge exactly, so no pixel column falls between two tiles.
    assert params[0]["x1"] == params[1]["x0"] and params[0]["y1"] == params[4]["y0"]
    assert all(p["max_iter"] == 30 for p in params)


def test_mandelbrot_tiles_reassemble_to_the_whole_picture() -> None:
    width, height, tile = 50, 40, 16
    units = mandelbrot_units(-2.0, -1.25, 0.5, 1.25, width, height, tile, 30)
    results = {k: {"iters": mandelbrot(u["params"])} for k, u in enumerate(units)}
    image = assemble_mandelbrot(results, width, height, tile)
    whole = mandelbrot(
        {"x0": -2.0, "y0": -1.25, "x1": 0.5, "y1": 1.25, "width": width, "height": height}
        | {"max_iter": 30}
    )
    assert image.dtype == np.uint32 and image.shape == (height, width)
    # Tile edges are rounded separately, which may flip a pixel right on the set's boundary.
    assert np.count_nonzero(image != whole) <= 2
    assert image.max() == 30 and image.min() < 5


def test_mandelbrot_assembly_checks_tiles() -> None:
    units = mandelbrot_units(0, 0, 1, 1, 8, 8, 4, 5)
    results = {k: {"iters": np.full((4, 4), k, np.uint32)} for k in range(len(units))}
    image = assemble_mandelbrot(results, 8, 8, 4)
    assert image[0, 0] == 0 and image[0, 7] == 1 and image[7, 0] == 2 and image[7, 7] == 3
    results[3] = {"iters": np.zeros((3, 4), np.uint32)}
    with pytest.raises(ValueError, match="unit 3"):
        assemble_mandelbrot(results, 8, 8, 4)
    del results[3]
    with pytest.raises(KeyError, match="unit 3"):
        assemble_mandelbrot(results, 8, 8, 4)
