"""Blob security over the real app: real store (SQLite file), real blob files, the real worker
websocket and the real blob sweeper. Each test is an attack that worked before.

1. Anyone's worker credentials stored any bytes, and nothing removed unused blobs.
2. A second submitter's job, once deleted, took a first submitter's upload with it.
3. Any caller read any blob by its digest, workers other workers' outputs included.
4. A blob damaged on disk was served as it was.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from sqlalchemy import func, select
from starlette.exceptions import StarletteDeprecationWarning

from tabgrid.api.blobs import WHOLE
from tabgrid.app import create_app
from tabgrid.protocol import Problem
from tabgrid.settings import Limits, Settings
from tabgrid.store import blob_rows
from tabgrid.store.tables import Blob, BlobUpload

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

WS = "/api/v1/worker"
B = Blob.__table__  # type: ignore[attr-defined]
C = BlobUpload.__table__  # type: ignore[attr-defined]


@dataclass
class App:
    client: TestClient
    data: Path

    @property
    def store(self) -> Any:
        return self.client.app.state.services.store  # type: ignore[attr-defined]

    def token(self, name: str, role: str = "submitter") -> dict[str, str]:
        _, token = self.store.create_token(role, name)
        return {"authorization": f"Bearer {token}"}

    def on_disk(self, digest: str) -> bool:
        return (self.data / "blobs" / digest[:2] / digest).is_file()

    def row(self, digest: str) -> bool:
        count = self.store.tx(lambda c: c.execute(select(func.count()).where(B.c.digest == digest)))
        return count.scalar_one() == 1

    def put(self, data: bytes, headers: dict[str, str]) -> Any:
        return self.client.put(f"/api/v1/blobs/{sha(data)}", content=data, headers=headers)

    def get(self, digest: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.get(f"/api/v1/blobs/{digest}", headers=headers or {})

    def submit(self, body: dict[str, Any], headers: dict[str, str]) -> Any:
        return self.client.post("/api/v1/jobs", json=body, headers=headers)


MakeApp = Callable[..., App]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[MakeApp]:
    clients: list[TestClient] = []

    def make(limits: dict[str, Any] | None = None, db: str = "", **settings: Any) -> App:
        data = tmp_path / f"app{len(clients)}"
        config = Settings(
            db=db or f"sqlite:///{data}/t.db",
            data_dir=data,
            distinct_addresses=False,  # every test client has one address
            limits=Limits(**(limits or {})),
            **settings,
        )
        client = TestClient(create_app(config), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return App(client, data)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def app(make_app: MakeApp) -> App:
    return make_app()


@pytest.fixture
def make_on_both(db_url: str, make_app: MakeApp) -> MakeApp:
    """make_app on SQLite and on PostgreSQL (tests/conftest.py: db_url). The database comes
    first so that it goes last: dropped under a running app, it would stop the app."""
    return lambda *args, **kw: make_app(*args, db=db_url, **kw)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def problem(response: Any, status: int) -> Problem:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return msgspec.json.decode(response.content, type=Problem)


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ---- a worker over the real websocket ---------------------------------------------------------


def hello(ws: Any) -> dict[str, str]:
    """Says hello; returns the worker's blob credentials from Welcome."""
    ws.send_text(json.dumps({"type": "hello", "kind": "native", "name": "t"}))
    welcome = ws.receive_json()
    assert welcome["type"] == "welcome"
    return {"authorization": f"Worker {welcome['worker_id']}:{welcome['secret']}"}


def lease(ws: Any) -> dict[str, Any]:
    """Asks for one unit; returns its lease (after the job description, when one comes)."""
    ws.send_text(json.dumps({"type": "ready", "n": 1}))
    msg = ws.receive_json()
    if msg["type"] == "job":
        msg = ws.receive_json()
    assert msg["type"] == "lease", msg
    (item,) = msg["leases"]
    return item


