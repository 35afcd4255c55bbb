"""The native worker: runs units from a coordinator on this machine's GPU through wgpu-py.

One websocket to the coordinator carries control messages; blobs travel over HTTP. The
worker keeps ``concurrency`` units in flight, where a unit is in flight from its lease until
its result has been handed to the connection. It reconnects after any loss, as the same
worker, and sends results it finished while disconnected once it is back. A result sent is
kept until the coordinator acknowledges it (worker/unacked.py) and sent again after a
reconnect, first thing after the welcome.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tabgrid.protocol import (
    BANNED,
    Ack,
    Adapter,
    Bye,
    Cancel,
    Error,
    Hello,
    Idle,
    JobSpec,
    Lease,
    LeaseItem,
    Ready,
    ResultItem,
    Stats,
    Welcome,
    coordinator_decoder,
    encoder,
)
from tabgrid.runtime.array import Array
from tabgrid.runtime.errors import KernelError
from tabgrid.runtime.loader import run_unit
from tabgrid.worker.blobs import BlobCache, BlobError, BlobUnreachable, put_blob, worker_auth
from tabgrid.worker.results import Finished, pack
from tabgrid.worker.unacked import MAX_RESULTS, Unacked, max_results

Log = Callable[[str], None]

WS_PATH = "/api/v1/worker"
# Kernels that never touch the GPU facade, so they run without a working GPU backend.
GPU_FREE_KERNELS = frozenset({"checksum"})
FIRST_MAX_MESSAGE = 1 << 20  # until Welcome states the coordinator's bound
WELCOME_TIMEOUT_S = 30.0
MAX_JOBS = 256
MAX_IDLE_REASONS = 256
STATS_LOG_INTERVAL_S = 30.0
UPLOAD_RETRY_S = 2.0
KEEPALIVE_S = 2.0
CONNECTION_ERRORS = (OSError, TimeoutError, InvalidHandshake, ConnectionClosed)


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Delay before reconnect ``attempt`` (0-based): exponential, capped, half of it random."""
    ceiling = min(cap, base * 2 ** min(attempt, 32))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def websocket_url(url: str) -> str:
    """The worker websocket of a coordinator given by its http(s) base URL."""
    base = url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            return ws + base.removeprefix(http) + WS_PATH
    if base.startswith(("ws://", "wss://")):
        return base + WS_PATH
    raise ValueError(f"coordinator URL must start with http:// or https://, got {url!r}")


@dataclass
class Identity:
    """Who this worker is to the coordinator; kept in a file so a restart is the same worker."""

    worker_id: str | None = None
    secret: str | None = None

    @classmethod
    def load(cls, path: Path | None) -> Identity:
        if path is None or not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
            return cls(str(data["worker_id"]), str(data["secret"]))
        except (OSError, ValueError, KeyError, TypeError):
            return cls()

    def save(self, path: Path | None) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        # The secret lets anyone act as this worker: readable by its owner only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"worker_id": self.worker_id, "secret": self.secret}, f)
        os.replace(tmp, path)


