"""The feed of units whose results disagreed: written by the validator, read by the console."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select

from tabgrid.store.codec import dumps, loads
from tabgrid.store.tables import Disagreement

D = Disagreement.__table__  # type: ignore[attr-defined]
MAX_SUMMARY = 1000


def record(conn: Connection, rows: list[dict]) -> None:
    """rows: {at, job_id, unit_id, idx, kernel, summary, replicas: list[dict]}."""
    if rows:
        conn.execute(
            insert(D),
            [
                r | {"summary": r["summary"][:MAX_SUMMARY], "replicas": dumps(r["replicas"])}
                for r in rows
            ],
        )


def recent(conn: Connection, limit: int) -> list[dict]:
    q = select(D).order_by(D.c.id.desc()).limit(limit)
    return [dict(r) | {"replicas": loads(r["replicas"])} for r in conn.execute(q).mappings()]
