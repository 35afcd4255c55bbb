"""The same coordinator code on PostgreSQL, two coordinators sharing one database, and a
coordinator that will not start on a database not upgraded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from integration.conftest import Cluster
from integration.harness import Coordinator, WorkerProcess
from tabgrid import kernels
from tabgrid.client.sdk import Client
from tabgrid.store import upgrade

pytestmark = pytest.mark.integration


def expected(i: int) -> np.ndarray:
    return kernels.get("checksum").reference({"i": i}, {})["digest"]


def test_a_job_completes_on_postgres(pg_url: str, tmp_path: Path) -> None:
    cluster = Cluster(pg_url, tmp_path)
    cluster.coordinator.start()
    try:
        cluster.worker()
        cluster.worker()
        with cluster.client() as client:
            job = client.submit("checksum", [{"params": {"i": i}} for i in range(300)])
            assert client.wait(job.id, progress=False, timeout=120).state == "done"
            results = client.results(job.id)
        assert sorted(results) == list(range(300))
        assert all(np.array_equal(results[i]["digest"], expected(i)) for i in range(0, 300, 7))
    finally:
        cluster.stop()


def test_two_coordinators_share_one_postgres_database(pg_url: str, tmp_path: Path) -> None:
    """Workers on coordinator B complete a job submitted to coordinator A: both claim leases
    from the same tables (FOR UPDATE SKIP LOCKED), and B finds the new work by itself."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cluster = Cluster(pg_url, tmp_path / "a")
    other = Coordinator(pg_url, tmp_path / "b", "--allow-same-address")
    cluster.coordinator.start()
    other.start()
    workers = [
        WorkerProcess(other.url, tmp_path / f"b-worker{i}.log", concurrency=4) for i in range(2)
    ]
    try:
        cluster.worker(concurrency=4)  # one on A as well: both claim concurrently
        with cluster.client() as client:
            job = client.submit("checksum", [{"params": {"i": i}} for i in range(400)])
            assert client.wait(job.id, progress=False, timeout=120).state == "done"
            results = client.results(job.id)
        with Client(other.url, cluster.token) as via_b:
            assert via_b.job(job.id).counts.done == 400
        assert sorted(results) == list(range(400))
        assert all(np.array_equal(results[i]["digest"], expected(i)) for i in range(0, 400, 9))
    finally:
        for w in workers:
            w.stop()
        other.stop()
        cluster.stop()


def test_a_coordinator_refuses_a_database_not_upgraded_and_names_the_command(
    empty_pg_url: str, tmp_path: Path
) -> None:
    coordinator = Coordinator(empty_pg_url, tmp_path)
    with pytest.raises(RuntimeError, match="coordinator exited"):
        coordinator.start()
    assert coordinator.proc is not None and coordinator.proc.returncode == 1
    log = coordinator.log.read_text()
    assert "neither a coordinator nor a command changes the schema" in log
    assert f"tabgrid db upgrade --db {empty_pg_url}" in log
    assert "Traceback" not in log
    upgrade(empty_pg_url)
    coordinator.start()  # now at the newest revision
    coordinator.stop()
