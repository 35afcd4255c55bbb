"""Three coordinators on one PostgreSQL behind nginx, twenty native workers through it, one
job; one coordinator is SIGKILLed mid-job. Its workers reconnect through nginx to the others,
its leases are released once it has been silent for coordinator_ttl_s, and the job completes
with every unit once and every result judged."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest

from integration.harness import Coordinator, WorkerProcess
from integration.nginx import Nginx
from tabgrid import kernels
from tabgrid.client.sdk import Client
from tabgrid.store import issue_token

pytestmark = pytest.mark.integration

UNITS = 3000
WORKERS = 20


def connected(url: str, token: str) -> int:
    """Native workers a coordinator holds, from its own /metrics."""
    text = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {token}"}).text
    found = re.search(r'^tabgrid_workers_connected\{kind="native"\} (\S+)$', text, re.M)
    assert found, text[:500]
    return int(float(found.group(1)))


def coordinator_id(db_url: str, coordinator: Coordinator) -> str:
    assert coordinator.proc is not None
    with psycopg.connect(db_url) as db:
        row = db.execute(
            "SELECT id FROM coordinators WHERE pid = %s", (coordinator.proc.pid,)
        ).fetchone()
    assert row is not None
    return row[0]


def wait_for(what: str, check, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_killed_coordinator_costs_no_unit_and_no_result(pg_url: str, tmp_path: Path) -> None:
    def known(coordinator: str) -> bool:
        with psycopg.connect(pg_url) as db:
            found = db.execute("SELECT 1 FROM coordinators WHERE id = %s", (coordinator,))
            return found.fetchone() is not None

    coords = []
    for i in range(3):
        (tmp_path / f"c{i}").mkdir()
        coords.append(Coordinator(pg_url, tmp_path / f"c{i}", "--allow-same-address"))
    for c in coords:
        c.start()
    submitter = issue_token(pg_url, "submitter", "tests")
    operator = issue_token(pg_url, "operator", "tests")
    workers: list[WorkerProcess] = []
    proxy = Nginx(tmp_path / "nginx", [c.port for c in coords]).start()
    try:
        workers = [
            WorkerProcess(proxy.url, tmp_path / f"worker{i}.log", concurrency=4)
            for i in range(WORKERS)
        ]
        counts = lambda: [connected(c.url, operator) for c in coords]  # noqa: E731
        wait_for("every worker to connect", lambda: sum(counts()) == WORKERS, 120)
        before = counts()
        victim = max(range(3), key=lambda i: before[i])
        assert before[victim] > 0, before
        with Client(proxy.url, submitter) as client:
            units = [{"params": {"i": i}} for i in range(UNITS)]
            job = client.submit("checksum", units, policy={"quorum": 2}).id
            wait_for("a third of the job", lambda: client.job(job).counts.done >= UNITS // 3, 300)
            victim_id = coordinator_id(pg_url, coords[victim])
            coords[victim].kill()
            killed_at = time.monotonic()
            alive = [c for i, c in enumerate(coords) if i != victim]
            wait_for(
                "the killed coordinator's workers to reconnect",
                lambda: sum(connected(c.url, operator) for c in alive) == WORKERS,
                60,
            )
            status = client.wait(job, progress=False, timeout=300)
            finished_in = time.monotonic() - killed_at
            assert status.state == "done", status
            results = client.results(job)
            # The job may end before the others find it silent: its row goes after
            # coordinator_ttl_s (10 s) all the same.
            wait_for("the killed coordinator to be forgotten", lambda: not known(victim_id), 30)
    finally:
        for w in workers:
            w.stop()
        for c in coords:
            c.stop()
        proxy.stop()
    assert sorted(results) == list(range(UNITS))
    checksum = kernels.get("checksum")
    for i in range(0, UNITS, 37):
        assert np.array_equal(results[i]["digest"], checksum.reference({"i": i}, {})["digest"])
    with psycopg.connect(pg_url) as db:
        states = dict(db.execute("SELECT state, count(*) FROM units GROUP BY state").fetchall())
        assert states == {"done": UNITS}
        # Every result was judged: none left waiting for a verdict, none found wrong.
        replicas = dict(
            db.execute("SELECT state, count(*) FROM replicas GROUP BY state").fetchall()
        )
        assert set(replicas) <= {"valid", "released"}, replicas
        agreeing = db.execute(
            "SELECT min(n) FROM (SELECT count(*) AS n FROM replicas WHERE state = 'valid' "
            "GROUP BY unit_id) AS per_unit"
        ).fetchone()
        assert agreeing is not None and agreeing[0] >= 2
        # The killed coordinator served part of the job; its leases were either answered by
        # their workers through another coordinator (resent results) or released by the
        # others once it was silent: none is left leased, none lost.
        mine = dict(
            db.execute(
                "SELECT state, count(*) FROM replicas WHERE coordinator = %s GROUP BY state",
                (victim_id,),
            ).fetchall()
        )
        assert sum(mine.values()) > 0 and set(mine) <= {"valid", "released"}, mine
    assert finished_in < 120, finished_in
