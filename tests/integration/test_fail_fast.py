"""A shader that does not compile fails its job at once, default policy, two real workers: the
compiler's message in the units, the SDK's exception and the CLI's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from saxpy import SAXPY, SAXPY_MANIFEST
from tabgrid.client.sdk import JobFailed

pytestmark = pytest.mark.integration

# The typo: workgroupBarrier spelled wrong.
BROKEN = SAXPY.replace("    let i = id.x;\n", "    workgroupBarier();\n    let i = id.x;\n")


def test_a_compile_error_fails_the_job_at_once_with_the_compilers_message(
    cluster, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    assert BROKEN != SAXPY
    cluster.worker()
    cluster.worker()
    x = np.ones(64, dtype=np.float32)
    params = {"shader": BROKEN, "manifest": SAXPY_MANIFEST, "a": 1.0}
    units = [{"params": {"n": 64}, "inputs": {"x": x, "y": x * i}} for i in range(4)]
    with cluster.client() as client:
        job = client.submit("wgsl", units, params=params)  # the default policy
        assert job.policy.quorum == 2 and job.policy.max_replicas == 6
        start = time.monotonic()
        with pytest.raises(JobFailed) as e:
            client.wait(job.id, progress=False, timeout=120, check=True)
        took = time.monotonic() - start
        got = list(client.units(job.id))
    assert took < 60, f"the job failed after {took:.0f} s, not at once"
    message = str(e.value)
    assert message.startswith(f"job {job.id} failed: 4 of 4 units failed\n  unit ")
    assert "workgroupBarier" in message
    assert [u.state for u in got] == ["failed"] * 4
    confirmed = [u for u in got if u.error and u.error.startswith("every replica failed")]
    assert len(confirmed) >= 1
    first = confirmed[0].error or ""
    assert first.startswith(
        "every replica failed the same way on 2 different workers: the shader does not "
        "compile or validate, which no GPU and no retry can change; fix the shader and "
        "submit again. ShaderError: shader: "
    )
    assert "workgroupBarier" in first
    assert "wgsl:14:5" in first, first  # the line and column, as wgpu's compiler says them
    rest = [u for u in got if u not in confirmed]
    for u in rest:
        assert (u.error or "").startswith("not run: unit "), u.error
        assert "workgroupBarier" in (u.error or "")

    # The CLI, on the same coordinator: submit --wait exits 1 with the compiler's message.
    np.save(tmp_path / "x.npy", x)
    spec = {
        "kernel": "wgsl",
        "params": params,
        "inputs": {"x": "x.npy", "y": "x.npy"},
        "units": [{"params": {"n": 64}}],
    }
    (tmp_path / "job.json").write_text(json.dumps(spec))
    env = dict(os.environ, TABGRID_TOKEN=cluster.token)
    run = subprocess.run(
        [sys.executable, "-m", "tabgrid.cli", "submit", str(tmp_path / "job.json"), "--wait",
         "--no-progress", "--url", cluster.url],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "failed: 1 of 1 units failed" in run.stderr
    assert "every replica failed the same way on 2 different workers" in run.stderr
    assert "workgroupBarier" in run.stderr and "wgsl:14:5" in run.stderr
    # `tabgrid units JOB --state failed` lists the units with the compiler's message.
    units_cli = subprocess.run(
        [sys.executable, "-m", "tabgrid.cli", "units", str(job.id), "--state", "failed",
         "--url", cluster.url],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert units_cli.returncode == 0, units_cli.stderr
    assert units_cli.stdout.count("failed") >= 4
    assert "every replica failed the same way on 2 different workers" in units_cli.stdout
    assert "workgroupBarier" in units_cli.stdout
