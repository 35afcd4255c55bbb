"""The feed of units whose results disagreed: written by the validator, read by the console."""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, insert, select

from tabgrid.store.codec import dumps, loads
from tabgrid.store.tables import Disagreement

D = Disagreement.__table__  # type: ignore[attr-defined]
MAX_SUMMARY = 1000
KEEP = 1000  # rows kept: the feed shows the newest
PRUNE_EVERY = 100


def record(conn: Connection, rows: list[dict]) -> None:
    """rows: {at, job_id, unit_id, idx, kernel, summary, replicas: list[dict]}."""
    if not rows:
        return
    values = [
        r | {"summary": r["summary"][:MAX_SUMMARY], "replicas": dumps(r["replicas"])} for r in rows
    ]
    conn.execute(insert(D), values)
    # Older rows go a batch at a time, so the table stays small however long it runs.
    newest = conn.execute(select(func.max(D.c.id))).scalar_one()
    if newest % PRUNE_EVERY < len(rows):
        conn.execute(delete(D).where(D.c.id <= newest - KEEP))


def recent(conn: Connection, limit: int) -> list[dict]:
    q = select(D).order_by(D.c.id.desc()).limit(limit)
    return [dict(r) | {"replicas": loads(r["replicas"])} for r in conn.execute(q).mappings()]
