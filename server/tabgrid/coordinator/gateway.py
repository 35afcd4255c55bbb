"""The websocket endpoint workers connect to.

A connection is a small state machine: HELLO (only a hello is accepted) -> SERVING -> CLOSED.
Leases are released in a `finally`, whatever ends the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time

import msgspec
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tabgrid.protocol import (
    BANNED,
    PROTOCOL_VERSION,
    Ack,
    Bye,
    CoordinatorMessage,
    Error,
    Hello,
    Hold,
    Ready,
    Result,
    Welcome,
    encoder,
    worker_decoder,
)
from tabgrid.store import bans
from tabgrid.store import workers as workers_q

log = logging.getLogger("tabgrid.coordinator.gateway")

OUTBOX = 1024  # messages queued for one worker before it counts as stuck


class State(enum.Enum):
    HELLO = "hello pending"
    SERVING = "serving"
    CLOSED = "closed"


class ProtocolViolation(Exception):
    def __init__(self, reason: str, code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class WorkerConnection:
    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.services = ws.app.state.services
        self.limits = self.services.settings.limits
        self.scheduler = self.services.scheduler
        self.addr = ws.client.host if ws.client else ""
        self.state = State.HELLO
        self.worker_id = ""
        self.connected_at = time.time()
        self.draining = False
        self.acks = False  # the worker asked for Ack messages (Hello.acks)
        self.credit = 0
        self.leases: set[int] = set()
        self.jobs_sent: set[str] = set()
        self.idle_reason: str | None = None
        self.bad = 0
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue(OUTBOX)

    # ---- outgoing -------------------------------------------------------------------------

    def post(self, msg: CoordinatorMessage) -> None:
        """Queues a message; a worker that stops reading is cut off rather than waited on."""
        if self.state is State.CLOSED:
            return
        try:
            self._outbox.put_nowait(encoder.encode(msg))
        except asyncio.QueueFull:
            log.warning("worker %s does not read its messages; closing", self.worker_id[:8])
            self.state = State.CLOSED
            self._closer = asyncio.ensure_future(self.ws.close(1008, "not reading messages"))

    async def _writer(self) -> None:
        while (data := await self._outbox.get()) is not None:
            await self.ws.send_text(data.decode())

    # ---- incoming -------------------------------------------------------------------------

    async def serve(self) -> None:
        writer = self._writer_task = asyncio.create_task(self._writer())
        try:
            await self._read_loop()
        except ProtocolViolation as e:
            await self._close(1008, e.reason, e.code)
        except WebSocketDisconnect:
            pass
        finally:
            self.state = State.CLOSED
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            if self.worker_id:
                await self.scheduler.detach(self)

    async def _read_loop(self) -> None:
        while self.state is not State.CLOSED:
            msg = await self._receive()
            if msg["type"] == "websocket.disconnect":
                return
            raw = msg.get("text")
            if raw is None:
                raw = msg.get("bytes") or b""
            if len(raw) > self.limits.max_message:
                raise ProtocolViolation(
                    f"message of {len(raw)} bytes is over {self.limits.max_message}"
                )
            try:
                decoded = worker_decoder.decode(raw)
            except msgspec.DecodeError as e:
                self._complain("bad_message", f"could not decode the message: {e}")
                continue
            await self._handle(decoded)

    async def _receive(self) -> dict:
        """The next frame; before the hello only until the hello timeout, so that silent
        connections cannot pile up."""
        if self.state is not State.HELLO:
            return await self.ws.receive()
        timeout = self.limits.hello_timeout_s
        left = self.connected_at + timeout - time.time()
        try:
            return await asyncio.wait_for(self.ws.receive(), max(0.0, left))
        except TimeoutError:
            raise ProtocolViolation(f"no hello within {timeout:g} s of connecting") from None

    def _complain(self, code: str, message: str) -> None:
        self.bad += 1
        self.post(Error(code=code, message=message))
        if self.bad >= self.limits.max_bad_messages:
            raise ProtocolViolation(f"{self.bad} bad messages; last: {message}"[:120])

    async def _handle(self, msg: object) -> None:
        match (self.state, msg):
            case (State.HELLO, Hello()):
                await self._hello(msg)
            case (State.HELLO, _):
                self._complain(
                    "hello_first", f"expected hello first, got {type(msg).__name__.lower()}"
                )
            case (State.SERVING, Ready(n=n)):
                self.scheduler.ready(self, n)
            case (State.SERVING, Hold()):
                self.scheduler.hold(self)
            case (State.SERVING, Result(results=items)):
                if len(items) > self.limits.max_results:
                    if self.acks:  # refused for good: sending them again cannot help
                        self.post(Ack(leases=[item.lease for item in items]))
                    self._complain("too_many", f"{len(items)} results in one message")
                    return
                self.scheduler.results(self, items)
            case (State.SERVING, Bye()):
                self.state = State.CLOSED
            case (State.SERVING, Hello()):
                self._complain("hello_again", "already said hello on this connection")

    async def _hello(self, hello: Hello) -> None:
        if hello.protocol != PROTOCOL_VERSION:
            raise ProtocolViolation(
                f"protocol {hello.protocol} is not supported; "
                f"this coordinator speaks {PROTOCOL_VERSION}"
            )
        store = self.services.store
        wid, secret, banned = await store.run(workers_q.register, hello, self.addr, time.time())
        if banned:
            raise ProtocolViolation("this worker is banned by the operator", BANNED)
        self.draining = await store.run(bans.draining, wid)
        self.worker_id = wid
        self.acks = hello.acks
        self.state = State.SERVING
        self.post(
            Welcome(
                worker_id=wid,
                secret=secret,
                max_inline=self.limits.max_inline,
                max_message=self.limits.max_message,
                acks=True,
                max_results=self.limits.max_results,
            )
        )
        self.scheduler.attach(self)
        log.info("worker %s (%s, %s) connected from %s", wid[:8], hello.kind, hello.name, self.addr)

    def close(self, reason: str, code: str = "") -> None:
        """Ends the connection from the coordinator's side (an operator's ban)."""
        if self.state is not State.CLOSED:
            self._closer = asyncio.ensure_future(self._close(1008, reason, code))

    async def _close(self, status: int, reason: str, code: str = "") -> None:
        self.post(Bye(reason=reason, code=code))
        self.state = State.CLOSED
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer_task, 1.0)  # flush the bye
            await self.ws.close(code=status, reason=reason[:120])


async def worker_endpoint(ws: WebSocket) -> None:
    await ws.accept()
    await WorkerConnection(ws).serve()


def routes() -> list[WebSocketRoute]:
    return [WebSocketRoute("/api/v1/worker", worker_endpoint)]