def send_result(ws: Any, item: dict[str, Any], name: str, data: bytes, dtype: str) -> dict:
    """Reports an output already uploaded as a blob (no inline bytes); returns the stats the
    coordinator sends once it recorded the result."""
    out = {"digest": sha(data), "dtype": dtype, "shape": [len(data) // np.dtype(dtype).itemsize]}
    result = {"lease": item["lease"], "outputs": {name: out}, "elapsed_ms": 1.0}
    ws.send_text(json.dumps({"type": "result", "results": [result]}))
    stats = ws.receive_json()
    assert stats["type"] == "stats", stats
    return stats


def mandelbrot_job(width: int, height: int, n: int = 1) -> dict[str, Any]:
    tile = {"x0": -2.0, "y0": -1.0, "x1": 0.5, "y1": 1.0, "width": width, "height": height}
    units = [{"params": tile | {"max_iter": 10 + i}} for i in range(n)]
    return {"kernel": "mandelbrot", "units": units, "policy": {"compare": "kernel"}}


def checksum_job(x: str, size: int) -> dict[str, Any]:
    ref = {"digest": x, "dtype": "uint8", "shape": [size]}
    return {"kernel": "checksum", "units": [{"inputs": {"x": ref}}], "policy": {"quorum": 2}}


# ---- 1. uploads: only a lease's outputs, within bounds, and they expire ------------------------


def test_a_worker_that_holds_no_lease_may_store_nothing(app: App) -> None:
    with app.client.websocket_connect(WS) as ws:
        worker = hello(ws)  # anyone gets these
        junk = [bytes([i]) * (1 << 20) for i in range(3)]
        for data in junk:
            doc = problem(app.put(data, worker), 403)
            assert "holds no lease" in doc.detail
    assert not any(app.on_disk(sha(d)) or app.row(sha(d)) for d in junk)
    assert not list((app.data / "blobs" / "tmp").iterdir())


def test_a_worker_uploads_only_what_its_leases_declare(make_on_both: MakeApp) -> None:
    app = make_on_both()
    alice = app.token("alice")
    # One 4 x 4 mandelbrot tile: its output is declared as 4 * 4 uint32 = 64 bytes.
    assert app.submit(mandelbrot_job(4, 4, n=2), alice).status_code == 201
    with app.client.websocket_connect(WS) as ws:
        worker = hello(ws)
        lease(ws)
        doc = problem(app.put(b"x" * 65, worker), 413)
        assert "at most 64 bytes" in doc.detail and "65 bytes" in doc.detail
        assert app.put(b"a" * 64, worker).status_code == 201
        # A second output for the one lease does not fit what it declares.
        r = app.put(b"b" * 64, worker)
        doc = problem(r, 429)
        assert "64 bytes" in doc.detail and "worker_upload_ttl_s" in doc.detail
        assert int(r.headers["retry-after"]) >= 1
        assert not app.on_disk(sha(b"b" * 64))
        # A second lease declares room for one more.
        lease(ws)
        assert app.put(b"b" * 64, worker).status_code == 201


def test_a_worker_upload_counts_until_its_result_names_it(app: App) -> None:
    alice = app.token("alice")
    assert app.submit(mandelbrot_job(4, 4, n=2), alice).status_code == 201
    first, second = b"\x01" * 64, b"\x02" * 64
    with app.client.websocket_connect(WS) as ws:
        worker = hello(ws)
        item = lease(ws)
        assert app.put(first, worker).status_code == 201
        send_result(ws, item, "iters", first, "uint32")
        # Its lease is returned: the worker holds none and may store nothing more.
        assert "holds no lease" in problem(app.put(second, worker), 403).detail
        lease(ws)
        # The first upload is the job's now: the whole declared size is free again.
        assert app.put(second, worker).status_code == 201


def test_token_quota_on_uploads_no_job_uses(make_on_both: MakeApp) -> None:
    app = make_on_both({"upload_quota_bytes": 100, "upload_quota_blobs": 3})
    alice, bob = app.token("alice"), app.token("bob")
    x, y = b"x" * 60, b"y" * 60
    assert app.put(x, alice).status_code == 201
    r = app.put(y, alice)
    doc = problem(r, 429)
    assert doc.title == "Upload Quota Exceeded"
    assert "60 bytes in 1 upload(s)" in doc.detail and "at most 100 bytes" in doc.detail
    assert "upload_quota_bytes" in doc.detail and "Submit the job" in doc.detail
    assert 1 <= int(r.headers["retry-after"]) <= 3600
    assert not app.on_disk(sha(y))
    assert app.put(y, bob).status_code == 201  # quotas are per token
    assert app.put(x, alice).status_code == 200  # uploading it again costs nothing more
    # Once a job of hers uses x, it no longer counts.
    assert app.submit(checksum_job(sha(x), 60), alice).status_code == 201
    assert app.put(y, alice).status_code == 200
    # A count bound too: many small uploads.
    assert app.put(b"1", alice).status_code == 201
    assert app.put(b"2", alice).status_code == 201
    doc = problem(app.put(b"3", alice), 429)
    assert "3 upload(s)" in doc.detail and "upload_quota_blobs" in doc.detail


def test_unused_uploads_expire_and_leave_disk_and_database(make_on_both: MakeApp) -> None:
    app = make_on_both(upload_ttl_s=0.5, worker_upload_ttl_s=0.5, blob_sweep_interval_s=0.1)
    alice = app.token("alice")
    unused, used = b"nobody needs this", b"a job uses this"
    assert app.put(unused, alice).status_code == 201
    assert app.put(used, alice).status_code == 201
    assert app.submit(checksum_job(sha(used), len(used)), alice).status_code == 201
    with app.client.websocket_connect(WS) as ws:
        worker = hello(ws)
        lease(ws)  # a checksum unit: 32 bytes declared
        lost = b"w" * 32  # its result never comes
        assert app.put(lost, worker).status_code == 201
    wait_for(lambda: not app.on_disk(sha(unused)) and not app.on_disk(sha(lost)))
    assert not app.row(sha(unused)) and not app.row(sha(lost))
    assert app.store.tx(lambda c: c.execute(select(func.count()).select_from(C)).scalar()) == 0
    assert problem(app.get(sha(unused), alice), 404)
    assert app.on_disk(sha(used)) and app.row(sha(used))
    assert app.get(sha(used), alice).content == used
    # An expired upload may simply be made again.
    assert app.put(unused, alice).status_code == 201


# ---- 2. an upload is a claim: another's job cannot free it -------------------------------------


def test_deleting_another_submitters_job_keeps_an_upload_not_yet_used(
    make_on_both: MakeApp,
) -> None:
    app = make_on_both()
    s1, s2 = app.token("s1"), app.token("s2")
    data = b"s1's input, not submitted yet"
    x = sha(data)
    assert app.put(data, s1).status_code == 201
    # s2 learned the digest: it must upload the bytes itself to name them.
    doc = problem(app.submit(checksum_job(x, len(data)), s2), 422)
    assert doc.errors == [
        f"units[0].inputs.x: blob {x} is not stored; upload it first with PUT /api/v1/blobs/{x}"
    ]
    assert app.put(data, s2).status_code == 200
    job = app.submit(checksum_job(x, len(data)), s2).json()
    assert app.client.delete(f"/api/v1/jobs/{job['id']}", headers=s2).status_code == 204
    assert app.on_disk(x) and app.row(x)  # s1's upload still holds it
    assert app.submit(checksum_job(x, len(data)), s1).status_code == 201
    # s2's upload was used by its deleted job; it reads the blob no more.
    assert problem(app.get(x, s2), 404)
    # An operator may name any blob without uploading it; its deleted job frees no upload.
    operator = app.token("olga", "operator")
    more = b"s1's next input"
    assert app.put(more, s1).status_code == 201
    job = app.submit(checksum_job(sha(more), len(more)), operator).json()
    assert app.client.delete(f"/api/v1/jobs/{job['id']}", headers=operator).status_code == 204
    assert app.on_disk(sha(more))
    assert app.submit(checksum_job(sha(more), len(more)), s1).status_code == 201


def test_deleting_the_last_job_frees_a_blob_its_owner_uploaded_for_it(app: App) -> None:
    s1 = app.token("s1")
    data = b"used once"
    x = sha(data)
    assert app.put(data, s1).status_code == 201
    job = app.submit(checksum_job(x, len(data)), s1).json()
    assert app.client.delete(f"/api/v1/jobs/{job['id']}", headers=s1).status_code == 204
    assert not app.on_disk(x) and not app.row(x)
    # An upload made after the job was submitted is for a later job: it stays.
    assert app.put(data, s1).status_code == 201
    job = app.submit(checksum_job(x, len(data)), s1).json()
    assert app.put(data, s1).status_code == 200
    assert app.client.delete(f"/api/v1/jobs/{job['id']}", headers=s1).status_code == 204
    assert app.on_disk(x)
    assert app.submit(checksum_job(x, len(data)), s1).status_code == 201


# ---- 3. reads: owners, operators, and workers only for their leases' inputs --------------------


def test_blob_reads_need_credentials_and_a_claim(app: App) -> None:
    s1, s2, operator = app.token("s1"), app.token("s2"), app.token("olga", "operator")
    data = b"private input"
    x = sha(data)
    assert app.put(data, s1).status_code == 201
    r = app.get(x)
    assert "credentials" in problem(r, 401).detail and r.headers["www-authenticate"]
    assert app.client.head(f"/api/v1/blobs/{x}").status_code == 401
    assert problem(app.get(x, {"authorization": "Bearer tg_nope"}), 401)
    r = app.get(x, s1)
    assert r.status_code == 200 and r.content == data
    assert r.headers["cache-control"] == "private, max-age=31536000, immutable"
    # Another token cannot tell a blob it may not read from one not stored.
    doc = problem(app.get(x, s2), 404)
    assert x in doc.detail and doc.detail == problem(app.get("0" * 64, s2), 404).detail.replace(
        "0" * 64, x
    )
    assert app.client.head(f"/api/v1/blobs/{x}", headers=s2).status_code == 404
    # A digest taken from a small validated output: its bytes came with the results.
    assert "come with the job's results" in doc.detail
    assert app.get(x, operator).content == data


def test_workers_read_their_leases_inputs_and_never_outputs(make_on_both: MakeApp) -> None:
    app = make_on_both()
    s1, s2 = app.token("s1"), app.token("s2")
    data = b"the unit's input"
    x = sha(data)
    assert app.put(data, s1).status_code == 201
    job = app.submit(checksum_job(x, len(data)), s1).json()
    output = hashlib.sha256(b"whatever A computed").digest()  # checksum: 32 bytes
    with (
        app.client.websocket_connect(WS) as ws_a,
        app.client.websocket_connect(WS) as ws_b,
        app.client.websocket_connect(WS) as ws_c,
    ):
        a, b, c = hello(ws_a), hello(ws_b), hello(ws_c)
        doc = problem(app.get(x, b), 403)  # no lease yet
        assert "holds no lease" in doc.detail and "as an input" in doc.detail
        item = lease(ws_a)
        assert app.get(x, a).content == data
        assert app.client.head(f"/api/v1/blobs/{x}", headers=a).status_code == 200
        assert app.put(output, a).status_code == 201
        send_result(ws_a, item, "digest", output, "uint8")
        assert problem(app.get(x, a), 403)  # its lease is over
        lease(ws_b)  # the second replica of the same unit
        assert app.get(x, b).content == data
        # The first replica's output: reading it would let B copy instead of compute.
        assert "as an input" in problem(app.get(sha(output), b), 403).detail
        assert problem(app.get(sha(output), c), 403)
    # The job's owner reads its outputs; another submitter does not.
    assert app.get(sha(output), s1).content == output
    assert problem(app.get(sha(output), s2), 404)
    units = app.client.get(f"/api/v1/jobs/{job['id']}/units", headers=s1).json()["units"]
    assert units[0]["results"] == 1


def test_a_banned_worker_reads_nothing(app: App) -> None:
    s1, operator = app.token("s1"), app.token("olga", "operator")
    data = b"input"
    assert app.put(data, s1).status_code == 201
    assert app.submit(checksum_job(sha(data), len(data)), s1).status_code == 201
    with app.client.websocket_connect(WS) as ws:
        worker = hello(ws)
        lease(ws)
        worker_id = worker["authorization"].split()[1].split(":")[0]
        r = app.client.post(
            f"/api/v1/workers/{worker_id}/ban", json={"reason": "test"}, headers=operator
        )
        assert r.status_code == 200, r.text
        assert "banned" in problem(app.get(sha(data), worker), 403).detail


# ---- 4. what is served is checked against its digest -------------------------------------------


def test_a_blob_damaged_on_disk_is_not_served_and_can_be_uploaded_again(app: App) -> None:
    alice = app.token("alice")
    data = bytes(range(256)) * 16
    x = sha(data)
    assert app.put(data, alice).status_code == 201
    path = app.data / "blobs" / x[:2] / x
    damaged = bytearray(data)
    damaged[100] ^= 0x01
    path.write_bytes(damaged)
    doc = problem(app.get(x, alice), 409)
    assert doc.title == "Corrupt Blob" and "removed" in doc.detail and "PUT" in doc.detail
    assert not path.exists()
    doc = problem(app.get(x, alice), 404)
    assert "damaged on disk" in doc.detail
    assert app.put(data, alice).status_code == 201
    assert app.get(x, alice).content == data
    # HEAD checks too.
    path.write_bytes(damaged)
    assert app.client.head(f"/api/v1/blobs/{x}", headers=alice).status_code == 409
    assert not path.exists()


def test_a_damaged_file_is_replaced_by_the_next_upload(app: App) -> None:
    alice = app.token("alice")
    data = b"replace me"
    x = sha(data)
    assert app.put(data, alice).status_code == 201
    path = app.data / "blobs" / x[:2] / x
    path.write_bytes(b"REPLACE ME")
    assert app.put(data, alice).status_code == 200
    assert path.read_bytes() == data


def test_a_large_damaged_blob_is_never_delivered_whole(app: App) -> None:
    alice = app.token("alice")
    data = np.random.default_rng(3).integers(0, 256, WHOLE + 3 * (1 << 20), np.uint8).tobytes()
    x = sha(data)
    assert app.put(data, alice).status_code == 201
    good = app.get(x, alice)
    assert good.status_code == 200 and good.content == data
    path = app.data / "blobs" / x[:2] / x
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x80
    path.write_bytes(damaged)
    r = app.get(x, alice)
    # The status went out before the last byte was read: the body breaks off short instead.
    assert int(r.headers["content-length"]) == len(data)
    assert len(r.content) < len(data)
    assert not path.exists()
    assert "damaged on disk" in problem(app.get(x, alice), 404).detail


def test_bytes_kept_in_the_database_are_checked_too(app: App) -> None:
    operator = app.token("olga", "operator")
    digest = sha(b"the validated output")
    app.store.tx(blob_rows.keep, {digest: b"the validated 0utput"}, time.time())
    assert problem(app.get(digest, operator), 409).title == "Corrupt Blob"
    assert app.store.tx(blob_rows.read, digest) is None
    assert problem(app.get(digest, operator), 404)


def test_concurrent_uploads_cannot_overrun_a_quota_on_postgres(pg_url: str) -> None:
    """Coordinators run uploads side by side on PostgreSQL: each owner's are serialized, so
    all of them together stay within its quota."""
    from concurrent.futures import ThreadPoolExecutor

    from tabgrid.store import Store, tokens, uploads

    store = Store(pg_url)
    try:
        _, secret = store.create_token("submitter", "racer")
        who = store.tx(tokens.lookup, secret)
        owner = uploads.Owner("token", str(who.id), who)
        limits = Limits(upload_quota_bytes=100)

        def upload(i: int) -> bool:
            try:
                store.tx(uploads.register, owner, sha(bytes([i])), 60, limits, 3600.0, time.time())
                return True
            except uploads.Refused:
                return False

        with ThreadPoolExecutor(8) as pool:
            done = list(pool.map(upload, range(16)))
        assert done.count(True) == 1
        rows = store.tx(lambda c: c.execute(select(func.count()).select_from(C)).scalar())
        assert rows == 1
    finally:
        store.close()
