"""A ban beside a tick on PostgreSQL, through two connections: a ban and a tick recording the
banned worker's results wait for each other instead of deadlocking (PostgreSQL ends a deadlock
after deadlock_timeout by failing one of the two), and a ban that commits while a tick runs
stops that worker's results in it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tabgrid.blobs import FileBlobStore
from tabgrid.coordinator.scheduler import Scheduler
from tabgrid.coordinator.telemetry import Telemetry
from tabgrid.coordinator.validator import Incoming
from tabgrid.protocol import ResultItem
from tabgrid.settings import Settings
from tabgrid.store import Store, bans, standing
from tabgrid.store import workers as workers_q
from test_hardening_store import submit_checksum
from test_store import claim, out, worker

# Long enough for the ban to reach the lock it waits on; a deadlock is found after 1 s.
BAN_REACHES_ITS_WAIT_S = 0.5


def test_a_ban_waits_for_a_tick_that_records_that_workers_results(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(pg_url)
    try:
        submit_checksum(store, 2, quorum=2)
        banned_one, other = worker(store, "1"), worker(store, "2")
        (mine, _) = claim(store, banned_one, 2)
        claim(store, other, 2)
        sched = Scheduler(store, FileBlobStore(tmp_path / "blobs"), Settings(), Telemetry())

        # The tick stops just before it credits its workers (their rows, last), with the
        # replicas and units of its results locked; the ban starts there.
        credit, holding, ban_done = standing.credit, threading.Event(), threading.Event()
        errors: list[BaseException] = []
        banned: list[bans.Banned] = []

        def credit_after_the_ban_started(conn, tallies, now):  # type: ignore[no-untyped-def]
            holding.set()
            ban_done.wait(BAN_REACHES_ITS_WAIT_S)
            return credit(conn, tallies, now)

        monkeypatch.setattr(standing, "credit", credit_after_the_ban_started)

        def ban() -> None:
            holding.wait(10)
            try:
                banned.append(store.tx(bans.ban, banned_one, "caught", time.time()))
            except BaseException as e:  # noqa: BLE001 (reported below)
                errors.append(e)
            ban_done.set()

        operator = threading.Thread(target=ban)
        operator.start()
        item = ResultItem(lease=mine.lease, outputs=out("answer", data=True))
        done = store.tx(sched._work, [Incoming(banned_one, item)], {}, time.time())
        operator.join(10)
        assert not operator.is_alive()
        assert errors == [], f"the ban failed: {errors}"
        assert banned_one in done.outcome.stats, "the tick recorded and credited the result"
        # The ban came after the tick's commit: it discards the result the tick stored, and
        # takes back the worker's other lease.
        assert banned == [bans.Banned(released=1, discarded=1)]
        row = store.tx(workers_q.get, banned_one)
        assert row is not None and row["banned"]
    finally:
        store.close()


def test_a_ban_committed_after_a_tick_looked_still_stops_its_results(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tick looks at bans first; another coordinator's ban commits right after (releasing
    # the worker's leases); the tick then reads the worker's replicas. A released lease's
    # result is taken, so only a second look, with the replicas locked, refuses it.
    if not store.is_postgres:
        pytest.skip("on SQLite a ban and a tick take turns on the database's one thread")
    submit_checksum(store, 1, quorum=2)
    caught = worker(store, "1")
    (mine,) = claim(store, caught, 1)
    sched = Scheduler(store, FileBlobStore(tmp_path / "blobs"), Settings(), Telemetry())
    looks, stopped = [], bans.stopped

    def ban_right_after_the_first_look(conn, worker_ids):  # type: ignore[no-untyped-def]
        looks.append(worker_ids)
        if len(looks) == 1:
            found = stopped(conn, worker_ids)
            store.tx(bans.ban, caught, "caught", time.time())
            return found
        return stopped(conn, worker_ids)

    monkeypatch.setattr(bans, "stopped", ban_right_after_the_first_look)
    item = ResultItem(lease=mine.lease, outputs=out("answer", data=True))
    done = store.tx(sched._work, [Incoming(caught, item)], {}, time.time())
    assert len(looks) == 2
    assert done.outcome.rejected == [(caught, "this worker is banned: its results do not count")]
    assert caught not in done.outcome.stats
