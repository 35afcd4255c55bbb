"""An attacker's view of a live coordinator, over real sockets: a hostile worker costs only
itself, silent connections are closed."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pytest
import websockets

from integration.harness import ROOT, _env

pytestmark = pytest.mark.integration

UNITS = 1500


def _submit(client, name: str, n: int = UNITS) -> int:  # type: ignore[no-untyped-def]
    units = [{"params": {"job": name, "i": i}} for i in range(n)]
    return client.submit("checksum", units, policy={"quorum": 2}, name=name).id


def _time_to_done(client, job_id: int, limit: float = 120) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < limit:
        job = client.job(job_id)
        if job.state != "running":
            assert job.state == "done", job
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {limit} s: {client.job(job_id)}")


def test_a_hostile_worker_costs_only_itself(cluster) -> None:  # type: ignore[no-untyped-def]
    honest = [cluster.worker(concurrency=4), cluster.worker(concurrency=4)]
    with cluster.client() as client:
        _time_to_done(client, _submit(client, "warm-up", 8))
        quiet = _time_to_done(client, _submit(client, "quiet"))
        attacker = subprocess.Popen(
            [sys.executable, "-m", "integration.attacker", cluster.url, "10"],
            env=_env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            time.sleep(1.0)  # the attack is under way before the job comes
            job = _submit(client, "attacked")
            attacked = _time_to_done(client, job)
        finally:
            out, _ = attacker.communicate(timeout=60)
        assert attacker.returncode == 0, out
        units = list(client.units(job))
        # Measured on both sides of the attack: the machine's own pace drifts meanwhile.
        quiet = max(quiet, _time_to_done(client, _submit(client, "quiet again")))
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["sent"] > 500, report
    # Cut off again and again, each time with a reason it can read.
    assert len(report["closes"]) >= 10, report
    assert all(report["closes"]), report
    assert any("bad messages" in why for why in report["closes"]), report
    # As fast as without the attacker (within 2x; a floor for a very quick baseline).
    cut = len(report["closes"])
    print(f"quiet {quiet:.2f} s, attacked {attacked:.2f} s, {report['sent']} sent, {cut} cut off")
    assert attacked <= 2 * max(quiet, 2.0), (quiet, attacked)
    assert all(u.state == "done" for u in units)
    # Every honest result is there and counted valid: none dropped, none judged invalid.
    with closing(sqlite3.connect(cluster.db.removeprefix("sqlite:///"))) as db:
        rows = db.execute(
            "SELECT results, valid, invalid, errors, credit FROM workers "
            "WHERE name != 'attacker' AND results > 0"
        ).fetchall()
    assert len(rows) == len(honest), rows
    assert sum(r[1] for r in rows) == 2 * (8 + 3 * UNITS), rows
    assert all(r[0] == r[1] and r[2] == 0 and r[3] == 0 for r in rows), rows


def test_connections_that_never_say_hello_are_closed(cluster) -> None:  # type: ignore[no-untyped-def]
    async def silent() -> list[str]:
        url = cluster.url.replace("http", "ws", 1) + "/api/v1/worker"
        sockets = [await websockets.connect(url) for _ in range(30)]
        reasons = []
        start = time.monotonic()
        for ws in sockets:
            try:
                await asyncio.wait_for(ws.recv(), 20)
                await asyncio.wait_for(ws.recv(), 20)
            except websockets.ConnectionClosed as e:
                reasons.append(e.rcvd.reason if e.rcvd else "")
        assert time.monotonic() - start < 15
        return reasons

    reasons = asyncio.run(silent())
    assert len(reasons) == 30
    assert all("no hello within 10 s" in why for why in reasons), reasons
