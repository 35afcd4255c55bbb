"""Cross-coordinator wake-ups on PostgreSQL: NOTIFY when work appears, LISTEN to hear it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import Connection, text

log = logging.getLogger("tabgrid.notify")
CHANNEL = "tabgrid_work"


def announce(conn: Connection) -> None:
    """Tells every coordinator sharing the database that units may be leasable now. Delivered
    when the transaction commits; SQLite has one coordinator, which pokes itself."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"NOTIFY {CHANNEL}"))


def _libpq_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


async def listen(url: str, wake: Callable[[], None], retry_s: float = 1.0) -> None:
    """Calls `wake` on every notification, reconnecting when the connection drops."""
    import psycopg

    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                _libpq_url(url), autocommit=True
            ) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                wake()  # anything announced while we were not listening
                async for _ in conn.notifies():
                    wake()
        except psycopg.OperationalError as e:
            log.warning("lost the PostgreSQL notification channel (%s); retrying", e)
            await asyncio.sleep(retry_s)
