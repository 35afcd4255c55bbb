"""End to end on loopback: a real coordinator process, real native workers on wgpu (lavapipe)."""

from __future__ import annotations

import numpy as np
import pytest

from saxpy import SAXPY, SAXPY_MANIFEST
from tabgrid import kernels
from tabgrid.client.sdk import TabgridError
from tabgrid.client.tiling import assemble_mandelbrot, mandelbrot_units, matmul_units

pytestmark = pytest.mark.integration


def mandelbrot_reference(units: list[dict]) -> dict[int, dict[str, np.ndarray]]:
    k = kernels.get("mandelbrot")
    return {i: k.reference(u["params"], {}) for i, u in enumerate(units)}


def test_matmul_and_mandelbrot_jobs_validate_and_assemble(cluster) -> None:  # type: ignore[no-untyped-def]
    cluster.worker()
    cluster.worker()
    rng = np.random.default_rng(7)
    a = rng.standard_normal((96, 80), dtype=np.float32)
    b = rng.standard_normal((80, 64), dtype=np.float32)
    units, assemble = matmul_units(a, b, 32)
    tiles = mandelbrot_units(-2.0, -1.2, 0.8, 1.2, 96, 64, 32, 64)
    with cluster.client() as client:
        mm = client.submit(
            "matmul", units, policy={"quorum": 2, "compare": "allclose", "rtol": 1e-4, "atol": 1e-4}
        )
        mb = client.submit("mandelbrot", tiles, policy={"quorum": 2, "compare": "kernel"})
        assert client.wait(mm.id, progress=False, timeout=300).state == "done"
        assert client.wait(mb.id, progress=False, timeout=300).state == "done"
        c = assemble(client.results(mm.id))
        np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)
        image = assemble_mandelbrot(client.results(mb.id), 96, 64, 32)
        expected = assemble_mandelbrot(mandelbrot_reference(tiles), 96, 64, 32)
        # f32 on a GPU and numpy may disagree on a few boundary pixels: the kernel's own
        # comparison bounds how many (see kernels/mandelbrot.py)
        assert kernels.get("mandelbrot").compare({"iters": image}, {"iters": expected})
        assert (image != expected).mean() < 0.01
        assert all(u.replicas >= 2 for u in client.units(mm.id))


def test_researchers_own_wgsl_kernel(cluster) -> None:  # type: ignore[no-untyped-def]
    cluster.worker()
    cluster.worker()
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(n, dtype=np.float32) for n in (100, 257)]
    ys = [rng.standard_normal(n, dtype=np.float32) for n in (100, 257)]
    units = [
        {"params": {"n": len(x)}, "inputs": {"x": x, "y": y}} for x, y in zip(xs, ys, strict=True)
    ]
    params = {"shader": SAXPY, "manifest": SAXPY_MANIFEST, "a": 2.5}
    with cluster.client() as client:
        job = client.submit("wgsl", units, params=params, policy={"quorum": 2})
        assert client.wait(job.id, progress=False, timeout=300).state == "done"
        results = client.results(job.id)
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        np.testing.assert_allclose(results[i]["out"], 2.5 * x + y, rtol=1e-6)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"manifest": {**SAXPY_MANIFEST, "entry": "nope"}}, "nope"),
        ({"manifest": {**SAXPY_MANIFEST, "workgroups": ["ceil(n / ", 1, 1]}}, "workgroups"),
        (
            {"manifest": {**SAXPY_MANIFEST, "bindings": SAXPY_MANIFEST["bindings"][:3]}},
            "binding(3)",
        ),
    ],
)
def test_bad_wgsl_job_is_refused_at_submission(cluster, change, named) -> None:  # type: ignore[no-untyped-def]
    x = np.ones(8, dtype=np.float32)
    params = {"shader": SAXPY, "manifest": SAXPY_MANIFEST, "a": 1.0} | change
    with cluster.client() as client, pytest.raises(TabgridError) as e:
        client.submit("wgsl", [{"params": {"n": 8}, "inputs": {"x": x, "y": x}}], params=params)
    assert e.value.status == 422
    assert named in str(e.value)


def test_shader_that_does_not_compile_fails_units_with_the_compiler_message(cluster) -> None:  # type: ignore[no-untyped-def]
    cluster.worker()
    cluster.worker()  # quorum 2 needs two workers before max_replicas=2 is spent
    broken = SAXPY.replace("p.a * x[i]", "p.a * x[i] +* oops")
    assert broken != SAXPY
    x = np.ones(8, dtype=np.float32)
    params = {"shader": broken, "manifest": SAXPY_MANIFEST, "a": 1.0}
    with cluster.client() as client:
        job = client.submit(
            "wgsl",
            [{"params": {"n": 8}, "inputs": {"x": x, "y": x}}],
            params=params,
            policy={"quorum": 2, "max_replicas": 2},
        )
        st = client.wait(job.id, progress=False, timeout=120)
        assert st.state == "failed"
        (unit,) = list(client.units(job.id))
    assert unit.state == "failed"
    assert "every replica failed" in unit.error
    assert "oops" in unit.error or "expected" in unit.error.lower(), unit.error


def test_unknown_kernel_is_refused(cluster) -> None:  # type: ignore[no-untyped-def]
    with cluster.client() as client, pytest.raises(TabgridError) as e:
        client.submit("nosuch", [{"params": {}}])
    assert e.value.status == 422 and "nosuch" in str(e.value)
