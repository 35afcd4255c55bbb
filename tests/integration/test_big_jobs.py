"""A job split by the SDK runs to the end: Batch.wait follows every part, Batch.results comes
back indexed as the units were given, each unit's checksum right and carried by the results
stream itself. A real coordinator (in a
thread, with a small max_units) and two real native worker processes (quorum 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from integration.harness import WorkerProcess
from tabgrid.client.sdk import Batch, Client
from tabgrid.kernels import checksum
from tabgrid.settings import Limits, Settings
from test_http_hardening import LiveServer

pytestmark = pytest.mark.integration


def test_a_split_job_waits_and_gathers_its_results_in_input_order(tmp_path: Path) -> None:
    settings = Settings(
        db=f"sqlite:///{tmp_path}/t.db",
        data_dir=tmp_path,
        distinct_addresses=False,
        limits=Limits(max_units=25),
    )
    with LiveServer(settings) as live:
        _, token = live.store.create_token("submitter", "alice")
        workers = [WorkerProcess(live.url, tmp_path / f"worker{n}.log") for n in range(2)]
        try:
            with Client(live.url, token) as client:
                units = [{"params": {"i": i}} for i in range(60)]
                batch = client.submit("checksum", units, name="big", split=True)
                assert isinstance(batch, Batch) and [j.units for j in batch.jobs] == [25, 25, 10]
                final = batch.wait(progress=False, timeout=120, check=True)
                assert [s.state for s in final] == ["done"] * 3
                # Checksums are small: their bytes come with the results, not one GET each.
                client.blob = lambda digest: pytest.fail(f"fetched blob {digest}")  # type: ignore[method-assign]
                results = batch.results()
        finally:
            for worker in workers:
                worker.stop()
    assert sorted(results) == list(range(60))
    for i in (0, 24, 25, 49, 50, 59):
        want = np.asarray(checksum.reference({"i": i}, {})["digest"])
        assert np.array_equal(results[i]["digest"], want), i
