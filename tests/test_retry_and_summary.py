"""Retrying an ended job's failed units, which workers computed each unit, and what a job
cost: over a real coordinator (uvicorn on a loopback port; SQLite and PostgreSQL) with workers
that speak the websocket protocol by hand, so each unit fails or agrees as the test says."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from protocol_worker import ProtocolWorker
from tabgrid.client.sdk import Client, TabgridError
from tabgrid.settings import Settings
from test_http_hardening import LiveServer


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[LiveServer]:
    """On SQLite and on PostgreSQL (conftest's db_url)."""
    settings = Settings(db=db_url, data_dir=tmp_path, distinct_addresses=False)
    with LiveServer(settings) as live:
        yield live


def until(check, what: str, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def test_retry_puts_failed_units_back_with_a_new_budget(server: LiveServer) -> None:
    _, secret = server.store.create_token("submitter", "alice")
    with Client(server.url, secret) as tg:
        job = tg.submit(
            "checksum",
            [{"params": {"i": i}} for i in range(3)],
            policy={"quorum": 2, "max_replicas": 2},
        )
        with pytest.raises(TabgridError) as running:
            tg.retry(job.id)
        assert running.value.status == 409
        assert running.value.detail == (
            f"job {job.id} is running: only an ended job (done, failed or cancelled) has its "
            "failed units retried; wait for it to end, or cancel it first"
        )

        a, b = ProtocolWorker(server.url, "a"), ProtocolWorker(server.url, "b")
        for lease in a.lease(3):
            a.output(lease, bytes([lease["index"]]))
        for lease in b.lease(3):
            if lease["index"] == 2:
                b.error(lease, "device lost")
            else:
                b.output(lease, bytes([lease["index"]]))
        failed = until(lambda: (s := tg.job(job.id)).state == "failed" and s, "the job to fail")
        assert (failed.counts.done, failed.counts.failed) == (2, 1)
        (unit2,) = tg.units(job.id, state="failed")
        assert unit2.error == "every replica failed or was lost; last error: device lost"
        assert [(x.worker, x.state, x.error) for x in unit2.workers] == [
            (a.id, "returned", None),
            (b.id, "error", "device lost"),
        ]

        again = tg.retry(job.id)
        assert again.state == "running"
        assert (again.counts.done, again.counts.failed) == (2, 0)
        (pending,) = tg.units(job.id, state="validating")
        assert (pending.index, pending.replicas, pending.results, pending.error) == (2, 0, 1, None)
        # The errored replica is released (its worker may take the unit again), its error kept.
        assert [(x.worker, x.state, x.error) for x in pending.workers] == [
            (a.id, "returned", None),
            (b.id, "released", "device lost"),
        ]
        assert a.lease(1) == []  # a returned a result already: never the same unit twice
        assert a.idle_reason == (
            "1 unit(s) wait for a result from a different worker: results are accepted only "
            "when independent workers agree, and this worker already computed them"
        )

        (lease,) = b.lease(1)
        assert lease["index"] == 2
        b.output(lease, b"\x02")
        done = until(lambda: (s := tg.job(job.id)).state == "done" and s, "the job to finish")
        assert (done.counts.done, done.counts.failed) == (3, 0)
        units = list(tg.units(job.id))
        assert [[(x.worker, x.state) for x in u.workers] for u in units] == [
            [(a.id, "valid"), (b.id, "valid")],
            [(a.id, "valid"), (b.id, "valid")],
            [(a.id, "valid"), (b.id, "released"), (b.id, "valid")],
        ]

        with pytest.raises(TabgridError) as nothing:
            tg.retry(job.id)
        assert (nothing.value.status, nothing.value.detail) == (
            409,
            f"job {job.id} has no failed units to retry (it is done)",
        )
        summary = tg.summary(job.id)
        assert (summary.units, summary.replicas, summary.valid, summary.errors) == (3, 7, 6, 1)
        assert summary.replicas_per_unit == pytest.approx(7 / 3)
        assert summary.compute_s == pytest.approx(0.031)  # 6 x 5 ms + 1 ms reported
        assert summary.workers == 2 and summary.state == "done"
        assert summary.gflop == 0.0 and summary.credit == 0.0  # checksum does no GPU work
        a.close()
        b.close()


def test_retry_by_another_submitter_is_404_and_by_an_operator_audited(
    server: LiveServer,
) -> None:
    owner_id, owner = server.token("submitter", "alice")
    _, other = server.token("submitter", "bob")
    _, operator = server.token("operator", "root")
    http = httpx.Client(base_url=server.url)
    job = http.post(
        "/api/v1/jobs",
        headers=owner,
        json={"kernel": "checksum", "units": [{}], "policy": {"max_replicas": 2}},
    ).json()
    w, v = ProtocolWorker(server.url), ProtocolWorker(server.url)
    for worker in (w, v):
        (lease,) = worker.lease(1)
        worker.error(lease, "out of memory")
    until(
        lambda: http.get(f"/api/v1/jobs/{job['id']}", headers=owner).json()["state"] == "failed",
        "the job to fail",
    )
    r = http.post(f"/api/v1/jobs/{job['id']}/retry", headers=other)
    assert r.status_code == 404
    assert r.json()["detail"] == f"job {job['id']} does not exist or belongs to someone else"
    r = http.post(f"/api/v1/jobs/{job['id']}/retry", headers=operator, json={"x": 1})
    assert r.status_code == 422
    assert r.json()["errors"] == ["$: Object contains unknown field `x`"]
    r = http.post(f"/api/v1/jobs/{job['id']}/retry", headers=operator)
    assert r.status_code == 200 and r.json()["state"] == "running"
    entries = http.get("/api/v1/audit", headers=operator).json()["entries"]
    assert [(e["actor"], e["action"], e["target"], e["detail"]) for e in entries[:1]] == [
        ("root", "retry", f"job {job['id']}", "1 failed unit(s) retried")
    ]
    w.close()
    v.close()
    http.close()
    assert owner_id


def test_summary_counts_work_once_and_credit_per_agreeing_replica(server: LiveServer) -> None:
    _, secret = server.store.create_token("submitter", "alice")
    params = {"x0": -2.0, "y0": -1.0, "x1": 1.0, "y1": 1.0, "width": 100, "height": 100}
    with Client(server.url, secret) as tg:
        job = tg.submit(
            "mandelbrot", [{"params": params | {"max_iter": 1000}}] * 2, policy={"quorum": 2}
        )
        a, b = ProtocolWorker(server.url, "a"), ProtocolWorker(server.url, "b")
        for worker in (a, b):
            for lease in worker.lease(2):
                worker.output(lease, bytes([lease["index"]]) * 4)
        until(lambda: tg.job(job.id).state == "done", "the job to finish")
        summary = tg.summary(job.id)
        # 100 x 100 pixels x 1000 iterations x 8 flops = 0.08 GFLOP a unit.
        assert summary.gflop == pytest.approx(0.16)
        assert summary.credit == pytest.approx(0.32)  # two agreeing replicas of each unit
        assert (summary.replicas, summary.valid, summary.invalid, summary.workers) == (4, 4, 0, 2)
        assert summary.replicas_per_unit == 2.0
        assert 0 < summary.wall_s < 30
        (unit0, unit1) = tg.units(job.id)
        assert {(x.worker, x.state) for x in unit0.workers} == {(a.id, "valid"), (b.id, "valid")}
        assert [x.elapsed_ms for x in unit1.workers] == [5.0, 5.0]
        with pytest.raises(TabgridError) as missing:
            tg.summary(job.id + 100)
        assert missing.value.status == 404
        assert (
            missing.value.detail == f"job {job.id + 100} does not exist or belongs to someone else"
        )
        a.close()
        b.close()
