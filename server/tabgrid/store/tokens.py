"""Bearer tokens with roles, stored hashed: the secret is shown once, at creation."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from tabgrid.store.tables import Token

T = Token.__table__  # type: ignore[attr-defined]
ROLES = ("submitter", "operator")
PREFIX = "tg_"


@dataclass(frozen=True)
class Principal:
    id: int
    name: str
    role: str

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


def _hash(token: str) -> str:
    # Tokens are 32 random bytes: a fast hash is enough, no password stretching needed.
    return hashlib.sha256(token.encode()).hexdigest()


def create(conn: Connection, role: str, name: str, now: float) -> tuple[int, str]:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    token = PREFIX + secrets.token_urlsafe(32)
    tid = conn.execute(
        insert(T).values(name=name, role=role, hash=_hash(token), created_at=now).returning(T.c.id)
    ).scalar_one()
    return tid, token


def lookup(conn: Connection, token: str) -> Principal | None:
    row = conn.execute(
        select(T.c.id, T.c.name, T.c.role).where(T.c.hash == _hash(token), T.c.revoked_at.is_(None))
    ).first()
    return Principal(*row) if row else None


def revoke(conn: Connection, token_id: int, now: float) -> bool:
    res = conn.execute(
        update(T).where(T.c.id == token_id, T.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return res.rowcount > 0


def list_all(conn: Connection) -> list[dict]:
    q = select(T.c.id, T.c.name, T.c.role, T.c.created_at, T.c.revoked_at).order_by(T.c.id)
    return [dict(r) for r in conn.execute(q).mappings()]


def name_of(conn: Connection, token_id: int | None) -> str:
    if token_id is None:
        return ""
    return conn.execute(select(T.c.name).where(T.c.id == token_id)).scalar() or f"token {token_id}"
