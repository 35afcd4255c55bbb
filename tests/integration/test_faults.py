"""Faults on loopback: saboteurs, workers killed mid-lease, expired leases, a killed coordinator."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from sqlalchemy import select, text

from tabgrid import kernels
from tabgrid.client.tiling import matmul_units
from tabgrid.store import Store
from tabgrid.store.tables import Worker

pytestmark = pytest.mark.integration


def checksum_units(n: int) -> list[dict]:
    return [{"params": {"i": i}} for i in range(n)]


def expected_checksum(i: int) -> np.ndarray:
    return kernels.get("checksum").reference({"i": i}, {})["digest"]


def workers_by_name(db: str) -> dict[str, dict]:
    store = Store(db)
    try:
        W = Worker.__table__  # type: ignore[attr-defined]
        rows = store.tx(lambda c: [dict(r) for r in c.execute(select(W)).mappings()])
    finally:
        store.close()
    return {r["name"] or r["id"]: r for r in rows}


def wait_for(predicate, timeout: float = 60, what: str = "condition"):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def test_saboteur_results_are_invalid_and_accepted_results_correct(cluster) -> None:  # type: ignore[no-untyped-def]
    cluster.rogue("saboteur")
    cluster.worker()
    cluster.worker()
    # Else two quick honest workers may take every unit before the saboteur has said hello.
    wait_for(lambda: len(workers_by_name(cluster.db)) == 3, what="the three workers' hellos")
    with cluster.client() as client:
        job = client.submit("checksum", checksum_units(40), policy={"quorum": 2, "max_replicas": 6})
        assert client.wait(job.id, progress=False, timeout=180).state == "done"
        results = client.results(job.id)
    assert sorted(results) == list(range(40))
    for i, out in results.items():
        assert np.array_equal(out["digest"], expected_checksum(i)), (
            f"unit {i} accepted a wrong result"
        )
    saboteur = workers_by_name(cluster.db)["saboteur"]
    assert saboteur["results"] > 0, "the saboteur took part"
    assert saboteur["valid"] == 0 and saboteur["invalid"] > 0
    assert saboteur["credit"] == 0


def test_worker_killed_mid_lease_has_its_units_reissued(cluster) -> None:  # type: ignore[no-untyped-def]
    stalled = cluster.rogue("stalled")
    a = np.arange(64 * 16, dtype=np.float32).reshape(64, 16) / 100
    b = np.ones((16, 64), dtype=np.float32)
    units, assemble = matmul_units(a, b, 16)  # 16 tiles, accepted on one verified replica
    with cluster.client() as client:
        job = client.submit("matmul", units, policy={"quorum": 1})
        wait_for(lambda: client.job(job.id).counts.running == 2, what="the stalled worker's leases")
        stalled.kill()
        cluster.worker()
        assert client.wait(job.id, progress=False, timeout=180).state == "done"
        lines = list(client.iter_results(job.id))
        infos = list(client.units(job.id))
    assert sorted(i for i, _ in lines) == list(range(16)), "each unit exactly once"
    np.testing.assert_allclose(assemble(dict(lines)), a @ b, rtol=1e-5)
    assert sum(u.replicas for u in infos) == 18, "the two killed leases were issued again"


def test_expired_lease_is_reissued_to_another_worker(cluster) -> None:  # type: ignore[no-untyped-def]
    cluster.rogue("stalled")  # stays connected, never answers
    a = np.eye(32, dtype=np.float32)
    b = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)
    units, assemble = matmul_units(a, b, 16)
    with cluster.client() as client:
        job = client.submit("matmul", units, policy={"quorum": 1, "deadline_s": 2})
        wait_for(lambda: client.job(job.id).counts.running == 2, what="the stalled worker's leases")
        cluster.worker()
        assert client.wait(job.id, progress=False, timeout=180).state == "done"
        lines = list(client.iter_results(job.id))
    assert sorted(i for i, _ in lines) == list(range(4))
    np.testing.assert_array_equal(assemble(dict(lines)), b)


def test_coordinator_killed_mid_job_loses_nothing(cluster) -> None:  # type: ignore[no-untyped-def]
    cluster.worker()
    cluster.worker()
    n = 3000
    with cluster.client() as client:
        job = client.submit("checksum", checksum_units(n), policy={"quorum": 2})
        wait_for(lambda: client.job(job.id).counts.done >= 200, what="200 validated units")
        before = dict(client.iter_results(job.id))
    cluster.coordinator.kill()
    cluster.coordinator.start()
    with cluster.client() as client:
        st = client.wait(job.id, progress=False, timeout=300)
        assert st.state == "done" and st.units == n
        after = list(client.iter_results(job.id))
    indexes = [i for i, _ in after]
    assert indexes == list(range(n)), "each unit exactly once, none lost"
    results = dict(after)
    for i, out in before.items():
        assert np.array_equal(results[i]["digest"], out["digest"]), "a validated result changed"
    for i in range(0, n, 97):
        assert np.array_equal(results[i]["digest"], expected_checksum(i))


def test_unacknowledged_results_survive_a_coordinator_kill_and_count_once(cluster) -> None:  # type: ignore[no-untyped-def]
    """The workers' results reach a coordinator that never records them (stopped, then
    killed): the workers keep them, unacknowledged, and send them to the next coordinator on
    the same database, which counts each once. No unit is computed twice."""
    gate = cluster.data / "gate"
    gated = [cluster.rogue("gated", str(gate)) for _ in range(2)]  # concurrency 2 each
    n = 6
    with cluster.client() as client:
        job = client.submit("checksum", checksum_units(n), policy={"quorum": 2})
    wait_for(lambda: replica_states(cluster.db) == ["leased"] * 4, what="four units leased")
    cluster.coordinator.pause()
    gate.touch()
    for worker in gated:
        wait_for(
            lambda w=worker: "2 results wait for acknowledgement" in w.log.read_text(),
            what="both results sent to the stopped coordinator",
        )
    cluster.coordinator.kill()
    cluster.coordinator.start()
    with cluster.client() as client:
        assert client.wait(job.id, progress=False, timeout=120).state == "done"
        lines = list(client.iter_results(job.id))
    assert [i for i, _ in lines] == list(range(n)), "each unit exactly once"
    for i, out in lines:
        assert np.array_equal(out["digest"], expected_checksum(i))
    assert replica_states(cluster.db) == ["valid"] * 2 * n, "two replicas a unit, no more"
    for worker in gated:
        log = worker.log.read_text()
        assert "sending 2 unacknowledged results again" in log
        computed = re.findall(r"computed unit (\d+) ", log)
        assert len(computed) == n and len(set(computed)) == n, f"computed twice: {computed}"


def replica_states(db: str) -> list[str]:
    store = Store(db)
    try:
        q = text("SELECT state FROM replicas ORDER BY id")
        return store.tx(lambda c: list(c.execute(q).scalars()))
    finally:
        store.close()


def test_oversized_websocket_frame_closes_that_socket_only(cluster) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    import httpx
    import websockets

    async def send_huge() -> int | None:
        url = cluster.url.replace("http", "ws") + "/api/v1/worker"
        ws = await websockets.connect(url, max_size=None)
        try:
            await ws.send("x" * (8 << 20))
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as e:  # from send or recv, as the close races
            return e.rcvd.code if e.rcvd else None
        finally:
            await ws.close()
        return None

    assert asyncio.run(send_huge()) == 1009  # "message too big"
    assert httpx.get(cluster.url + "/healthz").status_code == 200
