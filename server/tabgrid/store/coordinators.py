"""Coordinator processes sharing one database: each renews its row; a silent one is gone.

A coordinator's leases carry its id. When it stops renewing (killed, cut off), any other
coordinator releases those leases, so that their units go to workers again; a worker that
reconnects elsewhere resends what it finished, and those results still count
(validator: a released lease's result is taken).
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, Float, and_, delete, insert, literal, select, text, update
from sqlalchemy.sql.elements import ColumnElement

from tabgrid.store.leases import R, replace_replicas
from tabgrid.store.notify import announce
from tabgrid.store.sql import db_clock
from tabgrid.store.tables import Coordinator

C = Coordinator.__table__  # type: ignore[attr-defined]

GONE = "every replica was lost with its coordinator and max_replicas is reached"


# Times: the database's clock (sql.db_clock) unless a test gives one. A coordinator whose host
# clock ran ahead by the ttl would otherwise find every other one silent at each sweep.
Clock = float | None


def _clock(now: Clock) -> ColumnElement[float]:
    return db_clock() if now is None else literal(now, Float)


def register(conn: Connection, coordinator: str, host: str, pid: int, now: Clock = None) -> None:
    at = _clock(now)
    row = {"id": coordinator, "host": host, "pid": pid, "started_at": at, "seen_at": at}
    conn.execute(insert(C).values(row))


def renew(conn: Connection, coordinator: str, now: Clock = None) -> None:
    """Says this coordinator is alive; a row removed meanwhile (it was thought gone) comes
    back, since its own leases were released then and it holds only new ones."""
    seen = update(C).where(C.c.id == coordinator).values(seen_at=_clock(now))
    if conn.execute(seen).rowcount == 0:
        register(conn, coordinator, "", 0, now)


def release_gone(conn: Connection, me: str, now: Clock, ttl: float) -> int:
    """Releases the leases of coordinators not heard from for ``ttl`` seconds and forgets
    them; returns how many leases. Leases with no coordinator (made before coordinators had
    ids) are left to their deadline."""
    gone = [
        c
        for (c,) in conn.execute(
            select(C.c.id)
            .where(C.c.seen_at < _clock(now) - ttl, C.c.id != me)
            .order_by(C.c.id)
            # Another coordinator releasing the same one has it: no one waits on anyone.
            .with_for_update(skip_locked=True)
        )
    ]
    if not gone:
        return 0
    # The literal lets SQLite and PostgreSQL use the partial index on live leases.
    live = and_(text("replicas.state = 'leased'"), R.c.coordinator.in_(gone))
    n = replace_replicas(
        conn, live, "released", "inflight", GONE, time.time() if now is None else now
    )
    conn.execute(delete(C).where(C.c.id.in_(gone)))
    if n:
        announce(conn)
    return n


def forget(conn: Connection, coordinator: str) -> None:
    """A coordinator that stops cleanly says so: its workers' leases were released already."""
    conn.execute(delete(C).where(C.c.id == coordinator))


def forget_others(conn: Connection, me: str) -> None:
    conn.execute(delete(C).where(C.c.id != me))
