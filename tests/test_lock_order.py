"""A ban beside a tick on PostgreSQL, through two connections: a ban and a tick recording the
banned worker's results wait for each other instead of deadlocking (PostgreSQL ends a deadlock
after deadlock_timeout by failing one of the two), and a ban that commits while a tick runs
stops that worker's results in it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from tabgrid.blobs import FileBlobStore
from tabgrid.coordinator.batch import Batch
from tabgrid.coordinator.scheduler import Scheduler, _TickResult
from tabgrid.coordinator.telemetry import Telemetry
from tabgrid.coordinator.validator import Incoming
from tabgrid.protocol import ResultItem
from tabgrid.settings import Settings
from tabgrid.store import Store, bans, standing
from tabgrid.store import leases as leases_q
from tabgrid.store import workers as workers_q
from test_hardening_store import submit_checksum
from test_store import claim, out, worker

BAN_REACHES_ITS_WAIT_S = 10.0  # at most; it is watched for (pg_stat_activity)


@dataclass
class BanBeside:
    """A ban run on another connection while a tick, stopped at one of its steps, holds what
    it locked so far. The tick goes on once the ban waits for one of its locks (PostgreSQL
    says so) or ended; ``waited`` says which."""

    store: Store
    url: str
    worker: str
    result: bans.Banned | None = None
    error: BaseException | None = None
    pid: int | None = None
    waited = False

    def during(self, monkeypatch: pytest.MonkeyPatch, owner: object, step: str) -> None:
        real, holding, ended = getattr(owner, step), threading.Event(), threading.Event()

        def stopped_there(*args, **kw):  # type: ignore[no-untyped-def]
            holding.set()
            self.waited = self._waits_for_a_lock(ended)
            return real(*args, **kw)

        def banning(conn):  # type: ignore[no-untyped-def]
            self.pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            return bans.ban(conn, self.worker, "caught", time.time())

        def ban() -> None:
            holding.wait(10)
            try:
                self.result = self.store.tx(banning)
            except BaseException as e:  # noqa: BLE001 (the test reports it)
                self.error = e
            ended.set()

        monkeypatch.setattr(owner, step, stopped_there)
        self._thread = threading.Thread(target=ban)
        self._thread.start()

    def _waits_for_a_lock(self, ended: threading.Event) -> bool:
        give_up = time.monotonic() + BAN_REACHES_ITS_WAIT_S
        with psycopg.connect(self.url, autocommit=True) as watch:
            while not ended.is_set() and time.monotonic() < give_up:
                q = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
                row = watch.execute(q, (self.pid,)).fetchone() if self.pid else None
                if row is not None and row[0] == "Lock":
                    return True
                time.sleep(0.01)
        return False

    def wait(self) -> bans.Banned:
        self._thread.join(10)
        assert not self._thread.is_alive(), "the ban never ended"
        assert self.error is None, f"the ban failed: {self.error!r}"
        assert self.waited, "the ban went through without waiting for the tick's locks"
        assert self.result is not None
        return self.result


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = Store(pg_url)
    yield store
    store.close()


@pytest.fixture
def sched(pg_store: Store, tmp_path: Path) -> Scheduler:
    return Scheduler(pg_store, FileBlobStore(tmp_path / "blobs"), Settings(), Telemetry())


def tick(store: Store, sched: Scheduler, wid: str, lease: int) -> _TickResult:
    item = ResultItem(lease=lease, outputs=out("answer", data=True))
    return store.tx(sched._work, [Incoming(wid, item)], {}, time.time())


def banned_flag(store: Store, wid: str) -> bool:
    row = store.tx(workers_q.get, wid)
    return row is not None and bool(row["banned"])


def replica_state(store: Store, lease: int) -> str:
    q = text("SELECT state FROM replicas WHERE id = :id")
    return store.tx(lambda c: c.execute(q, {"id": lease}).scalar_one())


def test_a_ban_waits_for_a_tick_about_to_credit_that_worker(
    pg_url: str, pg_store: Store, sched: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tick holds the replicas and units of its results, and credits workers last.
    submit_checksum(pg_store, 2, quorum=2)
    caught, other = worker(pg_store, "1"), worker(pg_store, "2")
    (mine, _) = claim(pg_store, caught, 2)
    claim(pg_store, other, 2)
    ban = BanBeside(pg_store, pg_url, caught)
    ban.during(monkeypatch, standing, "credit")
    done = tick(pg_store, sched, caught, mine.lease)
    # After the tick's commit: it discards the result the tick stored and takes back the
    # worker's other lease.
    assert ban.wait() == bans.Banned(released=1, discarded=1)
    assert caught in done.outcome.stats, "the tick recorded and credited the result"
    assert banned_flag(pg_store, caught)


def test_a_ban_waits_for_a_tick_about_to_judge_that_workers_stored_result(
    pg_url: str, pg_store: Store, sched: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tick holds the other worker's replica and the unit, and writes its verdict onto
    # the stored result of the worker being banned next.
    submit_checksum(pg_store, 1, quorum=2)
    caught, other = worker(pg_store, "1"), worker(pg_store, "2")
    (stored,) = claim(pg_store, caught, 1)
    (second,) = claim(pg_store, other, 1)
    tick(pg_store, sched, caught, stored.lease)
    ban = BanBeside(pg_store, pg_url, caught)
    ban.during(monkeypatch, Batch, "flush")
    done = tick(pg_store, sched, other, second.lease)
    assert ban.wait() == bans.Banned(released=0, discarded=0), "validated before the ban"
    assert done.outcome.units_done == 1
    assert replica_state(pg_store, stored.lease) == "valid"


def test_a_ban_waits_for_a_tick_recording_a_released_leases_result(
    pg_url: str, pg_store: Store, sched: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reconnecting worker sends again a result whose lease was released meanwhile; the
    # tick takes it. A ban beside that tick waits for it, then discards the result.
    submit_checksum(pg_store, 1, quorum=2)
    caught = worker(pg_store, "1")
    (mine,) = claim(pg_store, caught, 1)
    pg_store.tx(leases_q.release_worker, caught, time.time())
    ban = BanBeside(pg_store, pg_url, caught)
    ban.during(monkeypatch, Batch, "flush")
    done = tick(pg_store, sched, caught, mine.lease)
    assert caught in done.outcome.stats, "taken: the ban had not committed"
    assert ban.wait() == bans.Banned(released=0, discarded=1)
    assert replica_state(pg_store, mine.lease) == "discarded"


def test_a_ban_committed_after_a_tick_looked_still_stops_its_results(
    pg_store: Store, sched: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tick looks at bans first; another coordinator's ban commits right after (releasing
    # the worker's leases); the tick then reads the worker's replicas. A released lease's
    # result is taken, so only a second look, with the replicas locked, refuses it; nor does
    # the worker get a lease from that tick.
    submit_checksum(pg_store, 2, quorum=2)
    caught = worker(pg_store, "1")
    (mine,) = claim(pg_store, caught, 1)
    looks, stopped = [], bans.stopped

    def ban_right_after_the_first_look(conn, worker_ids):  # type: ignore[no-untyped-def]
        looks.append(worker_ids)
        found = stopped(conn, worker_ids)
        if len(looks) == 1:
            pg_store.tx(bans.ban, caught, "caught", time.time())
        return found

    monkeypatch.setattr(bans, "stopped", ban_right_after_the_first_look)
    item = ResultItem(lease=mine.lease, outputs=out("answer", data=True))
    wanted = {caught: ("10.0.0.1", 2)}
    done = pg_store.tx(sched._work, [Incoming(caught, item)], wanted, time.time())
    assert len(looks) == 2
    assert done.outcome.rejected == [(caught, "this worker is banned: its results do not count")]
    assert caught not in done.outcome.stats
    assert done.stopped == {caught: "banned"} and caught not in done.claims
