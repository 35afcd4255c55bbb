"""Regressions an attacker found in the store and the scheduler's round, on both backends:
ids are never reused, a result nothing foresaw costs only its sender, unused worker records go,
and hostile values fail at decode."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.schema import CreateTable
from sqlmodel import SQLModel

from tabgrid import kernels
from tabgrid.blobs import FileBlobStore
from tabgrid.coordinator.scheduler import Scheduler
from tabgrid.coordinator.telemetry import Telemetry
from tabgrid.coordinator.validator import Incoming, job_key
from tabgrid.protocol import (
    Hello,
    JobSpec,
    JobSubmit,
    LeaseItem,
    Policy,
    ResultItem,
    UnitSpec,
    worker_decoder,
)
from tabgrid.settings import Settings
from tabgrid.store import Store
from tabgrid.store import jobs as jobs_q
from tabgrid.store import workers as workers_q
from tabgrid.worker.session import Worker
from test_http_hardening import make_env  # noqa: F401  (the live-server fixture)
from test_store import claim, out, worker


def submit_checksum(store: Store, n: int, quorum: int = 2, tag: str = "") -> int:
    spec = JobSubmit(
        kernel="checksum",
        units=[UnitSpec(params={"i": i, "tag": tag}) for i in range(n)],
        policy=Policy(quorum=quorum),
    )
    return store.tx(jobs_q.create_job, None, spec, time.time())


def test_a_deleted_newest_job_never_lends_its_id(store: Store) -> None:
    first = submit_checksum(store, 2)
    store.tx(jobs_q.retire_job, first)
    second = submit_checksum(store, 2)
    assert second > first
    units = store.tx(lambda c: c.execute(text("SELECT min(id) FROM units")).scalar())
    assert units > 2, "unit ids of the deleted job were handed out again"


def test_an_older_sqlite_database_is_rebuilt_so_ids_are_never_reused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:  # the schema as it shipped before, without AUTOINCREMENT
        for table in SQLModel.metadata.sorted_tables:
            if table.name in ("coordinators", "blob_bodies", "blob_parts"):
                continue  # later revisions': not in a database made before revisions
            ddl = str(CreateTable(table).compile(engine)).replace(" AUTOINCREMENT", "")
            conn.exec_driver_sql(ddl.replace("\tcoordinator VARCHAR, \n", ""))
        conn.exec_driver_sql(
            "INSERT INTO jobs (id, name, kernel, params, inputs, policy, state, priority, "
            "n_units, open_units, done_units, failed_units, created_at, updated_at) "
            "VALUES (7, 'kept', 'checksum', '{}', '{}', '{}', 'done', 0, 0, 0, 0, 0, 0, 0)"
        )
    engine.dispose()
    store = Store(url)
    try:
        ddl = store.tx(
            lambda c: c.execute(text("SELECT sql FROM sqlite_master WHERE name = 'jobs'")).scalar()
        )
        assert "AUTOINCREMENT" in ddl
        assert store.tx(lambda c: c.execute(text("SELECT name FROM jobs")).scalar()) == "kept"
        store.tx(lambda c: c.execute(text("DELETE FROM jobs")))
        assert submit_checksum(store, 1) == 8, "the deleted newest id came back"
        indexes = store.tx(
            lambda c: (
                c.execute(
                    text("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='units'")
                )
                .scalars()
                .all()
            )
        )
        assert "units_leasable" in indexes
    finally:
        store.close()


def test_workers_cache_job_descriptions_by_key_not_by_id() -> None:
    a = job_key(5, "checksum", {"n": 1}, {})
    b = job_key(5, "checksum", {"n": 2}, {})
    assert a != b, "two jobs under one id must not share a key"
    w = Worker("http://127.0.0.1:9", gpu=object())
    w._handle(JobSpec(job=5, kernel="checksum", params={"n": 1}, inputs={}, key=a))
    lease = LeaseItem(lease=1, job=5, unit=1, index=0, params={}, inputs={}, deadline=0, spec=b)
    with pytest.raises(Exception, match="no job description"):
        asyncio.run(w._compute(lease))


def test_a_result_the_store_cannot_take_costs_only_its_sender(store: Store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Constructed without the decode checks, as a value no check foresaw would be: a lone
    surrogate cannot be encoded for either database, so its statement fails. The honest
    pair's unit validates all the same, and the sender is named to be cut off."""
    job = submit_checksum(store, 1)
    honest = [worker(store, "1"), worker(store, "2")]
    evil = worker(store, "3")
    store.tx(lambda c: c.execute(text("UPDATE units SET want = 3")))
    leases = [claim(store, w, 1)[0] for w in honest]
    bad = claim(store, evil, 1)[0]
    scheduler = Scheduler(store, FileBlobStore(tmp_path / "blobs"), Settings(), Telemetry())
    same = out("same", data=True)
    batch = [
        Incoming(w, ResultItem(lease=c.lease, outputs=same))
        for w, c in zip(honest, leases, strict=True)
    ]
    batch.insert(1, Incoming(evil, ResultItem(lease=bad.lease, error="lone \ud800 surrogate")))
    res = store.tx(scheduler._work, batch, {}, time.time())
    assert evil in res.outcome.hostile
    assert res.outcome.units_done == 1 and res.outcome.valid == 2
    ids = {"a": honest[0], "b": honest[1]}
    rows = store.tx(
        lambda c: c.execute(
            text("SELECT valid, invalid FROM workers WHERE id IN (:a, :b)"), ids
        ).all()
    )
    assert sorted(map(tuple, rows)) == [(1, 0), (1, 0)]
    assert store.tx(jobs_q.job_record, job)["done_units"] == 1