class _NoGpu:
    """Stands in when the GPU backend cannot load, so GPU-free kernels still run."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.adapter: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        raise KernelError(f"no GPU on this worker: {self.reason}")


def _default_gpu(log: Log) -> Any:
    # Constructing NativeGpu requests no device: that happens on a kernel's first GPU call,
    # so units that never touch the GPU do not wait for a slow adapter.
    try:
        from tabgrid.runtime.gpu_native import NativeGpu
    except ImportError as e:
        log(f"GPU backend unavailable ({e}); only {', '.join(sorted(GPU_FREE_KERNELS))} can run")
        return _NoGpu(str(e))
    return NativeGpu()


def _adapter(gpu: Any) -> Adapter:
    info = getattr(gpu, "adapter", None) or {}
    return Adapter(**{key: str(info.get(key, "")) for key in Adapter.__struct_fields__})


def _kernel_names(gpu: Any) -> list[str]:
    names = list(importlib.import_module("tabgrid.kernels").NAMES)
    if isinstance(gpu, _NoGpu):
        return [name for name in names if name in GPU_FREE_KERNELS]
    return names


class Worker:
    """One worker process's connection loop, units in flight and undelivered results."""

    def __init__(
        self,
        url: str,
        *,
        concurrency: int = 2,
        name: str = "",
        gpu: Any = None,
        state_file: Path | str | None = None,
        stop: asyncio.Event | None = None,
        log: Log = print,
        cache_bytes: int = 256 << 20,
        retry_base: float = 0.5,
        retry_cap: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.url = url.rstrip("/")
        self.ws_url = websocket_url(url)
        self.concurrency = concurrency
        self.name = name
        self.log = log
        self.gpu = gpu if gpu is not None else _default_gpu(log)
        self.state_file = Path(state_file) if state_file is not None else None
        self.identity = Identity.load(self.state_file)
        self.stop = stop or asyncio.Event()
        self.cache_bytes = cache_bytes
        self.retry_base, self.retry_cap = retry_base, retry_cap
        self.jobs: OrderedDict[str, JobSpec] = OrderedDict()  # by JobSpec key
        self.running: dict[int, asyncio.Task[None]] = {}
        self.finished: list[Finished] = []
        self.unacked = Unacked()  # sent, not yet acknowledged: not in flight any more
        self.ws: ClientConnection | None = None
        self.welcome: Welcome | None = None
        self.credit = 0  # Ready slots granted on this connection that no lease used yet
        self._uploading: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_again = False
        self._idle_seen: set[str] = set()
        self._stats_logged = 0.0
        self._farewell = False  # the coordinator said Bye on this connection
        self.http: httpx.AsyncClient
        self.blobs: BlobCache

    # ---- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until ``stop`` is set (or the task is cancelled)."""
        # Idle connections are dropped before the coordinator's keep-alive (uvicorn: 5 s) ends
        # them, so that a request rarely meets a connection closing under it.
        limits = httpx.Limits(keepalive_expiry=KEEPALIVE_S)
        async with httpx.AsyncClient(base_url=self.url, timeout=30.0, limits=limits) as http:
            self.http = http
            self.blobs = BlobCache(http, self.cache_bytes, lambda: worker_auth(self.identity))
            try:
                await self._connect_loop()
            finally:
                await self._shutdown()

    async def _connect_loop(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            welcomed = await self._connect_once()
            if self.stop.is_set():
                return
            attempt = 0 if welcomed else attempt + 1
            delay = backoff_delay(attempt, self.retry_base, self.retry_cap)
            self.log(f"reconnecting in {delay:.1f} s")
            with suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)

    async def _connect_once(self) -> bool:
        """One connection, from opening to loss; True when it was welcomed and not sent away.

        A coordinator that says Bye (draining, or done with this worker) is retried with a
        growing delay, like one that cannot be reached.
        """
        self.welcome, self._farewell = None, False
        try:
            ws = await self._until_stop(self._open())
            if ws is None:
                return False
            async with ws:
                await self._session(ws)
            if not self.stop.is_set():
                self.log(f"disconnected: code {ws.close_code} {ws.close_reason or ''}".rstrip())
        except CONNECTION_ERRORS as e:
            if not self.stop.is_set():
                self.log(f"connection to {self.ws_url}: {type(e).__name__}: {e}")
        finally:
            welcomed = self.welcome is not None and not self._farewell
            self.ws, self.welcome, self.credit = None, None, 0
        return welcomed

    async def _open(self) -> ClientConnection:
        return await connect(
            self.ws_url,
            max_size=FIRST_MAX_MESSAGE,
            open_timeout=WELCOME_TIMEOUT_S,
            user_agent_header="tabgrid-worker",
        )

    async def _until_stop(self, coro: Any) -> Any:
        """``coro``'s result, or None when ``stop`` is set first (then ``coro`` is cancelled)."""
        task = asyncio.ensure_future(coro)
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with suppress(asyncio.CancelledError, *CONNECTION_ERRORS):
            result = await task
            if isinstance(result, ClientConnection):
                await result.close()
        return None

    async def _shutdown(self) -> None:
        tasks = [*self.running.values(), *self._tasks]
        if self._flush_task is not None:
            tasks.append(self._flush_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.running.clear()
        await self.blobs.aclose()

    # ---- one connection ----------------------------------------------------------------

    def _hello(self) -> Hello:
        return Hello(
            kind="native",
            worker_id=self.identity.worker_id,
            secret=self.identity.secret,
            name=self.name,
            adapter=_adapter(self.gpu),
            kernels=_kernel_names(self.gpu),
            acks=True,
        )

    async def _session(self, ws: ClientConnection) -> None:
        watcher = asyncio.create_task(self._close_on_stop(ws))
        try:
            await _send(ws, encoder.encode(self._hello()))
            first = self._decode(await asyncio.wait_for(ws.recv(), WELCOME_TIMEOUT_S))
            if not isinstance(first, Welcome):
                if first is not None:
                    self._handle(first)
                self.log("coordinator did not welcome this worker; closing")
                return
            self._welcomed(ws, first)
            await self._resend(ws, first)
            self.ws, self.welcome, self.credit = ws, first, 0
            self._schedule_flush()
            async for raw in ws:
                message = self._decode(raw)
                if message is not None:
                    self._handle(message)
        finally:
            watcher.cancel()

    def _welcomed(self, ws: ClientConnection, welcome: Welcome) -> None:
        if self.identity.worker_id not in (None, welcome.worker_id):
            self.log(f"coordinator gave a new identity {welcome.worker_id}")
            if self.unacked:
                self.log(f"dropped {len(self.unacked)} unacknowledged results of the old identity")
                self.unacked.clear()
        self.identity = Identity(welcome.worker_id, welcome.secret)
        try:
            self.identity.save(self.state_file)
        except OSError as e:
            self.log(f"could not keep the worker identity in {self.state_file}: {e}")
        # Incoming messages are bounded by the coordinator's own limit from now on.
        ws.protocol.max_message_size = welcome.max_message
        # A coordinator that leases more than the default keeps as many results unacknowledged;
        # those kept from one that leased more still wait for their acknowledgement here.
        self.unacked.max_results = max(MAX_RESULTS, max_results(welcome), len(self.unacked))
        self.log(f"connected to {self.url} as worker {welcome.worker_id}")
        if self.finished:
            self.log(f"sending {len(self.finished)} results finished while disconnected")

    async def _close_on_stop(self, ws: ClientConnection) -> None:
        await self.stop.wait()
        for task in list(self.running.values()):
            task.cancel()
        # Send what is finished through the one flush task, so nothing goes out twice.
        self._schedule_flush()
        if self._flush_task is not None:
            await asyncio.shield(self._flush_task)
        with suppress(*CONNECTION_ERRORS):
            await _send(ws, encoder.encode(Bye(reason="worker stopping")))
        await ws.close()

    def _decode(self, raw: str | bytes) -> Any:
        try:
            return coordinator_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self.log(f"ignored a malformed message from the coordinator: {e}")
            return None

    def _handle(self, message: Any) -> None:
        match message:
            case JobSpec():
                key = spec_key(message.key, message.job)
                self.jobs[key] = message
                self.jobs.move_to_end(key)
                while len(self.jobs) > MAX_JOBS:
                    self.jobs.popitem(last=False)
            case Lease():
                self._leased(message.leases)
            case Cancel():
                self._cancel(message.leases)
            case Ack():
                self.unacked.forget(message.leases)
            case Idle():
                self._idle(message.reason)
            case Stats():
                self._stats(message)
            case Error():
                self.log(f"coordinator error {message.code}: {message.message}")
            case Bye():
                self._farewell = True
                self.log(f"coordinator said goodbye: {message.reason or 'no reason given'}")
                if message.code == BANNED:
                    self.log("banned by the coordinator's operator: stopping, not reconnecting")
                    self.stop.set()
            case Welcome():
                self.log("ignored a second welcome on one connection")

    def _idle(self, reason: str) -> None:
        # Reasons carry counts ("3 unit(s) wait for ..."); one that differs only in its numbers
        # is the same reason to the person reading the log.
        key = re.sub(r"\d+", "#", reason)
        if key in self._idle_seen:
            return
        if len(self._idle_seen) >= MAX_IDLE_REASONS:
            self._idle_seen.clear()
        self._idle_seen.add(key)
        self.log(f"idle: {reason}")

    def _stats(self, stats: Stats) -> None:
        now = time.monotonic()
        if now - self._stats_logged < STATS_LOG_INTERVAL_S:
            return
        self._stats_logged = now
        self.log(
            f"standing: {stats.results} results, {stats.valid} valid, {stats.invalid} invalid, "
            f"{stats.errors} errors, {stats.pending} pending, credit {stats.credit:.3g}"
        )

    # ---- units -------------------------------------------------------------------------

    def in_flight(self) -> int:
        return len(self.running) + len(self.finished)

    def _leased(self, leases: list[LeaseItem]) -> None:
        self.credit -= len(leases)
        if self.credit < 0:
            self.log(f"coordinator leased {-self.credit} units more than asked for")
            self.credit = 0
        worker_id = self.identity.worker_id or ""
        for item in leases:
            if item.lease in self.running:
                continue
            task = asyncio.create_task(self._run(item, worker_id))
            self.running[item.lease] = task

    def _cancel(self, leases: list[int]) -> None:
        dropped = set(leases)
        for lease in dropped:
            task = self.running.pop(lease, None)
            if task is not None:
                task.cancel()
        self.finished = [f for f in self.finished if f.lease not in dropped]
        self.unacked.forget(dropped)
        self._schedule_flush()

    async def _run(self, item: LeaseItem, worker_id: str) -> None:
        start = time.perf_counter()
        try:
            outputs, ms = await self._compute(item)
            done = Finished.ok(item.lease, worker_id, outputs, ms)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            done = Finished.failed(item.lease, worker_id, e, _ms_since(start))
        if self.running.pop(item.lease, None) is None:
            return  # cancelled while finishing
        self.finished.append(done)
        self._schedule_flush()

    async def _compute(self, item: LeaseItem) -> tuple[dict[str, Array], float]:
        """The unit's outputs and the milliseconds the kernel took (input fetches aside)."""
        spec = self.jobs.get(spec_key(item.spec, item.job))
        if spec is None:
            raise KernelError(f"no job description for job {item.job} arrived before its lease")
        refs = spec.inputs | item.inputs
        arrays = await asyncio.gather(*(self.blobs.array(ref) for ref in refs.values()))
        inputs = dict(zip(refs, arrays, strict=True))
        start = time.perf_counter()
        outputs = await run_unit(self.gpu, spec.kernel, spec.params | item.params, inputs)
        return outputs, _ms_since(start)

    # ---- delivering results ------------------------------------------------------------

    def _schedule_flush(self) -> None:
        # Results finishing in the same event-loop turn ride one Result message.
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush())
        else:
            self._flush_again = True

    async def _flush(self) -> None:
        self._flush_again = True
        while self._flush_again:
            self._flush_again = False
            with suppress(*CONNECTION_ERRORS):
                await self._send_finished()
                await self._top_up()

    async def _send_finished(self) -> None:
        ws, welcome = self.ws, self.welcome
        if ws is None or welcome is None or not self.finished:
            return
        self._drop_stale()
        sendable: list[Finished] = []
        for f in self.finished:
            if f.unstored(welcome.max_inline):
                self._start_upload(f)
            else:
                sendable.append(f)
        items = [f.item(welcome.max_inline) for f in sendable]
        packed, too_big = pack(items, welcome.max_message, max_results(welcome))
        for position in too_big:
            self._too_big(sendable[position])
        for batch in packed:
            await _send(ws, batch.message)
            # Each batch leaves `finished` once it went out: a lost connection keeps the rest
            # for the next; the batch itself waits in `unacked` for its acknowledgement.
            sent = {id(sendable[p]) for p in batch.positions}
            self.finished = [f for f in self.finished if id(f) not in sent]
            if welcome.acks:
                self._keep([items[p] for p in batch.positions])

    def _keep(self, items: list[ResultItem]) -> None:
        dropped = self.unacked.add(items)
        if dropped:
            self.log(
                f"dropped {len(dropped)} unacknowledged results, the oldest, to stay within "
                f"{self.unacked.max_results} results and {self.unacked.max_bytes} bytes: "
                "if the coordinator lost them, their units are computed again"
            )

    async def _resend(self, ws: ClientConnection, welcome: Welcome) -> None:
        """Results sent on an earlier connection that no Ack named: the coordinator may have
        died before recording them. One it recorded already is acknowledged and ignored."""
        if not self.unacked:
            return
        items = self.unacked.items()
        self.log(f"sending {len(items)} unacknowledged results again")
        packed, too_big = pack(items, welcome.max_message, max_results(welcome))
        if too_big:
            self.unacked.forget(items[p].lease for p in too_big)
            self.log(f"dropped {len(too_big)} unacknowledged results too large for a message")
        for batch in packed:
            await _send(ws, batch.message)
        if not welcome.acks:
            self.unacked.clear()  # a coordinator that sends no Ack: nothing more to wait for

    def _drop_stale(self) -> None:
        current = self.identity.worker_id
        stale = [f for f in self.finished if f.worker_id != current]
        if stale:
            self.log(f"dropped {len(stale)} results leased to a previous worker identity")
            self.finished = [f for f in self.finished if f.worker_id == current]

    def _too_big(self, finished: Finished) -> None:
        if not finished.blobs_only:
            finished.blobs_only = True
            self._start_upload(finished)
            return
        error = ValueError("the result does not fit in one message even with outputs as blobs")
        self._replace(finished, Finished.failed(finished.lease, finished.worker_id, error, 0.0))
        self._schedule_flush()

    def _replace(self, old: Finished, new: Finished) -> None:
        self.finished = [new if f is old else f for f in self.finished]

    async def _top_up(self) -> None:
        if self.ws is None or self.welcome is None or self.stop.is_set():
            return
        want = self.concurrency - self.in_flight() - self.credit
        if want > 0:
            self.credit += want
            await _send(self.ws, encoder.encode(Ready(n=want)))

    def _start_upload(self, finished: Finished) -> None:
        if finished.lease in self._uploading:
            return
        self._uploading.add(finished.lease)
        task = asyncio.create_task(self._upload(finished))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upload(self, finished: Finished) -> None:
        try:
            welcome = self.welcome
            if welcome is None or finished.outputs is None:
                return
            auth = f"Worker {self.identity.worker_id}:{self.identity.secret}"
            for name in finished.unstored(welcome.max_inline):
                data = finished.outputs[name].data
                await put_blob(self.http, finished.digests[name], data, auth)
                finished.stored.add(name)
        except BlobUnreachable as e:
            self.log(f"upload for lease {finished.lease} failed, retrying: {e}")
            await asyncio.sleep(UPLOAD_RETRY_S)
        except BlobError as e:
            # The coordinator refused the blob: report the unit as failed rather than hold it.
            failed = Finished.failed(finished.lease, finished.worker_id, e, finished.elapsed_ms)
            self._replace(finished, failed)
        finally:
            self._uploading.discard(finished.lease)
        self._schedule_flush()


async def _send(ws: ClientConnection, message: bytes) -> None:
    # Control messages are JSON text frames; a str is sent as text by every websockets version.
    await ws.send(message.decode())


def spec_key(key: str, job: int) -> str:
    """Job descriptions are cached by their key, never by the job id alone: an id may name
    another job later. The id stands in only for a coordinator that sends no key."""
    return key or f"job {job}"


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


async def run_worker(url: str, **options: Any) -> None:
    """Run a native worker against the coordinator at ``url`` (http://host:port); ``options``
    are Worker's: ``concurrency`` units in flight, a ``state_file`` that keeps the worker's
    identity across restarts, a ``stop`` event, and so on. Runs until ``stop`` is set or the
    task is cancelled. The GPU defaults to a NativeGpu whose device is requested on the first
    kernel that uses it."""
    await Worker(url, **options).run()
