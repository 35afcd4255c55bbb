"""Small blobs kept in the database, beside the file store for the rest."""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from tabgrid.store.sql import insert_ignore
from tabgrid.store.tables import Blob

B = Blob.__table__  # type: ignore[attr-defined]


def keep(conn: Connection, blobs: dict[str, bytes], now: float) -> None:
    rows = [{"digest": d, "size": len(b), "created_at": now, "data": b} for d, b in blobs.items()]
    insert_ignore(conn, B, rows)


def read(conn: Connection, digest: str) -> bytes | None:
    return conn.execute(select(B.c.data).where(B.c.digest == digest)).scalar()


def drop_data(conn: Connection, digest: str) -> None:
    """Forgets bytes kept here that no longer hash to their digest; an upload may bring them
    back as a file."""
    conn.execute(update(B).where(B.c.digest == digest).values(data=None))
