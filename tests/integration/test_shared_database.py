"""Several coordinator processes on one PostgreSQL database: what happens on one reaches the
workers held by another at once, blobs uploaded through one are read through another, and
nginx in front of them is the one address workers and clients need."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text
from websockets.sync.client import connect

from integration.harness import Coordinator, WorkerProcess
from integration.nginx import Nginx
from tabgrid.client.sdk import Client
from tabgrid.client.tiling import matmul_units
from tabgrid.settings import MiB
from tabgrid.store import issue_token
from tabgrid.store.db import normalize_url

pytestmark = pytest.mark.integration

# Long enough that no sweep runs during a test: what the sweep would catch up on must come
# from the notifications.
NO_SWEEP = ("--sweep-interval", "300")
PROXY = "127.0.0.3"  # the address nginx connects to the coordinators from


def coordinators(url: str, tmp_path: Path, names: str, *extra: str) -> list[Coordinator]:
    made = []
    for name in names:
        (tmp_path / name).mkdir()
        made.append(Coordinator(url, tmp_path / name, "--allow-same-address", *extra))
    return made


def seen(log: Path, pattern: str, timeout: float = 30) -> tuple[float, re.Match[str]]:
    """When ``pattern`` first shows in the log (polled every 10 ms), and the match."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text() if log.exists() else "")
        if found:
            return time.monotonic(), found
        time.sleep(0.01)
    raise TimeoutError(f"{pattern!r} not in {log.name}: {log.read_text()[-2000:]}")


