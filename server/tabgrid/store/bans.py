"""Operator controls over workers: ban (with its consequences), unban, drain."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, select, update

from tabgrid.store.leases import job_policies, load_units, release_worker, save_units
from tabgrid.store.notify import announce
from tabgrid.store.tables import Replica, Worker

R = Replica.__table__  # type: ignore[attr-defined]
W = Worker.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Banned:
    released: int  # leases taken back
    discarded: int  # returned results, not yet validated, that no longer count


def exists(conn: Connection, worker_id: str) -> bool:
    return conn.execute(select(W.c.id).where(W.c.id == worker_id)).first() is not None


def ban(conn: Connection, worker_id: str, reason: str, now: float) -> Banned:
    conn.execute(update(W).where(W.c.id == worker_id).values(banned=True, ban_reason=reason))
    released = release_worker(conn, worker_id, now)
    discarded = _discard_unvalidated(conn, worker_id, now)
    if discarded:
        announce(conn)
    return Banned(released, discarded)


def _discard_unvalidated(conn: Connection, worker_id: str, now: float) -> int:
    """Results waiting for a quorum stop counting: each unit asks for another replica.
    Validated results stay: a verdict already given is not taken back."""
    # Replica rows first, then units, each in id order: the result path's lock order.
    q = (
        select(R.c.id, R.c.unit_id)
        .where(and_(R.c.worker_id == worker_id, R.c.state == "returned"))
        .order_by(R.c.id)
        .with_for_update()
    )
    rows = conn.execute(q).all()
    if not rows:
        return 0
    conn.execute(update(R).where(R.c.id.in_([r[0] for r in rows])).values(state="discarded"))
    per_unit: dict[int, int] = {}
    for _, uid in rows:
        per_unit[uid] = per_unit.get(uid, 0) + 1
    units = load_units(conn, list(per_unit))
    policies = job_policies(conn, {u.job_id for u in units})
    for u in units:
        if u.final:
            continue
        u.results = max(0, u.results - per_unit[u.id])
        for _ in range(per_unit[u.id]):
            u.replace_replica(policies[u.job_id])
        u.fail_if_stuck("results were discarded (banned worker) and max_replicas is reached")
        u.derive_state()
    save_units(conn, units, now)
    return len(rows)


def unban(conn: Connection, worker_id: str) -> None:
    conn.execute(update(W).where(W.c.id == worker_id).values(banned=False, ban_reason=None))


def set_draining(conn: Connection, worker_id: str, draining: bool) -> None:
    conn.execute(update(W).where(W.c.id == worker_id).values(draining=draining))


def draining(conn: Connection, worker_id: str) -> bool:
    return bool(conn.execute(select(W.c.draining).where(W.c.id == worker_id)).scalar())
