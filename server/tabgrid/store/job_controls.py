"""Operator controls over jobs: pause, resume, priority."""

from __future__ import annotations

import msgspec
from sqlalchemy import Connection, select, update

from tabgrid.protocol import Policy
from tabgrid.store.notify import job_changed
from tabgrid.store.tables import Job

J = Job.__table__  # type: ignore[attr-defined]

# A paused job keeps its leases out (their results still count) but is leased no more.
TRANSITIONS = {"pause": ("running", "paused"), "resume": ("paused", "running")}


def transition(conn: Connection, job_id: int, action: str, now: float) -> str | None:
    """Applies pause/resume; returns None, or why it cannot (the job's current state)."""
    before, after = TRANSITIONS[action]
    state = conn.execute(select(J.c.state).where(J.c.id == job_id).with_for_update()).scalar()
    if state != before:
        return f"job {job_id} is {state}; only a {before} job can be told to {action}"
    conn.execute(update(J).where(J.c.id == job_id).values(state=after, updated_at=now))
    job_changed(conn, job_id, after)  # resumed: its units may be leased again
    return None


def set_priority(conn: Connection, job_id: int, priority: int, now: float) -> None:
    """The job's priority, in the column the lease claim orders by and in its policy."""
    raw = conn.execute(select(J.c.policy).where(J.c.id == job_id).with_for_update()).scalar_one()
    policy = msgspec.structs.replace(msgspec.json.decode(raw, type=Policy), priority=priority)
    conn.execute(
        update(J)
        .where(J.c.id == job_id)
        .values(priority=priority, policy=msgspec.json.encode(policy).decode(), updated_at=now)
    )
