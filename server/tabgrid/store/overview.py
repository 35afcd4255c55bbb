"""The queries behind the operator's view of the network, run once a second for all viewers."""

from __future__ import annotations

from sqlalchemy import Connection, func, or_, select, text

from tabgrid.store import disagreements, jobs, tokens
from tabgrid.store.codec import loads
from tabgrid.store.tables import Job, Replica, Unit, Worker

J = Job.__table__  # type: ignore[attr-defined]
U = Unit.__table__  # type: ignore[attr-defined]
R = Replica.__table__  # type: ignore[attr-defined]
W = Worker.__table__  # type: ignore[attr-defined]

ACTIVE_JOBS = 100  # running and paused jobs shown
RECENT_JOBS = 20  # finished jobs shown after them
MAX_WORKERS = 20_000  # rows the console can page through
RECENT_S = 3600  # offline workers stay listed this long after last seen
DISAGREEMENTS = 20
_CHUNK = 500


def network(conn: Connection) -> dict:
    leases = conn.execute(
        select(func.count()).select_from(R).where(text("replicas.state = 'leased'"))
    ).scalar_one()
    queue = conn.execute(
        select(func.coalesce(func.sum(U.c.want), 0))
        .select_from(U.join(J, U.c.job_id == J.c.id))
        .where(J.c.state == "running", text("units.want > 0"))  # literal: the partial index
    ).scalar_one()
    states = {"running": 0, "paused": 0} | dict(
        conn.execute(
            select(J.c.state, func.count())
            .where(J.c.state.in_(("running", "paused")))
            .group_by(J.c.state)
        ).all()
    )
    return {"leases": int(leases), "queue": int(queue), "jobs": states}


def job_rows(conn: Connection, now: float) -> list[dict]:
    active = conn.execute(
        select(J)
        .where(J.c.state.in_(("running", "paused")))
        .order_by(J.c.priority.desc(), J.c.id)
        .limit(ACTIVE_JOBS)
    ).mappings()
    finished = conn.execute(
        select(J)
        .where(J.c.state.in_(jobs.FINAL_JOB_STATES))
        .order_by(J.c.id.desc())
        .limit(RECENT_JOBS)
    ).mappings()
    names: dict[int | None, str] = {}
    out = []
    for job in [*active, *finished]:
        owner = job["owner_id"]
        if owner not in names:
            names[owner] = tokens.name_of(conn, owner)
        out.append(jobs.status_of(conn, dict(job), names[owner], now))
    return out


_WORKER_COLS = (
    W.c.id,
    W.c.kind,
    W.c.name,
    W.c.adapter,
    W.c.client_addr,
    W.c.last_seen,
    W.c.valid,
    W.c.invalid,
    W.c.errors,
    W.c.consecutive_valid,
    W.c.checks_passed,
    W.c.checks_failed,
    W.c.credit,
    W.c.banned,
    W.c.ban_reason,
    W.c.draining,
)


def worker_rows(conn: Connection, connected: list[str], now: float) -> list[dict]:
    """Connected workers, plus those seen in the last hour or banned, at most MAX_WORKERS."""
    rows = {}
    for i in range(0, len(connected), _CHUNK):
        q = select(*_WORKER_COLS).where(W.c.id.in_(connected[i : i + _CHUNK]))
        rows.update({r["id"]: dict(r) for r in conn.execute(q).mappings()})
    room = MAX_WORKERS - len(rows)
    if room > 0:
        q = (
            select(*_WORKER_COLS)
            .where(or_(W.c.last_seen > now - RECENT_S, W.c.banned))
            .order_by(W.c.last_seen.desc())
            .limit(room)
        )
        for r in conn.execute(q).mappings():
            rows.setdefault(r["id"], dict(r))
    for r in rows.values():
        r["adapter"] = loads(r["adapter"] or "{}")
    return list(rows.values())


def recent_disagreements(conn: Connection) -> list[dict]:
    return disagreements.recent(conn, DISAGREEMENTS)
