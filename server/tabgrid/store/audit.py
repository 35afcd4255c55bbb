"""The audit log: every operator action, written in the transaction that makes it."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select

from tabgrid.store.tables import AuditEntry
from tabgrid.store.tokens import Principal

A = AuditEntry.__table__  # type: ignore[attr-defined]
MAX_DETAIL = 1000


def record(
    conn: Connection, who: Principal, action: str, target: str, detail: str, now: float
) -> None:
    conn.execute(
        insert(A).values(
            at=now,
            actor_id=who.id,
            actor=who.name or f"token {who.id}",
            action=action,
            target=target,
            detail=detail[:MAX_DETAIL],
        )
    )


def recent(conn: Connection, limit: int) -> list[dict]:
    q = select(A).order_by(A.c.id.desc()).limit(limit)
    return [dict(r) for r in conn.execute(q).mappings()]
