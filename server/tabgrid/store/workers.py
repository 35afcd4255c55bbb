"""Workers: registration, reconnection with their secret, standing."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from sqlalchemy import Connection, insert, select, update

from tabgrid.protocol import Hello
from tabgrid.store.codec import dumps
from tabgrid.store.tables import Worker

W = Worker.__table__  # type: ignore[attr-defined]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def register(conn: Connection, hello: Hello, addr: str, now: float) -> tuple[str, str, bool]:
    """Returns (worker id, secret, banned). A known id with its secret keeps its identity and
    standing; anything else becomes a new worker, so an id alone cannot be taken over."""
    if hello.worker_id and hello.secret:
        row = conn.execute(
            select(W.c.secret_hash, W.c.banned).where(W.c.id == hello.worker_id)
        ).first()
        if row is not None and secrets.compare_digest(row[0], _hash(hello.secret)):
            conn.execute(
                update(W)
                .where(W.c.id == hello.worker_id)
                .values(
                    client_addr=addr,
                    last_seen=now,
                    adapter=dumps(hello.adapter),
                    name=hello.name[:200],
                )
            )
            return hello.worker_id, hello.secret, bool(row[1])
    wid, secret = uuid.uuid4().hex, secrets.token_urlsafe(24)
    conn.execute(
        insert(W).values(
            id=wid,
            secret_hash=_hash(secret),
            kind=hello.kind,
            name=hello.name[:200],
            adapter=dumps(hello.adapter),
            client_addr=addr,
            created_at=now,
            last_seen=now,
        )
    )
    return wid, secret, False


def check_secret(conn: Connection, worker_id: str, secret: str) -> bool:
    row = conn.execute(select(W.c.secret_hash).where(W.c.id == worker_id)).first()
    return row is not None and secrets.compare_digest(row[0], _hash(secret))


def get(conn: Connection, worker_id: str) -> dict | None:
    row = conn.execute(select(W).where(W.c.id == worker_id)).mappings().first()
    return dict(row) if row else None
