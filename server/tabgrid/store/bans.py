"""Operator controls over workers: ban (with its consequences), unban, drain."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, or_, select, update

from tabgrid.store.leases import Ended, finish_jobs, release_worker, replace_replicas
from tabgrid.store.notify import announce, worker_changed
from tabgrid.store.sql import One, in_ids
from tabgrid.store.tables import Replica, Unit, Worker

R = Replica.__table__  # type: ignore[attr-defined]
U = Unit.__table__  # type: ignore[attr-defined]
W = Worker.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Banned:
    released: int  # leases taken back
    discarded: int  # returned results, not yet validated, that no longer count


def exists(conn: Connection, worker_id: str) -> bool:
    return conn.execute(select(W.c.id).where(W.c.id == worker_id)).first() is not None


def ban(conn: Connection, worker_id: str, reason: str, now: float) -> Banned:
    _lock_what_a_ban_changes(conn, worker_id)
    ended: Ended = {}
    released = release_worker(conn, worker_id, now, ended=ended)
    discarded = _discard_unvalidated(conn, worker_id, now, ended)
    # The worker's row, then the jobs' rows, last: as a tick takes them (credit, then jobs).
    conn.execute(update(W).where(W.c.id == worker_id).values(banned=True, ban_reason=reason))
    finish_jobs(conn, ended, now)
    if discarded:
        announce(conn)
    worker_changed(conn, worker_id)  # the coordinator holding its connection closes it
    return Banned(released, discarded)


def _lock_what_a_ban_changes(conn: Connection, worker_id: str) -> None:
    """Locks (PostgreSQL; SQLite serializes writers anyway) what a ban changes in the order a
    tick takes it, before anything else. A tick locks the replicas its results name, then
    their units, then writes verdicts onto the units' stored results, and takes workers' and
    jobs' rows last. So: the worker's replicas a result may still name (leased, or released
    with no result yet: what a reconnecting worker sends again), then the units of all its
    live replicas, then its stored results, each in id order. Taken in another order, a ban
    could wait for a tick that waits for it: a deadlock, which PostgreSQL ends after a second
    by failing one of them. Waiting here on a tick that records one of these results, the ban
    then finds that result stored, and discards it."""
    awaited = and_(
        R.c.worker_id == worker_id,
        or_(R.c.state == "leased", and_(R.c.state == "released", R.c.returned_at.is_(None))),
    )
    conn.execute(select(R.c.id).where(awaited).order_by(R.c.id).with_for_update()).all()
    stored = and_(R.c.worker_id == worker_id, R.c.state == "returned")
    units = sorted(set(conn.execute(select(R.c.unit_id).where(or_(awaited, stored))).scalars()))
    if units:
        _LOCK_UNITS.all(conn, {"ids": units})
    conn.execute(select(R.c.id).where(stored).order_by(R.c.id).with_for_update()).all()


_LOCK_UNITS = One(select(U.c.id).where(in_ids(U.c.id)).order_by(U.c.id).with_for_update())


def _discard_unvalidated(conn: Connection, worker_id: str, now: float, ended: Ended) -> int:
    """Results waiting for a quorum stop counting: each unit asks for another replica.
    Validated results stay: a verdict already given is not taken back."""
    waiting = and_(R.c.worker_id == worker_id, R.c.state == "returned")
    reason = "results were discarded (banned worker) and max_replicas is reached"
    return replace_replicas(conn, waiting, "discarded", "results", reason, now, ended)


# Built once: the scheduler runs it every tick (sql.in_ids).
_STOPPED = One(
    select(W.c.id, W.c.banned, W.c.draining).where(in_ids(W.c.id), or_(W.c.banned, W.c.draining))
)


def stopped(conn: Connection, worker_ids: list[str]) -> dict[str, str]:
    """Which of these workers are banned or draining: the scheduler checks before each claim,
    since the operator may have acted through another coordinator sharing the database."""
    rows = _STOPPED.all(conn, {"ids": worker_ids})
    return {wid: "banned" if b else "draining" for wid, b, _ in rows}


def unban(conn: Connection, worker_id: str) -> None:
    conn.execute(update(W).where(W.c.id == worker_id).values(banned=False, ban_reason=None))


def set_draining(conn: Connection, worker_id: str, draining: bool) -> None:
    conn.execute(update(W).where(W.c.id == worker_id).values(draining=draining))
    worker_changed(conn, worker_id)


def ban_reason(conn: Connection, worker_id: str) -> str | None:
    return conn.execute(select(W.c.ban_reason).where(W.c.id == worker_id)).scalar()


def draining(conn: Connection, worker_id: str) -> bool:
    return bool(conn.execute(select(W.c.draining).where(W.c.id == worker_id)).scalar())