def test_worker_records_that_never_held_a_lease_are_forgotten(store: Store) -> None:
    submit_checksum(store, 1)
    idle = [worker(store, str(i)) for i in range(20)]
    busy = worker(store, "busy")
    claim(store, busy, 1)
    connected = idle[0]
    gone = store.tx(workers_q.prune_unused, time.time() + 1, [connected])
    assert gone == 19
    left = set(store.tx(lambda c: c.execute(text("SELECT id FROM workers")).scalars().all()))
    assert left == {busy, connected}
    assert store.tx(workers_q.prune_unused, 0.0, []) == 0, "recent records stay"


@pytest.mark.parametrize(
    "result",
    [
        {"lease": 2**31},
        {"lease": -1},
        {"lease": "7"},
        {"lease": 1, "outputs": {"o": {"digest": "0" * 64, "dtype": "uint8", "shape": [1] * 65}}},
        {"lease": 1, "outputs": {"o": {"digest": "0" * 64, "dtype": "uint8", "shape": [2**62]}}},
        {"lease": 1, "error": "x" * 5000},
        {"lease": 1, "error": "nul \u0000"},
        {"lease": 1, "elapsed_ms": -1},
        {"lease": 1, "outputs": {"": {"digest": "0" * 64, "dtype": "uint8", "shape": [1]}}},
    ],
)
def test_hostile_result_fields_fail_at_decode(result: dict) -> None:
    with pytest.raises(msgspec.ValidationError):
        worker_decoder.decode(msgspec.json.encode({"type": "result", "results": [result]}))


def test_hello_strings_refuse_nul() -> None:
    with pytest.raises(msgspec.ValidationError):
        worker_decoder.decode(
            msgspec.json.encode({"type": "hello", "kind": "native", "name": "\0"})
        )
    assert isinstance(worker_decoder.decode(b'{"type":"hello","kind":"native"}'), Hello)
    assert kernels.get("checksum")


def test_over_a_real_server_a_deleted_newest_job_lends_neither_its_id_nor_its_description(
    db_url: str,
    make_env,  # noqa: F811  (the fixture imported above)
) -> None:  # type: ignore[no-untyped-def]
    """The attack as it ran: submit A, delete it, submit B with other params. B gets a new
    id, and a worker connected through both is sent B's description under B's own key."""
    from websockets.sync.client import connect

    env = make_env(db=db_url, distinct_addresses=False)
    _, alice = env.server.token("submitter", "alice")
    ws_url = env.server.url.replace("http", "ws", 1) + "/api/v1/worker"

    def submit(tag: str) -> int:
        body = {"kernel": "checksum", "params": {"tag": tag}, "units": [{}]}
        r = env.http.post("/api/v1/jobs", json=body, headers=alice)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    with connect(ws_url) as ws:
        ws.send('{"type": "hello", "kind": "native", "name": "w"}')
        assert msgspec.json.decode(ws.recv())["type"] == "welcome"
        a = submit("A")
        ws.send('{"type": "ready", "n": 1}')
        spec_a = msgspec.json.decode(ws.recv())
        lease_a = msgspec.json.decode(ws.recv())["leases"][0]
        assert spec_a["type"] == "job" and spec_a["job"] == a and lease_a["spec"] == spec_a["key"]
        assert env.http.delete(f"/api/v1/jobs/{a}", headers=alice).status_code == 204
        b = submit("B")
        assert b > a, "the deleted newest job's id was handed out again"
        deadline = time.monotonic() + 10
        while True:  # the cancel of A's lease comes first, then B's description and lease
            ws.send('{"type": "ready", "n": 1}')
            msg = msgspec.json.decode(ws.recv())
            if msg["type"] == "job":
                break
            assert time.monotonic() < deadline, msg
        lease_b = msgspec.json.decode(ws.recv())["leases"][0]
    assert msg["job"] == b and msg["params"]["tag"] == "B" and msg["key"] != spec_a["key"]
    assert lease_b["job"] == b and lease_b["spec"] == msg["key"]
