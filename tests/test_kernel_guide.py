"""docs/kernels.md's two worked examples, from the files the guide shows, run on the native
GPU (lavapipe here) and compared with numpy; the job file's ``"shader": "file.wgsl"``; the
demo's wgsl example job."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpu_fixture import arrays, run, shared_gpu, to_numpy
from tabgrid.cli import demo, jobfile
from tabgrid.kernels import wgsl
from tabgrid.runtime import run_unit

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
GUIDE = ROOT / "docs" / "kernels.md"


@pytest.fixture(scope="module")
def gpu() -> Any:
    return shared_gpu()


def example_job(tmp_path: Path, name: str, **npy: np.ndarray) -> jobfile.JobFile:
    """The example's job file and shader copied beside freshly written .npy inputs."""
    for suffix in (".json", ".wgsl"):
        shutil.copy(EXAMPLES / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    for file, value in npy.items():
        np.save(tmp_path / f"{file}.npy", value)
    job = jobfile.load_job_file(tmp_path / f"{name}.json")
    assert job.params["shader"] == (EXAMPLES / f"{name}.wgsl").read_text()
    return job


def run_job(gpu: Any, job: jobfile.JobFile) -> list[dict[str, np.ndarray]]:
    described = {k: (v.dtype.name, v.shape) for k, v in job.inputs.items()}
    assert wgsl.validate_job(job.params, described) == []
    results = []
    for unit in job.units:
        params = job.params | unit["params"]
        inputs = job.inputs | unit["inputs"]
        shapes = {k: (v.dtype.name, v.shape) for k, v in inputs.items()}
        assert wgsl.validate_unit(params, shapes) == []
        out = run(run_unit(gpu, "wgsl", params, arrays(**inputs)))
        results.append({k: to_numpy(v) for k, v in out.items()})
    return results


def test_the_guide_shows_each_example_file_verbatim() -> None:
    guide = GUIDE.read_text()
    for name in ("reduce_sum.wgsl", "reduce_sum.json", "convolve.wgsl", "convolve.json"):
        assert (EXAMPLES / name).read_text().strip() in guide, f"{name} differs from the guide"
    assert "docs/kernels.md" in (ROOT / "README.md").read_text()


def test_tree_reduction_of_a_million_floats_matches_numpy(gpu: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(1 << 20, dtype=np.float32)
    parts = np.split(x, 4)
    job = example_job(tmp_path, "reduce_sum", **{f"x{i}": p for i, p in enumerate(parts)})
    results = run_job(gpu, job)
    partials = [r["partial"] for r in results]
    assert [p.shape for p in partials] == [(512,)] * 4
    # each partial sum is one workgroup's 512 elements, added in float32 in a tree
    for part, got in zip(parts, partials, strict=True):
        want = part.astype(np.float64).reshape(512, 512).sum(axis=1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    total = np.sum([p.sum(dtype=np.float64) for p in partials])
    exact = x.sum(dtype=np.float64)
    # float32 rounding grows with the terms' magnitudes, not with the (cancelling) total
    assert abs(total - exact) <= 1e-6 * np.abs(x).sum(dtype=np.float64)


def test_31_tap_convolution_matches_numpy(gpu: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n, taps = 4096, 31
    xs = [rng.standard_normal(n + taps - 1, dtype=np.float32) for _ in range(2)]
    w = np.hanning(taps + 2)[1:-1].astype(np.float32)
    job = example_job(tmp_path, "convolve", x0=xs[0], x1=xs[1], w=w)
    results = run_job(gpu, job)
    for x, result in zip(xs, results, strict=True):
        want = np.correlate(x.astype(np.float64), w.astype(np.float64), mode="valid")
        assert want.shape == (n,)
        np.testing.assert_allclose(result["y"], want, rtol=1e-5, atol=1e-5)
        # the same as numpy's convolution with the taps reversed
        np.testing.assert_allclose(result["y"], np.convolve(x, w[::-1], "valid"), atol=1e-5)


def test_the_convolution_refuses_an_n_larger_than_its_input(tmp_path: Path) -> None:
    job = example_job(
        tmp_path,
        "convolve",
        x0=np.ones(100, np.float32),
        x1=np.ones(100, np.float32),
        w=np.ones(31, np.float32),
    )
    params = job.params | {"n": 4096}
    assert wgsl.validate_unit(params, {"x": ("float32", (100,)), "w": ("float32", (31,))}) == [
        "input 'x' holds 100 elements, but its 'length' 'n + 30' = 4126: the shader would read "
        "4026 elements past its end, where WebGPU returns zeros or other elements instead of "
        "failing; pass a smaller 'n' or a longer 'x'"
    ]


# ---- "shader": "file.wgsl" in a job file ----------------------------------------------------


def write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_a_job_file_may_name_its_shader_file(tmp_path: Path) -> None:
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "k.wgsl").write_text("@compute @workgroup_size(1) fn main() {}\n")
    doc = {
        "kernel": "wgsl",
        "params": {"shader": "kernels/k.wgsl", "manifest": {}},
        "units": [{"params": {"shader": "kernels/k.wgsl"}}, {}],
    }
    job = jobfile.load_job_file(write(tmp_path / "job.json", doc))
    assert job.params["shader"] == "@compute @workgroup_size(1) fn main() {}\n"
    assert job.units[0]["params"]["shader"] == job.params["shader"]
    # WGSL text itself is kept as it is
    doc["params"]["shader"] = "fn main() {} // not a file.wgsl"
    assert jobfile.load_job_file(write(tmp_path / "job.json", doc)).params["shader"] == (
        "fn main() {} // not a file.wgsl"
    )


def test_a_missing_or_empty_shader_file_is_named(tmp_path: Path) -> None:
    doc = {"kernel": "wgsl", "params": {"shader": "nope.wgsl"}, "units": [{}]}
    with pytest.raises(jobfile.JobFileError) as info:
        jobfile.load_job_file(write(tmp_path / "job.json", doc))
    assert info.value.errors == [
        f'"params": "shader": file not found: nope.wgsl (looked for {tmp_path / "nope.wgsl"}); '
        "name a .wgsl file relative to the job file, or give the WGSL source itself"
    ]
    (tmp_path / "empty.wgsl").write_text("  \n")
    doc["units"] = [{"params": {"shader": "empty.wgsl"}}]
    doc["params"] = {}
    with pytest.raises(jobfile.JobFileError) as info:
        jobfile.load_job_file(write(tmp_path / "job.json", doc))
    assert info.value.errors == [
        '"params" of unit 0: "shader": empty.wgsl is empty; it should hold the WGSL source'
    ]


# ---- the demo's example ---------------------------------------------------------------------


def test_the_demo_writes_a_wgsl_example_that_validates(gpu: Any, tmp_path: Path) -> None:
    assert (EXAMPLES / "reduce_sum.wgsl").read_text() == demo.REDUCE_SUM_WGSL
    path = demo.write_wgsl_example(tmp_path)
    assert path == tmp_path / "example" / "sum.json"
    job = jobfile.load_job_file(path)
    assert job.kernel == "wgsl" and job.policy["quorum"] == 2
    results = run_job(gpu, job)
    for unit, result in zip(job.units, results, strict=True):
        x = unit["inputs"]["x"]
        assert result["partial"].shape == (128,)
        assert abs(result["partial"].sum(dtype=np.float64) - x.sum(dtype=np.float64)) < 1e-2
