"""docs/kernels.md's sum of a million floats through a real coordinator and two native workers
(lavapipe), from the guide's own job file and shader; and a shader that leaves elements
unwritten coming back as a failed unit with the worker's message, not as zeros."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tabgrid.cli.jobfile import load_job_file

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_the_guides_reduction_through_a_coordinator_matches_numpy(cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cluster.worker()
    cluster.worker()
    for name in ("reduce_sum.json", "reduce_sum.wgsl"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    x = np.random.default_rng(5).standard_normal(1 << 20, dtype=np.float32)
    parts = np.split(x, 4)
    for i, part in enumerate(parts):
        np.save(tmp_path / f"x{i}.npy", part)
    job = load_job_file(tmp_path / "reduce_sum.json")
    with cluster.client() as client:
        status = client.submit(
            job.kernel, job.units, params=job.params, policy=job.policy, name=job.name
        )
        assert client.wait(status.id, progress=False, timeout=300).state == "done"
        results = client.results(status.id)
        assert all(u.replicas >= 2 for u in client.units(status.id))
    assert sorted(results) == [0, 1, 2, 3]
    for i, part in enumerate(parts):
        want = part.astype(np.float64).reshape(512, 512).sum(axis=1)
        np.testing.assert_allclose(results[i]["partial"], want, rtol=1e-5, atol=1e-4)
    total = sum(results[i]["partial"].sum(dtype=np.float64) for i in range(4))
    assert abs(total - x.sum(dtype=np.float64)) <= 1e-6 * np.abs(x).sum(dtype=np.float64)


def test_unwritten_output_elements_fail_the_unit_with_the_workers_message(cluster) -> None:  # type: ignore[no-untyped-def]
    """The guide's reduction with its output declared one element per invocation and as long
    as its input, and workgroups of 256 for it: accepted (2048 invocations cover 2048
    elements), but the shader writes one partial sum per workgroup, 8 of them."""
    cluster.worker()
    cluster.worker()
    manifest = {
        "entry": "main",
        "bindings": [
            {"binding": 0, "input": "x"},
            {"binding": 1, "output": "partial", "type": "f32", "length": "len(x)"},
        ],
        "workgroups": ["ceil(len(x) / 256)", 1, 1],
    }
    params = {"shader": (EXAMPLES / "reduce_sum.wgsl").read_text(), "manifest": manifest}
    x = np.ones(2048, dtype=np.float32)
    with cluster.client() as client:
        status = client.submit(
            "wgsl",
            [{"inputs": {"x": x}}],
            params=params,
            policy={"quorum": 2, "max_replicas": 2},
        )
        assert client.wait(status.id, progress=False, timeout=120).state == "failed"
        (unit,) = list(client.units(status.id))
        assert client.results(status.id) == {}
    assert unit.state == "failed"
    assert (
        "output 'partial': 2040 of its 2048 elements (indices 8 to 2047) were never written by "
        "the shader and would come back as zeros"
    ) in unit.error, unit.error
