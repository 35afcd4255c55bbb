"""The built-in kernels on a real device, against their numpy references."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from gpu_fixture import arrays, run, shared_gpu, to_numpy
from saxpy import SAXPY, SAXPY_MANIFEST
from tabgrid.kernels import checksum, mandelbrot, matmul, wgsl
from tabgrid.runtime import KernelError, run_unit

WHOLE_SET = {"x0": -2.0, "y0": -1.25, "x1": 0.5, "y1": 1.25, "width": 90, "height": 70}


@pytest.fixture
def gpu() -> Any:
    return shared_gpu()


def _rng() -> np.random.Generator:
    return np.random.default_rng(12345)


# ---- matmul ---------------------------------------------------------------------------------


def _matmul(gpu: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return to_numpy(run(run_unit(gpu, "matmul", {}, arrays(a=a, b=b)))["c"])


@pytest.mark.parametrize(("m", "k", "n"), [(64, 48, 80), (17, 33, 5), (1, 1, 1), (31, 16, 47)])
def test_matmul_matches_numpy(gpu: Any, m: int, k: int, n: int) -> None:
    rng = _rng()
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = _matmul(gpu, a, b)
    assert c.shape == (m, n) and c.dtype == np.float32
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c, matmul.reference({}, {"a": a, "b": b})["c"], rtol=1e-5, atol=1e-5)


def test_freivalds_accepts_the_gpu_product_and_rejects_one_wrong_element(gpu: Any) -> None:
    rng = _rng()
    a = rng.standard_normal((64, 48), dtype=np.float32)
    b = rng.standard_normal((48, 80), dtype=np.float32)
    inputs = {"a": a, "b": b}
    c = _matmul(gpu, a, b)
    assert matmul.verify({}, inputs, {"c": c})
    for seed in range(5):
        wrong = c.copy()
        wrong[seed * 7, 3 + seed] += 0.5
        assert not matmul.verify({}, inputs, {"c": wrong}, seed=seed)


def test_freivalds_tolerates_rounding_but_not_garbage() -> None:
    rng = _rng()
    a = rng.standard_normal((40, 30), dtype=np.float32)
    b = rng.standard_normal((30, 20), dtype=np.float32)
    c = (a.astype(np.float64) @ b).astype(np.float32)
    inputs = {"a": a, "b": b}
    assert matmul.verify({}, inputs, {"c": np.nextafter(c, np.float32(np.inf))})
    assert not matmul.verify({}, inputs, {"c": np.zeros_like(c)})
    assert not matmul.verify({}, inputs, {"c": c.T.copy()})  # wrong shape
    assert not matmul.verify({}, inputs, {})
    nan = c.copy()
    nan[0, 0] = np.nan
    assert not matmul.verify({}, inputs, {"c": nan})


@pytest.mark.parametrize(
    ("params", "inputs", "message"),
    [
        ({}, {"a": ("float32", (2, 3)), "b": ("float32", (4, 2))}, "a's columns must equal"),
        ({}, {"a": ("float64", (2, 3)), "b": ("float32", (3, 2))}, "'a' must be float32"),
        ({}, {"a": ("float32", (6,)), "b": ("float32", (3, 2))}, "'a' must be 2-D"),
        ({}, {"a": ("float32", (2, 3))}, "input 'b' is missing"),
        ({}, {"a": ("float32", (0, 3)), "b": ("float32", (3, 2))}, "is empty"),
        ({"tile": 8}, {"a": ("float32", (2, 3)), "b": ("float32", (3, 2))}, "unknown param"),
        ({}, {"a": ("float32", (1, 1)), "b": ("float32", (1, 1)), "c": ("float32", (1,))}, "'c'"),
    ],
)
def test_matmul_validate_unit_names_the_problem(
    params: dict[str, Any], inputs: dict[str, Any], message: str
) -> None:
    errors = matmul.validate_unit(params, inputs)
    assert any(message in e for e in errors), errors


def test_matmul_validate_job_allows_inputs_per_unit() -> None:
    assert matmul.validate_job({}, {"a": ("float32", (4, 3))}) == []
    assert matmul.validate_unit({}, {"a": ("float32", (4, 3)), "b": ("float32", (3, 2))}) == []


def test_matmul_flops() -> None:
    inputs = {"a": ("float32", (64, 48)), "b": ("float32", (48, 80))}
    assert matmul.flops({}, inputs) == 2 * 64 * 80 * 48


def test_matmul_validate_unit_is_cheap() -> None:
    inputs = {"a": ("float32", (64, 48)), "b": ("float32", (48, 80))}
    start = time.perf_counter()
    for _ in range(100_000):
        matmul.validate_unit({}, inputs)
    assert time.perf_counter() - start < 3.0


# ---- mandelbrot -----------------------------------------------------------------------------


def test_mandelbrot_tile_agrees_with_the_float32_reference(gpu: Any) -> None:
    params = {**WHOLE_SET, "max_iter": 100}
    iters = to_numpy(run(run_unit(gpu, "mandelbrot", params, {}))["iters"])
    expected = mandelbrot.reference(params, {})["iters"]
    assert iters.shape == (70, 90) and iters.dtype == np.uint32
    assert mandelbrot.compare({"iters": iters}, {"iters": expected})
    differing = iters != expected
    assert differing.mean() < 0.01
    # Rounding differences need many iterations to grow, so early escapes match exactly.
    assert not differing[expected < 40].any()
    # The picture is the set: the centre of the main cardioid never escapes, corners do.
    assert iters[35, 63] == 100 and iters[0, 0] < 3


def test_mandelbrot_rows_start_at_y0_and_columns_at_x0(gpu: Any) -> None:
    # A tile straddling the real axis only on its top rows: y0 inside the set's reach.
    params = {"x0": -0.5, "y0": 0.0, "x1": -0.4, "y1": 2.0, "width": 4, "height": 32}
    iters = to_numpy(run(run_unit(gpu, "mandelbrot", {**params, "max_iter": 50}, {}))["iters"])
    assert (iters[0] == 50).all()  # near the real axis, inside the cardioid
    assert (iters[-1] < 5).all()  # at y ~ 2, outside at once


def test_mandelbrot_compare_rejects_wrong_tiles() -> None:
    params = {**WHOLE_SET, "max_iter": 60}
    good = mandelbrot.reference(params, {})["iters"]
    assert not mandelbrot.compare({"iters": good}, {"iters": np.zeros_like(good)})
    assert not mandelbrot.compare({"iters": good}, {"iters": good[:, ::-1]})
    assert not mandelbrot.compare({"iters": good}, {"iters": good[:-1]})
    scribbled = good.copy()
    scribbled.flat[::20] += 1  # 5% of the pixels
    assert not mandelbrot.compare({"iters": good}, {"iters": scribbled})
    assert mandelbrot.compare({"iters": good}, {"iters": scribbled}, rtol=0.06)
    few = good.copy()
    few.flat[::200] += 1  # 0.5% of the pixels
    assert mandelbrot.compare({"iters": good}, {"iters": few})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": 0}, "'width' must be an integer"),
        ({"height": 2.5}, "'height' must be an integer"),
        ({"max_iter": 10**9}, "'max_iter' must be an integer"),
        ({"x0": float("nan")}, "'x0' must be a number"),
        ({"y1": "1"}, "'y1' must be a number"),
        ({"zoom": 2}, "unknown param(s) 'zoom'"),
    ],
)
def test_mandelbrot_validate_unit_names_the_problem(change: dict[str, Any], message: str) -> None:
    errors = mandelbrot.validate_unit({**WHOLE_SET, "max_iter": 10, **change}, {})
    assert any(message in e for e in errors), errors


def test_mandelbrot_job_params_may_be_completed_per_unit() -> None:
    job = {"width": 64, "height": 64, "max_iter": 100}
    assert mandelbrot.validate_job(job, {}) == []
    assert "param 'x0' is required" in mandelbrot.validate_unit(job, {})
    assert "unknown input(s) 'z'" in mandelbrot.validate_job(job, {"z": ("uint8", (1,))})[0]
    assert mandelbrot.flops({**WHOLE_SET, "max_iter": 100}, {}) == 90 * 70 * 100 * 8


# ---- wgsl -----------------------------------------------------------------------------------


def test_wgsl_saxpy_through_run_unit_equals_numpy(gpu: Any) -> None:
    rng = _rng()
    n = 1000  # not a multiple of the workgroup size
    x = rng.standard_normal(n, dtype=np.float32)
    y = rng.standard_normal(n, dtype=np.float32)
    params = {"shader": SAXPY, "manifest": SAXPY_MANIFEST, "a": 2.5, "n": n}
    assert wgsl.validate_job(params, {"x": ("float32", (n,))}) == []
    out = run(run_unit(gpu, "wgsl", params, arrays(x=x, y=y)))
    assert set(out) == {"out"}
    assert out["out"].dtype == "float32" and out["out"].shape == (n,)
    np.testing.assert_allclose(to_numpy(out["out"]), np.float32(2.5) * x + y, rtol=1e-6)
    assert wgsl.flops(params, {}) == n


def test_wgsl_integer_outputs_and_two_dimensional_workgroups(gpu: Any) -> None:
    shader = """
    struct Size { w: u32, h: u32 }
    @group(0) @binding(0) var<storage, read> v: array<i32>;
    @group(0) @binding(1) var<storage, read_write> grid: array<i32>;
    @group(0) @binding(2) var<uniform> size: Size;
    @compute @workgroup_size(8, 8)
    fn fill(@builtin(global_invocation_id) id: vec3<u32>) {
        if (id.x < size.w && id.y < size.h) {
            grid[id.y * size.w + id.x] = v[id.x] * i32(id.y);
        }
    }
    """
    manifest = {
        "entry": "fill",
        "bindings": [
            {"binding": 0, "input": "v"},
            {"binding": 1, "output": "grid", "type": "i32", "length": "w * h"},
            {"binding": 2, "uniform": [{"name": "w", "type": "u32"}, {"name": "h", "type": "u32"}]},
        ],
        "workgroups": ["ceil(w / 8)", "ceil(h / 8)", 1],
    }
    v = np.arange(-5, 15, dtype=np.int32)
    params = {"shader": shader, "manifest": manifest, "w": 20, "h": 11}
    out = run(run_unit(gpu, "wgsl", params, arrays(v=v)))["grid"]
    assert out.dtype == "int32"
    np.testing.assert_array_equal(to_numpy(out).reshape(11, 20), np.outer(np.arange(11), v))


def test_wgsl_syntax_error_surfaces_with_the_compilers_message(gpu: Any) -> None:
    broken = SAXPY.replace("let i = id.x;", "let i = id.x")
    params = {"shader": broken, "manifest": SAXPY_MANIFEST, "a": 1.0, "n": 4}
    assert wgsl.validate_job(params, {}) == []  # only the compiler can tell
    x = np.ones(4, np.float32)
    with pytest.raises(KernelError) as info:
        run(run_unit(gpu, "wgsl", params, arrays(x=x, y=x)))
    assert "expected `;`" in str(info.value)


def test_wgsl_has_no_cpu_reference() -> None:
    with pytest.raises(KernelError, match="no CPU reference"):
        wgsl.reference({"shader": SAXPY, "manifest": SAXPY_MANIFEST}, {})


# ---- checksum -------------------------------------------------------------------------------


def test_checksum_is_deterministic_and_matches_its_reference() -> None:
    rng = _rng()
    x = rng.standard_normal((3, 4), dtype=np.float32)
    z = np.arange(5, dtype=np.int64)
    params = {"b": [1, 2], "a": {"y": 1.5, "x": "s"}}
    first = to_numpy(run(run_unit(None, "checksum", params, arrays(x=x, z=z)))["digest"])
    # Same content, other insertion orders: same digest.
    again = run(run_unit(None, "checksum", dict(reversed(params.items())), arrays(z=z, x=x)))
    assert first.dtype == np.uint8 and first.shape == (32,)
    np.testing.assert_array_equal(to_numpy(again["digest"]), first)
    np.testing.assert_array_equal(checksum.reference(params, {"x": x, "z": z})["digest"], first)
    assert checksum.flops(params, {}) == 0


@pytest.mark.parametrize(
    "change",
    [
        {"params": {"b": [1, 2], "a": {"y": 1.5, "x": "t"}}},
        {"x": np.zeros((3, 4), np.float32)},
        {"x": np.ones((4, 3), np.float32)},  # same bytes, other shape
        {"x": np.ones((3, 4), np.float32).view(np.int32)},  # same bytes, other dtype
    ],
)
def test_checksum_changes_with_any_input_or_param(change: dict[str, Any]) -> None:
    params = {"b": [1, 2], "a": {"y": 1.5, "x": "s"}}
    x = np.ones((3, 4), np.float32)
    base = checksum.reference(params, {"x": x})["digest"]
    other = checksum.reference(change.get("params", params), {"x": change.get("x", x)})["digest"]
    assert not np.array_equal(base, other)
