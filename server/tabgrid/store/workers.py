"""Workers: registration, reconnection with their secret, standing."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from sqlalchemy import Connection, delete, exists, insert, select, update

from tabgrid.protocol import Hello
from tabgrid.store.codec import dumps
from tabgrid.store.tables import Replica, Worker

W = Worker.__table__  # type: ignore[attr-defined]
R = Replica.__table__  # type: ignore[attr-defined]


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


def prune_unused(conn: Connection, seen_before: float, connected: list[str]) -> int:
    """Forgets workers that said hello and never held a lease: any anonymous hello makes a
    record, and a record without work has no standing to keep. Returns how many went."""
    never_leased = ~exists().where(R.c.worker_id == W.c.id)
    unused = (
        (W.c.results == 0)
        & ~W.c.banned
        & ~W.c.draining
        & (W.c.last_seen < seen_before)
        & never_leased
    )
    if connected:
        unused &= W.c.id.not_in(connected)
    return conn.execute(delete(W).where(unused)).rowcount
