"""Blobs kept in the database (``--blobs db``), so that coordinators on several hosts sharing
one PostgreSQL database read each other's uploads. A blob is a row of blob_bodies (its size
and number of parts) and its bytes in parts of PART bytes (blob_parts), written in one
transaction, read a part at a time: no statement moves more than a part.

Its own engine and a small pool: a burst of blob traffic waits for blob connections, not for
the ones the scheduler's ticks use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, delete, exists, insert, select, text

from tabgrid.blobs import BlobStore, check_digest
from tabgrid.settings import MiB
from tabgrid.store.db import make_engine
from tabgrid.store.tables import Blob, BlobBody, BlobPart

PART = 4 * MiB
BODIES = BlobBody.__table__  # type: ignore[attr-defined]
PARTS = BlobPart.__table__  # type: ignore[attr-defined]
ROWS = Blob.__table__  # type: ignore[attr-defined]

# Lands and deletions of one digest, from any coordinator, take turns (see _write, _remove).
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


class DatabaseBlobStore(BlobStore):
    def __init__(self, url: str, tmp_dir: Path) -> None:
        super().__init__(tmp_dir)
        if not url.startswith(("postgresql", "postgres")):
            raise ValueError(
                "blobs in the database are for coordinators sharing a PostgreSQL database; "
                f"on {url.split(':', 1)[0]} (one host) keep them as files"
            )
        self.engine = make_engine(url, pool_size=2, max_overflow=6)

    def close(self) -> None:
        self.engine.dispose()

    def _size(self, digest: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(select(BODIES.c.size).where(BODIES.c.digest == digest)).scalar()

    def _read(self, digest: str) -> bytes | None:
        with self.engine.connect() as conn:
            parts = conn.execute(select(BODIES.c.parts).where(BODIES.c.digest == digest)).scalar()
            if parts is None:
                return None
            q = select(PARTS.c.data).where(PARTS.c.digest == digest).order_by(PARTS.c.seq)
            return b"".join(bytes(p) for p in conn.execute(q).scalars())

    def _chunks(self, digest: str) -> Iterator[bytes]:
        with self.engine.connect() as conn:
            parts = conn.execute(select(BODIES.c.parts).where(BODIES.c.digest == digest)).scalar()
        if parts is None:
            raise FileNotFoundError(f"blob {digest} is not stored")
        return self._parts(digest, parts)

    def _parts(self, digest: str, parts: int) -> Iterator[bytes]:
        # One short statement per part: a slow reader holds no connection between parts.
        for seq in range(parts):
            with self.engine.connect() as conn:
                q = select(PARTS.c.data).where(PARTS.c.digest == digest, PARTS.c.seq == seq)
                data = conn.execute(q).scalar()
            if data is None:
                raise FileNotFoundError(f"blob {digest} was removed while it was read")
            yield bytes(data)

    def _write(self, digest: str, data: bytes | None, tmp: str | None, replace: bool) -> bool:
        with self.engine.begin() as conn:
            _lock(conn, digest)
            had = _stored(conn, digest)
            if had and not replace:
                return False
            if had:
                _drop(conn, digest)
            size = parts = 0
            for piece in _pieces(data, tmp):
                conn.execute(insert(PARTS).values(digest=digest, seq=parts, data=piece))
                size, parts = size + len(piece), parts + 1
            row = {"digest": digest, "size": size, "parts": parts, "stored_at": time.time()}
            conn.execute(insert(BODIES).values(row))
        return not had

    async def delete_freed(self, digest: str) -> None:
        # Off the event loop; the lock and the check in _remove keep a landing upload's bytes.
        if not self.is_landing(check_digest(digest)):
            await asyncio.to_thread(self._remove, digest, True)

    def _remove(self, digest: str, freed: bool) -> None:
        """A freed blob whose row came back meanwhile (an upload on another coordinator
        registered it) stays: its bytes land after its row, under the same lock."""
        with self.engine.begin() as conn:
            _lock(conn, digest)
            if freed and conn.execute(select(exists().where(ROWS.c.digest == digest))).scalar():
                return
            _drop(conn, digest)


def _lock(conn: Connection, digest: str) -> None:
    conn.execute(_LOCK, {"key": f"tabgrid blob {digest}"})


def _stored(conn: Connection, digest: str) -> bool:
    return conn.execute(select(exists().where(BODIES.c.digest == digest))).scalar() is True


def _drop(conn: Connection, digest: str) -> None:
    conn.execute(delete(PARTS).where(PARTS.c.digest == digest))
    conn.execute(delete(BODIES).where(BODIES.c.digest == digest))


def _pieces(data: bytes | None, tmp: str | None) -> Iterator[bytes]:
    if tmp is None:
        view = memoryview(data or b"")
        for i in range(0, len(view), PART):
            yield bytes(view[i : i + PART])
        return
    with open(tmp, "rb") as f:
        while piece := f.read(PART):
            yield piece
