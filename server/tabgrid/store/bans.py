"""Operator controls over workers: ban (with its consequences), unban, drain."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, or_, select, update

from tabgrid.store.leases import release_worker, replace_replicas
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
    released = release_worker(conn, worker_id, now)
    discarded = _discard_unvalidated(conn, worker_id, now)
    # The worker's row last, as a tick takes it last (its credit): see below.
    conn.execute(update(W).where(W.c.id == worker_id).values(banned=True, ban_reason=reason))
    if discarded:
        announce(conn)
    worker_changed(conn, worker_id)  # the coordinator holding its connection closes it
    return Banned(released, discarded)


def _lock_what_a_ban_changes(conn: Connection, worker_id: str) -> None:
    """Locks (PostgreSQL; SQLite serializes writers anyway) the worker's live replicas, then
    their units, each in id order, before anything else: the order in which a tick recording
    this worker's results takes them, and then the worker's row. A ban that took the worker's
    row first, or one set of units before another set of replicas, could wait for such a tick
    while it waited for the ban: a deadlock, which PostgreSQL ends after a second by failing
    one of them."""
    live = and_(R.c.worker_id == worker_id, or_(R.c.state == "leased", R.c.state == "returned"))
    rows = conn.execute(
        select(R.c.id, R.c.unit_id).where(live).order_by(R.c.id).with_for_update()
    ).all()
    units = sorted({unit for _, unit in rows})
    if units:
        _LOCK_UNITS.all(conn, {"ids": units})


_LOCK_UNITS = One(select(U.c.id).where(in_ids(U.c.id)).order_by(U.c.id).with_for_update())


def _discard_unvalidated(conn: Connection, worker_id: str, now: float) -> int:
    """Results waiting for a quorum stop counting: each unit asks for another replica.
    Validated results stay: a verdict already given is not taken back."""
    waiting = and_(R.c.worker_id == worker_id, R.c.state == "returned")
    reason = "results were discarded (banned worker) and max_replicas is reached"
    return replace_replicas(conn, waiting, "discarded", "results", reason, now)


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