def query(url: str, sql: str, **params: object) -> list[tuple]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def first_lease_delay(url: str, job_id: int, timeout: float = 10) -> float:
    """Seconds from the job's submission to its first lease, both as the database has them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [(delay,)] = query(
            url,
            "SELECT MIN(r.created_at) - MIN(j.created_at) FROM replicas r "
            "JOIN jobs j ON j.id = r.job_id WHERE j.id = :job",
            job=job_id,
        )
        if delay is not None:
            return float(delay)
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} was not leased within {timeout} s")


def stop(*processes: Coordinator | WorkerProcess | Nginx) -> None:
    for p in processes:
        p.stop()
    if os.environ.get("TABGRID_SHOW_LOGS"):
        for p in processes:
            log = getattr(p, "log", None)
            if log is not None and log.exists():
                print(log.name, log.read_text()[-3000:])


def test_a_job_and_a_ban_through_two_coordinators_reach_a_thirds_workers_within_a_second(
    pg_url: str, tmp_path: Path
) -> None:
    a, b, c = coordinators(pg_url, tmp_path, "abc", *NO_SWEEP)
    for x in (a, b, c):
        x.start()
    workers = [WorkerProcess(c.url, tmp_path / f"c-worker{i}.log") for i in range(2)]
    try:
        ids = [seen(w.log, r"as worker ([0-9a-f]+)")[1][1] for w in workers]
        for w in workers:
            seen(w.log, "idle: no work is queued")  # connected to C, asking, given nothing
        alice = issue_token(pg_url, "submitter", "alice")
        olga = {"authorization": f"Bearer {issue_token(pg_url, 'operator', 'olga')}"}

        with Client(a.url, alice) as client:
            job = client.submit("checksum", [{"params": {"i": i}} for i in range(20)])
            delay = first_lease_delay(pg_url, job.id)
            assert delay < 1.0, f"C's workers were leased the job {delay:.3f} s after it came"
            assert client.wait(job.id, progress=False, timeout=60).state == "done"
        holders = query(pg_url, "SELECT DISTINCT coordinator FROM replicas")
        assert len(holders) == 1, "only C holds workers"

        asked = time.monotonic()
        r = httpx.post(f"{b.url}/api/v1/workers/{ids[0]}/ban", json={"reason": "ban"}, headers=olga)
        assert r.status_code == 200, r.text
        when, _ = seen(workers[0].log, "coordinator said goodbye: banned by the operator: ban")
        assert when - asked < 1.0, f"the ban reached the worker after {when - asked:.3f} s"
        assert workers[0].proc.wait(10) == 0, "a banned worker stops"

        asked = time.monotonic()
        r = httpx.post(f"{b.url}/api/v1/workers/{ids[1]}/drain", json={}, headers=olga)
        assert r.status_code == 200, r.text
        when, _ = seen(workers[1].log, "idle: drained by the operator")
        assert when - asked < 1.0, f"the drain reached the worker after {when - asked:.3f} s"
        assert workers[1].proc.poll() is None, "a drained worker stays connected"
    finally:
        stop(*workers, a, b, c)


def test_a_blob_uploaded_through_one_coordinator_is_read_through_another(
    pg_url: str, tmp_path: Path
) -> None:
    a, b = coordinators(pg_url, tmp_path, "ab", "--blobs", "db")
    a.start()
    b.start()
    try:
        alice = {"authorization": f"Bearer {issue_token(pg_url, 'submitter', 'alice')}"}
        data = np.random.default_rng(7).integers(0, 256, 9 * MiB + 17, np.uint8).tobytes()
        digest = hashlib.sha256(data).hexdigest()
        put = httpx.put(f"{a.url}/api/v1/blobs/{digest}", content=data, headers=alice)
        assert put.status_code == 201, put.text
        with httpx.stream("GET", f"{b.url}/api/v1/blobs/{digest}", headers=alice) as got:
            assert got.status_code == 200
            body = b"".join(got.iter_bytes())
        assert body == data
        assert not list(tmp_path.rglob(digest)), "kept in the database, in no file"
    finally:
        stop(a, b)


def test_a_worker_and_a_client_through_nginx_complete_a_job_on_two_coordinators(
    pg_url: str, tmp_path: Path
) -> None:
    a, b = coordinators(pg_url, tmp_path, "ab", "--blobs", "db", "--trust-proxy", PROXY)
    a.start()
    b.start()
    proxy = Nginx(tmp_path / "nginx", [a.port, b.port], bind=PROXY).start()
    worker = WorkerProcess(proxy.url, tmp_path / "worker.log")
    try:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((64, 48), dtype=np.float32)
        y = rng.standard_normal((48, 32), dtype=np.float32)
        units, assemble = matmul_units(x, y, tile=32)
        with Client(proxy.url, issue_token(pg_url, "submitter", "alice")) as client:
            job = client.submit("matmul", units, policy={"quorum": 1})
            assert client.wait(job.id, progress=False, timeout=120).state == "done"
            product = assemble(client.results(job.id))
        np.testing.assert_allclose(product, x @ y, rtol=1e-4, atol=1e-4)
        # nginx spread the uploads, the submission and the worker's requests over both.
        used = set(re.findall(r"upstream=127\.0\.0\.1:(\d+)", proxy.access_log.read_text()))
        assert used == {str(a.port), str(b.port)}, used

        # The coordinators saw the worker's own address, not the proxy's.
        addrs = query(pg_url, "SELECT DISTINCT client_addr FROM replicas")
        assert addrs == [("127.0.0.1",)], addrs
        assert _hello_address(pg_url, proxy.url, forged="203.0.113.9") == "127.0.0.1", (
            "nginx replaces what the client claims"
        )
        assert _hello_address(pg_url, a.url, forged="203.0.113.9") == "127.0.0.1", (
            "X-Forwarded-For counts only from the trusted proxy"
        )
    finally:
        stop(worker, proxy, a, b)


def _hello_address(db: str, url: str, forged: str) -> str:
    """The client address a coordinator records for a worker that says hello through ``url``
    with a forged X-Forwarded-For."""
    ws_url = url.replace("http", "ws", 1) + "/api/v1/worker"
    with connect(ws_url, additional_headers={"X-Forwarded-For": forged}) as ws:
        ws.send(json.dumps({"type": "hello", "kind": "native", "name": "probe"}))
        welcome = json.loads(ws.recv(timeout=10))
    assert welcome["type"] == "welcome", welcome
    [(addr,)] = query(db, "SELECT client_addr FROM workers WHERE id = :w", w=welcome["worker_id"])
    return addr
