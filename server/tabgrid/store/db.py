"""Engines and transactions: SQLite (embedded default, WAL) or PostgreSQL, one code path."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate

from psycopg import errors as pg_errors
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError

from tabgrid.store import tables  # noqa: F401  (registers the tables)


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs and pick the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, pool_size: int = 8, max_overflow: int = 4) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            _private_file(Path(path))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql"):
        return create_engine(
            url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True
        )
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


def _private_file(path: Path) -> None:
    """The database holds token hashes and every result: only its owner may read it. SQLite
    gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # The driver would begin a transaction only at the first write, so a transaction's reads
    # and savepoints would fall outside it: SQLAlchemy says when to begin (_sqlite_begin).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    _wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


WAL_TRIES_S = 30.0


def _wal(cur: sqlite3.Cursor) -> None:
    """WAL + NORMAL survives a killed process (not a power cut); readers run beside the writer.
    The mode stays with the file, but setting it on a new file takes a lock SQLite does not wait
    for (no busy handler): several processes opening one new file at once try again."""
    give_up = time.monotonic() + WAL_TRIES_S
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > give_up:
                raise
            time.sleep(0.01)


# A connection's execution option: its transactions take SQLite's write lock when they begin.
# A deferred transaction that reads and then writes fails at once (SQLITE_BUSY, no waiting) when
# another process wrote in between, as two processes upgrading one file at once would.
BEGIN_IMMEDIATE = {"tabgrid_begin_immediate": True}


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("tabgrid_begin_immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def transient(e: BaseException) -> bool:
    """A database error that says nothing of the work itself: a deadlock or serialization
    victim, a lost connection, SQLite busy. The same work may succeed when tried again."""
    if not isinstance(e, DBAPIError):
        return False
    if e.connection_invalidated:
        return True
    orig = e.orig
    if isinstance(orig, sqlite3.OperationalError):
        return any(word in str(orig) for word in ("locked", "busy"))
    # Deadlocks, serialization failures, shutdowns; but a statement over one of PostgreSQL's
    # limits fails again however often it is tried.
    limit = isinstance(orig, pg_errors.ProgramLimitExceeded)
    return isinstance(orig, pg_errors.OperationalError) and not limit


def ping(conn: Connection) -> None:
    """The cheapest statement that proves the database answers."""
    conn.exec_driver_sql("SELECT 1")


class Db:
    """Runs transactions off the event loop. SQLite gets one thread: its writes serialize anyway."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        threads = 4 if self.is_postgres else 1
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="db")

    def tx[**P, T](
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        with self.engine.begin() as conn:
            return fn(conn, *args, **kw)

    async def run[**P, T](
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self.tx(fn, *args, **kw))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.engine.dispose()
