"""Coordinators sharing a database: each one's leases go when it disconnects a worker or
falls silent, never another's (both backends)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text

from tabgrid.blobs import FileBlobStore
from tabgrid.coordinator.scheduler import Scheduler
from tabgrid.coordinator.telemetry import Telemetry
from tabgrid.settings import Settings
from tabgrid.store import Store
from tabgrid.store import coordinators as coordinators_q
from tabgrid.store import leases as leases_q
from test_store import status, submit, worker


def alive(store: Store, now: float, ttl: float) -> list[str]:
    seen = coordinators_q.C.c.seen_at
    q = select(coordinators_q.C.c.id).where(seen >= now - ttl).order_by(coordinators_q.C.c.id)
    return list(store.tx(lambda c: c.execute(q).scalars().all()))


def lease(store: Store, wid: str, n: int, coordinator: str) -> list[leases_q.Claimed]:
    taker = leases_q.Taker(wid, wid, coordinator)
    return store.tx(leases_q.claim, taker, n, True, time.time())


def test_a_disconnect_releases_only_the_leases_that_coordinator_gave(store: Store) -> None:
    job = submit(store, 4, quorum=1)
    a = worker(store, "1")
    lease(store, a, 1, "A")
    lease(store, a, 2, "B")  # the worker reconnected to B before A saw it go
    assert store.tx(leases_q.release_worker, a, time.time(), "A") == 1
    assert status(store, job).counts.running == 2
    assert store.tx(leases_q.release_worker, a, time.time()) == 2  # a ban: every one
    assert status(store, job).counts.running == 0


def test_a_silent_coordinators_leases_are_released_and_it_is_forgotten(store: Store) -> None:
    job = submit(store, 3, quorum=1)
    a, b = worker(store, "1"), worker(store, "2")
    now = time.time()
    store.tx(coordinators_q.register, "A", "host-a", 1, now - 30)
    store.tx(coordinators_q.register, "B", "host-b", 2, now - 30)
    lease(store, a, 2, "A")
    lease(store, b, 1, "B")
    store.tx(coordinators_q.renew, "B", now)
    assert store.tx(coordinators_q.release_gone, "B", now, 10.0) == 2
    assert alive(store, now, 10.0) == ["B"]
    counts = status(store, job).counts
    assert (counts.running, counts.pending) == (1, 2)  # A's units wait for workers again
    assert store.tx(coordinators_q.release_gone, "B", now, 10.0) == 0
    # Nobody releases the leases of a live coordinator, or its own.
    store.tx(coordinators_q.register, "C", "host-c", 3, now)
    assert store.tx(coordinators_q.release_gone, "C", now + 5, 10.0) == 0
    assert store.tx(coordinators_q.release_gone, "B", now + 30, 10.0) == 0  # C is silent, leaseless


def test_a_coordinator_thought_gone_comes_back_when_it_renews(store: Store) -> None:
    now = time.time()
    store.tx(coordinators_q.register, "A", "", 0, now - 30)
    store.tx(coordinators_q.register, "B", "", 0, now)
    store.tx(coordinators_q.release_gone, "B", now, 10.0)
    store.tx(coordinators_q.renew, "A", now + 1)
    assert alive(store, now + 1, 10.0) == ["A", "B"]


def leased(store: Store) -> int:
    q = text("SELECT count(*) FROM replicas WHERE state = 'leased'")
    return store.tx(lambda c: c.execute(q).scalar_one())


def beside_another(store: Store, tmp_path: Path, seen: float | None = None) -> Scheduler:
    """A started coordinator on PostgreSQL, and another one, "other" (last seen at ``seen``;
    by default now, by the database's clock), that leased both units of a job."""
    if not store.is_postgres:
        pytest.skip("on SQLite one coordinator runs alone: nobody releases anybody")
    sched = Scheduler(store, FileBlobStore(tmp_path), Settings(), Telemetry())
    asyncio.run(sched.start())
    submit(store, 2, quorum=1)
    store.tx(coordinators_q.register, "other", "host", 1, seen)
    lease(store, worker(store, "1"), 2, "other")
    return sched


def test_a_coordinator_that_was_stalled_itself_releases_nobody_that_sweep(
    store: Store, tmp_path: Path
) -> None:
    # After the database stalled for longer than the ttl, every coordinator looks silent to
    # the first that sweeps; the one that could not renew itself meanwhile knows why.
    now = time.time()
    sched = beside_another(store, tmp_path, seen=now - 60)
    sched._renewed = now - 60  # its own last renewal, before the stall
    asyncio.run(sched._coordinators())
    assert leased(store) == 2, "silent like this one: the database stalled, not they"
    assert set(alive(store, time.time(), 10.0)) == {sched.coordinator_id}
    asyncio.run(sched._coordinators())  # a sweep later, renewed on time: "other" is gone
    assert leased(store) == 0
    assert alive(store, time.time(), 10.0) == [sched.coordinator_id]


def test_a_sweep_that_failed_does_not_stop_the_sweeper(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deadlock victim or a lost connection in one sweep: the coordinator sweeps again
    # (its supervisor would stop the whole coordinator if the sweeper ended).
    sched = Scheduler(store, FileBlobStore(tmp_path), Settings(sweep_interval_s=0.01), Telemetry())
    calls: list[int] = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("deadlock detected")

    monkeypatch.setattr(sched, "_sweep_once", flaky)

    async def watch() -> None:
        task = asyncio.ensure_future(sched.sweep())
        while len(calls) < 3 and not task.done():
            await asyncio.sleep(0.01)
        assert not task.done(), "the sweeper ended"
        task.cancel()

    asyncio.run(asyncio.wait_for(watch(), 10))
    assert len(calls) >= 3


def test_a_coordinator_is_seen_by_the_databases_clock(store: Store) -> None:
    store.tx(coordinators_q.register, "A", "host-a", 1)
    q = select(coordinators_q.C.c.seen_at).where(coordinators_q.C.c.id == "A")
    first = store.tx(lambda c: c.execute(q).scalar_one())
    assert abs(first - time.time()) < 5, "seconds since the epoch, as the hosts count them"
    time.sleep(0.05)
    store.tx(coordinators_q.renew, "A")
    assert store.tx(lambda c: c.execute(q).scalar_one()) > first


def test_a_coordinator_whose_clock_runs_ahead_finds_the_others_alive(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Judged by its own clock, a minute ahead, every other coordinator would look silent at
    # each of its sweeps, and their workers' leases would be released again and again.
    sched = beside_another(store, tmp_path)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 60)
    sched._renewed = time.time()
    asyncio.run(sched._coordinators())
    assert leased(store) == 2, "alive by the database's clock"
    monkeypatch.undo()
    # Silent for a minute by the database's clock: gone.
    stale = text("UPDATE coordinators SET seen_at = seen_at - 60 WHERE id = 'other'")
    store.tx(lambda c: c.execute(stale))
    sched._renewed = time.time()
    asyncio.run(sched._coordinators())
    assert leased(store) == 0
