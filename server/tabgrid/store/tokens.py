"""Bearer tokens with roles, stored hashed: the secret is shown once, at creation."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Connection, insert, or_, select, update

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


def create(
    conn: Connection, role: str, name: str, now: float, expires_at: float | None = None
) -> tuple[int, str]:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if expires_at is not None and expires_at <= now:
        raise ValueError("a token's expiry must lie in the future")
    token = PREFIX + secrets.token_urlsafe(32)
    values = {"name": name, "role": role, "hash": _hash(token), "created_at": now}
    tid = conn.execute(
        insert(T).values(**values, expires_at=expires_at).returning(T.c.id)
    ).scalar_one()
    return tid, token


def lookup(conn: Connection, token: str, now: float | None = None) -> Principal | None:
    """The holder of a token that is neither revoked nor expired."""
    now = time.time() if now is None else now
    row = conn.execute(
        select(T.c.id, T.c.name, T.c.role).where(
            T.c.hash == _hash(token),
            T.c.revoked_at.is_(None),
            or_(T.c.expires_at.is_(None), T.c.expires_at > now),
        )
    ).first()
    return Principal(*row) if row else None


def expired_at(conn: Connection, token: str, now: float | None = None) -> float | None:
    """When a known, unrevoked token expired (None when it did not): for the 401's message."""
    now = time.time() if now is None else now
    q = select(T.c.expires_at).where(
        T.c.hash == _hash(token), T.c.revoked_at.is_(None), T.c.expires_at <= now
    )
    return conn.execute(q).scalar()


def revoke(conn: Connection, token_id: int, now: float) -> bool:
    res = conn.execute(
        update(T).where(T.c.id == token_id, T.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return res.rowcount > 0


def list_all(conn: Connection) -> list[dict]:
    q = select(T.c.id, T.c.name, T.c.role, T.c.created_at, T.c.revoked_at, T.c.expires_at).order_by(
        T.c.id
    )
    return [dict(r) for r in conn.execute(q).mappings()]


def name_of(conn: Connection, token_id: int | None) -> str:
    if token_id is None:
        return ""
    return conn.execute(select(T.c.name).where(T.c.id == token_id)).scalar() or f"token {token_id}"
