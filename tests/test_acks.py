"""Results are acknowledged once the tick that dealt with them committed, on both backends:
a copy sent again counts once and is acknowledged again, a released lease's late result is
taken, another worker's lease is refused, and a tick that failed acknowledges nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from psycopg import errors as pg_errors
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from tabgrid.blobs import FileBlobStore
from tabgrid.coordinator import scheduler as sched_mod
from tabgrid.coordinator.scheduler import Scheduler
from tabgrid.coordinator.telemetry import Telemetry
from tabgrid.protocol import Ack, CoordinatorMessage, Error, ResultItem, Stats
from tabgrid.settings import Settings
from tabgrid.store import Store
from tabgrid.store import jobs as jobs_q
from tabgrid.store import leases as leases_q
from tabgrid.store.db import transient
from test_hardening_store import submit_checksum
from test_store import claim, out, worker


class FakePeer:
    """A worker connection as the scheduler sees it; it keeps what was posted to it."""

    def __init__(self, worker_id: str, acks: bool = True) -> None:
        self.worker_id, self.addr = worker_id, worker_id
        self.connected_at, self.credit, self.draining = time.time(), 0, False
        self.leases: set[int] = set()
        self.jobs_sent: set[str] = set()
        self.idle_reason: str | None = None
        self.acks = acks
        self.posted: list[CoordinatorMessage] = []

    def post(self, msg: CoordinatorMessage) -> None:
        self.posted.append(msg)

    def close(self, reason: str, code: str = "") -> None:
        raise AssertionError(f"closed: {reason}")

    def take(self, kind: type) -> list:
        found = [m for m in self.posted if isinstance(m, kind)]
        self.posted = [m for m in self.posted if not isinstance(m, kind)]
        return found


@pytest.fixture
def scheduler(store: Store, tmp_path) -> Scheduler:  # type: ignore[no-untyped-def]
    return Scheduler(store, FileBlobStore(tmp_path / "blobs"), Settings(), Telemetry())


def send(scheduler: Scheduler, peer: FakePeer, *leases: int, value: str = "same") -> None:
    """One result message carrying these leases' results, and the tick that records it."""
    items = [ResultItem(lease=lease, outputs=out(value, data=True)) for lease in leases]
    scheduler.results(peer, items)
    asyncio.run(scheduler._tick())


