"""What happened, told to every coordinator sharing a PostgreSQL database: NOTIFY with a small
JSON payload in the transaction that makes the change, LISTEN to hear it.

The database stays the truth: an event says where to look, and a coordinator that misses one
(its listening connection dropped) acts later, at its next sweep or tick, or at once after
reconnecting, when it looks at everything (RESYNC). Kinds:

- work: units may be leasable (a job submitted or resumed, a lease released, a replica
  wanted): idle workers try again;
- job: a job was cancelled, deleted, failed (its shader does not compile), paused or resumed
  (``job``, ``state``);
- worker: an operator banned, drained or undrained a worker (``worker``): the coordinator
  that holds its connection reads its flags again.

SQLite has one coordinator, which tells its scheduler itself: nothing is sent there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec
from sqlalchemy import Connection, text

log = logging.getLogger("tabgrid.notify")
CHANNEL = "tabgrid_work"
MAX_PAYLOAD = 512  # bytes; PostgreSQL takes up to 8000, an event needs far fewer

Kind = Literal["work", "job", "worker", "resync"]
JobChange = Literal["cancelled", "deleted", "failed", "paused", "running"]


class Event(msgspec.Struct, frozen=True, omit_defaults=True):
    kind: Kind
    job: int | None = None
    worker: str | None = None
    state: JobChange | None = None


WORK = Event("work")
RESYNC = Event("resync")  # not sent: what a listener tells itself after (re)connecting
_decoder = msgspec.json.Decoder(Event)
_SEND = text("SELECT pg_notify(:channel, :payload)")


def send(conn: Connection, event: Event) -> None:
    """Delivered when the transaction commits; the same event twice in one transaction is
    delivered once (PostgreSQL folds duplicates)."""
    if conn.dialect.name != "postgresql":
        return
    payload = msgspec.json.encode(event).decode()
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a notification of {len(payload)} bytes is over {MAX_PAYLOAD}")
    conn.execute(_SEND, {"channel": CHANNEL, "payload": payload})


def announce(conn: Connection) -> None:
    """Units may be leasable now."""
    send(conn, WORK)


def job_changed(conn: Connection, job_id: int, state: JobChange) -> None:
    send(conn, Event("job", job=job_id, state=state))


def worker_changed(conn: Connection, worker_id: str) -> None:
    send(conn, Event("worker", worker=worker_id))


def parse(payload: str) -> Event:
    """The event a payload says; one this version cannot read (an empty payload from an older
    coordinator, a kind added later) is taken as work, which costs at most a look."""
    try:
        event = _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return WORK
    return WORK if event.kind == "resync" else event


def _libpq_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


async def listen(
    url: str, on_event: Callable[[Event], Awaitable[None]], retry_s: float = 1.0
) -> None:
    """Awaits ``on_event`` for every notification, in order, reconnecting when the connection
    drops. After each (re)connection it is given RESYNC first: anything may have been missed."""
    import psycopg

    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                _libpq_url(url), autocommit=True
            ) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                await on_event(RESYNC)
                async for note in conn.notifies():
                    await on_event(parse(note.payload))
        except psycopg.OperationalError as e:
            log.warning("lost the PostgreSQL notification channel (%s); retrying", e)
            await asyncio.sleep(retry_s)