def refuse_ticks(scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Every tick fails as if the database had gone; returns the real tick's work."""
    work = scheduler._work

    def refused(*args, **kw):  # type: ignore[no-untyped-def]
        raise RuntimeError("the database went away")

    monkeypatch.setattr(scheduler, "_work", refused)
    return work


def acked(peer: FakePeer) -> list[int]:
    return [lease for ack in peer.take(Ack) for lease in ack.leases]


def unit_row(store: Store) -> tuple:
    q = "SELECT state, want, issued, inflight, results FROM units"
    return tuple(store.tx(lambda c: c.execute(text(q)).one()))


def replicas(store: Store) -> list[tuple[str, str]]:
    q = "SELECT worker_id, state FROM replicas ORDER BY id"
    return [tuple(r) for r in store.tx(lambda c: c.execute(text(q)).all())]


def unit_rows_wanting(store: Store) -> int:
    q = "SELECT count(*) FROM units WHERE want > 0"
    return store.tx(lambda c: c.execute(text(q)).scalar_one())


def results_of(store: Store, wid: str) -> int:
    q = text("SELECT results FROM workers WHERE id = :w")
    return store.tx(lambda c: c.execute(q, {"w": wid}).scalar_one())


def test_a_result_sent_twice_is_recorded_once_and_acknowledged_twice(
    store: Store, scheduler: Scheduler
) -> None:
    submit_checksum(store, 1, quorum=2)
    a, b = worker(store, "1"), worker(store, "2")
    pa, pb = FakePeer(a), FakePeer(b)
    scheduler.attach(pa)
    scheduler.attach(pb)
    (la,), (lb,) = claim(store, a, 1), claim(store, b, 1)
    send(scheduler, pa, la.lease)
    assert acked(pa) == [la.lease]
    assert [s.results for s in pa.take(Stats)] == [1]
    send(scheduler, pa, la.lease)  # its acknowledgement was lost: sent again
    assert acked(pa) == [la.lease]
    assert pa.posted == [], "a copy is ignored without a word"
    assert results_of(store, a) == 1 and unit_row(store) == ("running", 0, 2, 1, 1)
    send(scheduler, pb, lb.lease, lb.lease)  # two copies in one message
    assert acked(pb) == [lb.lease, lb.lease]
    assert not pb.take(Error)
    assert results_of(store, b) == 1
    assert unit_row(store) == ("done", 0, 2, 0, 2)
    assert replicas(store) == [(a, "valid"), (b, "valid")]


@pytest.mark.parametrize("lost", ["disconnect", "deadline"])
def test_a_released_lease_of_this_worker_is_taken_and_needs_no_replacement(
    store: Store, scheduler: Scheduler, lost: str
) -> None:
    submit_checksum(store, 1, quorum=2)
    a, b, c = worker(store, "1"), worker(store, "2"), worker(store, "3")
    (la,), (lb,) = claim(store, a, 1), claim(store, b, 1)
    if lost == "disconnect":  # on this coordinator or another one sharing the database
        assert store.tx(leases_q.release_worker, a, time.time()) == 1
    else:
        store.tx(lambda conn: conn.execute(text("UPDATE replicas SET deadline = 0")))
        assert store.tx(leases_q.expire, time.time()) == 2
    pa = FakePeer(a)  # a new connection of the same worker
    scheduler.attach(pa)
    send(scheduler, pa, la.lease)
    assert acked(pa) == [la.lease] and not pa.take(Error)
    assert results_of(store, a) == 1
    state, want, issued, inflight, results = unit_row(store)
    # The replica its release asked for is not needed any more.
    assert (want, issued, results) == ((0, 2, 1) if lost == "disconnect" else (1, 2, 1))
    pb = FakePeer(b)
    scheduler.attach(pb)
    send(scheduler, pb, lb.lease)
    assert acked(pb) == [lb.lease]
    assert unit_row(store) == ("done", 0, 2, 0, 2)
    assert replicas(store) == [(a, "valid"), (b, "valid")]
    assert claim(store, c, 1) == [], "no third replica for a unit that had its two"


def test_a_result_for_another_workers_lease_is_refused_and_acknowledged(
    store: Store, scheduler: Scheduler
) -> None:
    submit_checksum(store, 1, quorum=2)
    a, b = worker(store, "1"), worker(store, "2")
    (la,) = claim(store, a, 1)
    pb = FakePeer(b)
    scheduler.attach(pb)
    send(scheduler, pb, la.lease, 999_999)
    assert acked(pb) == [la.lease, 999_999]
    errors = [e.message for e in pb.take(Error)]
    assert len(errors) == 2 and all("is not held by you" in e for e in errors), errors
    assert results_of(store, b) == 0
    assert unit_row(store) == ("running", 1, 1, 1, 0) and replicas(store) == [(a, "leased")]


def test_a_tick_that_failed_acknowledges_nothing_until_it_is_done(
    store: Store, scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit_checksum(store, 1, quorum=1)
    a = worker(store, "1")
    (la,) = claim(store, a, 1)
    pa = FakePeer(a)
    scheduler.attach(pa)
    work = refuse_ticks(scheduler, monkeypatch)
    with pytest.raises(RuntimeError):
        send(scheduler, pa, la.lease)
    assert pa.posted == [] and replicas(store) == [(a, "leased")]
    monkeypatch.setattr(scheduler, "_work", work)
    asyncio.run(scheduler._tick())  # the same results, tried again
    assert acked(pa) == [la.lease]
    assert replicas(store) == [(a, "valid")]


def test_a_worker_that_did_not_ask_gets_no_acknowledgement(
    store: Store, scheduler: Scheduler
) -> None:
    submit_checksum(store, 1, quorum=1)
    a = worker(store, "1")
    (la,) = claim(store, a, 1)
    pa = FakePeer(a, acks=False)
    scheduler.attach(pa)
    send(scheduler, pa, la.lease)
    assert [type(m) for m in pa.posted] == [Stats]


def test_an_error_sent_again_after_its_unit_was_retried_counts_once(
    store: Store, scheduler: Scheduler
) -> None:
    """A retry of an ended job's failed units releases their error replicas; a copy of such an
    error, sent again because its acknowledgement was lost, changes nothing."""
    job = submit_checksum(store, 1, quorum=2)
    store.tx(lambda c: c.execute(text("UPDATE jobs SET policy = :p"), {"p": MAX_TWO}))
    a, b = worker(store, "1"), worker(store, "2")
    pa, pb = FakePeer(a), FakePeer(b)
    scheduler.attach(pa)
    scheduler.attach(pb)
    (la,), (lb,) = claim(store, a, 1), claim(store, b, 1)
    for peer, lease in ((pa, la), (pb, lb)):
        scheduler.results(peer, [ResultItem(lease=lease.lease, error="device lost")])
        asyncio.run(scheduler._tick())
    assert unit_row(store)[0] == "failed"
    assert store.tx(jobs_q.retry_failed, job, 2, time.time()) == 1
    before = unit_row(store)
    scheduler.results(pa, [ResultItem(lease=la.lease, error="device lost")])  # the copy
    asyncio.run(scheduler._tick())
    assert acked(pa)[-1] == la.lease, "acknowledged, so the worker forgets it"
    assert unit_row(store) == before, "the unit still wants its new replicas"
    assert errors_of(store, a) == 1
    assert replicas(store) == [(a, "released"), (b, "released")]


MAX_TWO = '{"quorum":2,"max_replicas":2}'


def errors_of(store: Store, wid: str) -> int:
    q = text("SELECT errors FROM workers WHERE id = :w")
    return store.tx(lambda c: c.execute(q, {"w": wid}).scalar_one())


class ClosablePeer(FakePeer):
    """A connection the scheduler may close: it keeps the reasons."""

    def __init__(self, worker_id: str) -> None:
        super().__init__(worker_id)
        self.closed: list[str] = []

    def close(self, reason: str, code: str = "") -> None:
        self.closed.append(reason)


def test_one_workers_two_released_leases_of_a_unit_count_once(
    store: Store, scheduler: Scheduler
) -> None:
    # The worker lost the unit twice (disconnects) and was given it again each time, as a
    # released lease allows; then it sends both results at once. One worker's word is one.
    submit_checksum(store, 1, quorum=2)
    a = worker(store, "1")
    (first,) = claim(store, a, 1)
    assert store.tx(leases_q.release_worker, a, time.time()) == 1
    (second,) = claim(store, a, 1)
    assert second.unit == first.unit and second.lease != first.lease
    assert store.tx(leases_q.release_worker, a, time.time()) == 1
    pa = FakePeer(a)
    scheduler.attach(pa)
    send(scheduler, pa, first.lease, second.lease, value="wrong")
    assert acked(pa) == [first.lease, second.lease]
    assert [e.message for e in pa.take(Error)] == [f"lease {second.lease} was released"]
    assert results_of(store, a) == 1
    state, _, _, _, results = unit_row(store)
    assert state != "done" and results == 1, "a unit is never accepted on one worker's results"
    assert replicas(store) == [(a, "returned"), (a, "released")]


def test_results_no_tick_could_record_go_back_to_their_sender(
    store: Store, scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit_checksum(store, 1, quorum=1)
    a = worker(store, "1")
    (la,) = claim(store, a, 1)
    pa = ClosablePeer(a)
    scheduler.attach(pa)
    work = refuse_ticks(scheduler, monkeypatch)
    scheduler.results(pa, [ResultItem(lease=la.lease, outputs=out("same", data=True))])
    for _ in range(sched_mod.MAX_TICK_TRIES + 1):
        with pytest.raises(RuntimeError):
            asyncio.run(scheduler._tick())
    # Given up: the worker, which resends unacknowledged results on a new connection, is
    # sent away to make one.
    assert acked(pa) == [] and len(pa.closed) == 1 and "send them" in pa.closed[0]
    monkeypatch.setattr(scheduler, "_work", work)
    again = FakePeer(a)
    scheduler.attach(again)
    send(scheduler, again, la.lease)
    assert acked(again) == [la.lease]
    assert replicas(store) == [(a, "valid")]


def test_a_transient_database_error_is_not_held_against_the_sender(
    store: Store, scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit_checksum(store, 1, quorum=1)
    a = worker(store, "1")
    (la,) = claim(store, a, 1)
    pa = ClosablePeer(a)
    scheduler.attach(pa)
    real = scheduler.validator.record
    calls = {"n": 0}

    def deadlocked(*args, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:  # a deadlock victim, say: nothing to do with the results
            raise OperationalError("UPDATE workers ...", {}, sqlite3.OperationalError("locked"))
        return real(*args, **kw)

    monkeypatch.setattr(scheduler.validator, "record", deadlocked)
    scheduler.results(pa, [ResultItem(lease=la.lease, outputs=out("same", data=True))])
    with pytest.raises(OperationalError):
        asyncio.run(scheduler._tick())
    assert acked(pa) == [] and pa.closed == [] and not pa.take(Error)
    asyncio.run(scheduler._tick())  # tried again, whole
    assert acked(pa) == [la.lease] and pa.closed == []
    assert replicas(store) == [(a, "valid")]


def test_transient_database_errors_are_told_from_the_rest() -> None:
    def wrapped(orig: Exception, invalidated: bool = False) -> DBAPIError:
        return DBAPIError("UPDATE ...", {}, orig, connection_invalidated=invalidated)

    assert transient(wrapped(sqlite3.OperationalError("database is locked")))
    assert transient(wrapped(pg_errors.DeadlockDetected("deadlock detected")))
    assert transient(wrapped(pg_errors.SerializationFailure("could not serialize")))
    assert transient(wrapped(Exception("server closed the connection"), invalidated=True))
    assert not transient(wrapped(sqlite3.OperationalError("no such table: units")))
    assert not transient(wrapped(pg_errors.ProgramLimitExceeded("index row size exceeds")))
    assert not transient(wrapped(pg_errors.UniqueViolation("duplicate key")))
    assert not transient(RuntimeError("a result no check foresaw"))


def test_two_workers_at_one_address_make_no_quorum(store: Store, scheduler: Scheduler) -> None:
    # A lease of the first lapsed and the unit went to the second, at the same address (the
    # claim looks only at live leases); the first's late result still counts as a result,
    # but one address is one witness where replicas go to distinct addresses.
    submit_checksum(store, 1, quorum=2)
    a, b = worker(store, "1"), worker(store, "2")
    (la,) = claim(store, a, 1, addr="10.9.9.9")
    assert store.tx(leases_q.release_worker, a, time.time()) == 1
    (lb,) = claim(store, b, 1, addr="10.9.9.9")
    assert lb.unit == la.unit
    pa, pb = FakePeer(a), FakePeer(b)
    scheduler.attach(pa)
    scheduler.attach(pb)
    send(scheduler, pa, la.lease, value="wrong")
    send(scheduler, pb, lb.lease, value="wrong")
    assert acked(pa) == [la.lease] and acked(pb) == [lb.lease]
    state, want, _, _, results = unit_row(store)
    assert (state, results) == ("validating", 2) and want >= 1, "another address must answer"
    assert replicas(store) == [(a, "returned"), (b, "returned")]


def test_leases_claimed_for_a_worker_that_left_during_the_tick_are_released(
    store: Store, scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL a detach runs beside the tick: its release cannot see the tick's leases
    # before they are committed. The tick's delivery finds the worker gone and leaves them to
    # the next tick, not to their deadline.
    submit_checksum(store, 3, quorum=1)
    a = worker(store, "1")
    pa = FakePeer(a)
    scheduler.attach(pa)
    scheduler.ready(pa, 3)  # type: ignore[arg-type]
    work = scheduler._work

    def left_meanwhile(*args, **kw):  # type: ignore[no-untyped-def]
        res = work(*args, **kw)
        del scheduler.peers[a]  # its detach ran already and released nothing
        return res

    monkeypatch.setattr(scheduler, "_work", left_meanwhile)
    asyncio.run(scheduler._tick())
    assert replicas(store) == [(a, "leased")] * 3 and not pa.posted
    seen_by_the_tick = []

    def looking(*args, **kw):  # type: ignore[no-untyped-def]
        seen_by_the_tick.append(replicas(store))
        return work(*args, **kw)

    monkeypatch.setattr(scheduler, "_work", looking)
    pb = FakePeer(worker(store, "2"))  # a tick with work of its own
    scheduler.attach(pb)
    scheduler.ready(pb, 1)  # type: ignore[arg-type]
    asyncio.run(scheduler._tick())
    assert replicas(store)[:3] == [(a, "released")] * 3
    assert unit_rows_wanting(store) == 2, "one of the three went to the other worker"
    # Released and committed before the tick's own transaction: inside it, their replicas
    # and units would be locked before those of the tick's results.
    assert seen_by_the_tick == [[(a, "released")] * 3]


def test_a_release_that_failed_at_disconnect_is_done_by_the_next_tick(
    store: Store, scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit_checksum(store, 2, quorum=1)
    a = worker(store, "1")
    pa = FakePeer(a)
    scheduler.attach(pa)
    claim(store, a, 2)  # as this coordinator's "test-coordinator" would have
    scheduler.coordinator_id = "test-coordinator"
    run = scheduler.store.run

    async def deadlocked(fn, *args, **kw):  # type: ignore[no-untyped-def]
        if fn is leases_q.release_worker:
            raise OperationalError("UPDATE replicas ...", {}, sqlite3.OperationalError("locked"))
        return await run(fn, *args, **kw)

    monkeypatch.setattr(scheduler.store, "run", deadlocked)
    asyncio.run(scheduler.detach(pa))  # type: ignore[arg-type]
    assert replicas(store) == [(a, "leased")] * 2
    monkeypatch.setattr(scheduler.store, "run", run)
    asyncio.run(scheduler._tick())
    assert replicas(store) == [(a, "released")] * 2
