"""The native worker against a small coordinator made here with the websockets server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tabgrid.kernels import checksum, mandelbrot
from tabgrid.protocol import (
    BANNED,
    BlobRef,
    Bye,
    Cancel,
    Error,
    Hello,
    Idle,
    JobSpec,
    Lease,
    LeaseItem,
    Ready,
    Result,
    ResultItem,
    Welcome,
    encoder,
    worker_decoder,
)
from tabgrid.runtime.array import Array
from tabgrid.worker.blobs import BlobCache, BlobError, BlobUnreachable, put_blob
from tabgrid.worker.results import Finished, pack
from tabgrid.worker.session import Identity, Worker, backoff_delay, run_worker, websocket_url

TIMEOUT = 5.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ref_of(array: np.ndarray) -> BlobRef:
    return BlobRef(digest=sha(array.tobytes()), dtype=array.dtype.name, shape=list(array.shape))  # type: ignore[arg-type]


class Peer:
    """The coordinator's side of one worker connection."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    async def send(self, message: Any) -> None:
        await self.ws.send(encoder.encode(message).decode())

    async def recv(self, kind: type | None = None) -> Any:
        message = worker_decoder.decode(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
        if kind is not None:
            assert isinstance(message, kind), f"expected {kind.__name__}, got {message!r}"
        return message

    async def quiet(self, seconds: float) -> None:
        """Nothing arrives for ``seconds``."""
        with pytest.raises(TimeoutError):
            message = await asyncio.wait_for(self.ws.recv(), seconds)
            pytest.fail(f"unexpected message {message!r}")


class FakeCoordinator:
    """Speaks the worker protocol and serves GET /api/v1/blobs/{digest} on one port."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.blob_gets: list[str] = []
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()

    async def __aenter__(self) -> FakeCoordinator:
        self.server = await serve(self._serve, "127.0.0.1", 0, process_request=self._http)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    def add(self, array: np.ndarray, *, held: bool = False) -> BlobRef:
        ref = ref_of(array)
        self.blobs[ref.digest] = array.tobytes()
        if held:
            self.gates[ref.digest] = asyncio.Event()
        return ref

    async def next_peer(self) -> Peer:
        return await asyncio.wait_for(self.peers.get(), TIMEOUT)

    async def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if not request.path.startswith("/api/v1/blobs/"):
            return None
        digest = request.path.rsplit("/", 1)[1]
        self.blob_gets.append(digest)
        if digest in self.gates:
            await self.gates[digest].wait()
        data = self.blobs.get(digest)
        if data is None:
            return connection.respond(404, "no such blob\n")
        headers = Headers([("Content-Length", str(len(data))), ("Connection", "close")])
        return Response(200, "OK", headers, data)

    async def _serve(self, ws: ServerConnection) -> None:
        await self.peers.put(Peer(ws))
        await ws.wait_closed()


def welcome(worker_id: str = "w-1", max_inline: int = 4096) -> Welcome:
    return Welcome(
        worker_id=worker_id, secret="s-" + worker_id, max_inline=max_inline, max_message=1 << 20
    )


def lease(n: int, job: int, params: dict | None = None, inputs: dict | None = None) -> LeaseItem:
    return LeaseItem(
        lease=n,
        job=job,
        unit=100 + n,
        index=n,
        params=params or {},
        inputs=inputs or {},
        deadline=time.time() + 60,
    )


def expected_digest(params: dict, inputs: dict[str, np.ndarray]) -> bytes:
    return checksum.reference(params, inputs)["digest"].tobytes()


def check_output(item: ResultItem, params: dict, inputs: dict[str, np.ndarray]) -> None:
    assert item.error is None, item.error
    assert item.outputs is not None
    out = item.outputs["digest"]
    assert out.dtype == "uint8" and out.shape == [32]
    assert out.data is not None and sha(out.data) == out.digest
    assert out.data == expected_digest(params, inputs)


def start_worker(url: str, stop: asyncio.Event, logs: list[str], **kw: Any) -> asyncio.Task[None]:
    return asyncio.create_task(
        run_worker(
            url, concurrency=2, name="test", stop=stop, log=logs.append, retry_base=0.05, **kw
        )
    )


async def serves_reconnects_and_resends(tmp_path: Path) -> None:
    x = np.arange(6, dtype=np.float32)
    y = np.arange(4, dtype=np.int32)
    z = np.arange(5, dtype=np.uint32)
    stop, logs = asyncio.Event(), []
    state = tmp_path / "worker.json"
    async with FakeCoordinator() as fake:
        ref_x, ref_y, ref_z = fake.add(x), fake.add(y), fake.add(z, held=True)
        task = start_worker(fake.url, stop, logs, state_file=state)
        peer = await fake.next_peer()
        hello = await peer.recv(Hello)
        assert hello.kind == "native" and hello.worker_id is None and hello.name == "test"
        assert "checksum" in hello.kernels
        await peer.send(welcome())
        assert (await peer.recv(Ready)).n == 2

        # Two units finishing in one event-loop turn travel in one Result.
        await peer.send(JobSpec(job=1, kernel="checksum", params={"salt": 3}, inputs={}))
        await peer.send(Lease([lease(10, 1, {"k": 1}), lease(11, 1, {"k": 2})]))
        result = await peer.recv(Result)
        assert [item.lease for item in result.results] == [10, 11]
        check_output(result.results[0], {"salt": 3, "k": 1}, {})
        check_output(result.results[1], {"salt": 3, "k": 2}, {})
        assert (await peer.recv(Ready)).n == 2

        # Job inputs and unit inputs are merged and fetched over HTTP.
        await peer.send(JobSpec(job=2, kernel="checksum", params={"salt": 4}, inputs={"x": ref_x}))
        await peer.send(Lease([lease(12, 2, {"k": 5}, {"y": ref_y})]))
        (item,) = (await peer.recv(Result)).results
        assert item.lease == 12
        check_output(item, {"salt": 4, "k": 5}, {"x": x, "y": y})
        assert (await peer.recv(Ready)).n == 1

        # This unit's input is held back until the connection is gone, so it finishes offline.
        await peer.send(Lease([lease(13, 2, {"k": 6}, {"y": ref_z})]))
        await peer.ws.close()
        fake.gates[ref_z.digest].set()

        again = await fake.next_peer()
        hello = await again.recv(Hello)
        assert (hello.worker_id, hello.secret) == ("w-1", "s-w-1")
        await asyncio.sleep(0.1)
        await again.send(welcome())
        results, ready = [], 0
        while not results or ready < 2:
            message = await again.recv()
            if isinstance(message, Result):
                results.extend(message.results)
            else:
                assert isinstance(message, Ready)
                ready += message.n
        assert ready == 2 and [r.lease for r in results] == [13]
        check_output(results[0], {"salt": 4, "k": 6}, {"x": x, "y": z})

        stop.set()
        assert (await again.recv(Bye)).reason
        await asyncio.wait_for(task, TIMEOUT)
    # The job input was fetched once for both of its units.
    assert fake.blob_gets.count(ref_x.digest) == 1
    assert json.loads(state.read_text()) == {"worker_id": "w-1", "secret": "s-w-1"}
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert any("reconnecting" in line for line in logs)


async def stops_when_banned() -> list[str]:
    stop, logs = asyncio.Event(), []
    async with FakeCoordinator() as fake:
        task = start_worker(fake.url, stop, logs)
        peer = await fake.next_peer()
        await peer.recv(Hello)
        await peer.send(Bye(reason="banned by the operator: wrong answers", code=BANNED))
        await peer.ws.close()
        await asyncio.wait_for(task, TIMEOUT)  # ends by itself: no reconnecting
        assert fake.peers.empty()
    return logs


def test_a_banned_worker_stops_instead_of_reconnecting() -> None:
    logs = asyncio.run(stops_when_banned())
    assert any("banned" in line and "stopping" in line for line in logs)
    assert not any("reconnecting in" in line for line in logs)


def test_worker_serves_reconnects_and_resends_finished_work(tmp_path: Path) -> None:
    asyncio.run(serves_reconnects_and_resends(tmp_path))


async def reports_failures_and_honours_cancel() -> None:
    stop, logs = asyncio.Event(), []
    async with FakeCoordinator() as fake:
        held = fake.add(np.zeros(3, np.float32), held=True)
        corrupt = ref_of(np.ones(4, np.uint8))
        fake.blobs[corrupt.digest] = bytes(4)
        task = start_worker(fake.url, stop, logs)
        peer = await fake.next_peer()
        await peer.recv(Hello)
        await peer.send(welcome())
        assert (await peer.recv(Ready)).n == 2

        await peer.send(JobSpec(job=1, kernel="no-such-kernel", params={}, inputs={}))
        await peer.send(JobSpec(job=2, kernel="checksum", params={}, inputs={}))
        await peer.send(Lease([lease(20, 1), lease(21, 99)]))
        errors = {r.lease: r.error for r in (await peer.recv(Result)).results}
        assert errors[20] is not None and errors[20].startswith("KernelError: ")
        assert "no-such-kernel" in errors[20]
        assert errors[21] is not None and "job 99" in errors[21]
        assert (await peer.recv(Ready)).n == 2

        await peer.send(
            Lease([lease(22, 2, inputs={"c": corrupt}), lease(23, 2, inputs={"h": held})])
        )
        (item,) = (await peer.recv(Result)).results
        assert item.lease == 22 and item.outputs is None
        assert item.error is not None and item.error.startswith("BlobError: ")
        assert (await peer.recv(Ready)).n == 1

        await peer.send(Cancel(leases=[23], reason="job cancelled"))
        assert (await peer.recv(Ready)).n == 1
        fake.gates[held.digest].set()

        for reason in ("no work", "no work", "job paused", "3 wait", "12 wait", "no work"):
            await peer.send(Idle(reason=reason))
        await peer.send(Error(code="bad_message", message="what was that"))
        await peer.quiet(0.2)  # no result for the cancelled unit

        stop.set()
        await peer.recv(Bye)
        await asyncio.wait_for(task, TIMEOUT)
    idle = [line for line in logs if line.startswith("idle: ")]
    assert idle == ["idle: no work", "idle: job paused", "idle: 3 wait"]
    assert any("bad_message" in line and "what was that" in line for line in logs)


def test_worker_reports_failures_and_honours_cancel() -> None:
    asyncio.run(reports_failures_and_honours_cancel())


async def runs_a_gpu_kernel() -> None:
    stop, logs = asyncio.Event(), []
    params = {"x0": -2.0, "y0": -1.0, "x1": 0.5, "y1": 1.0, "width": 40, "height": 24}
    async with FakeCoordinator() as fake:
        # No gpu given: the worker makes its own and the device opens on first use.
        task = start_worker(fake.url, stop, logs)
        peer = await fake.next_peer()
        await peer.recv(Hello)
        await peer.send(welcome(max_inline=1 << 16))
        await peer.recv(Ready)
        await peer.send(JobSpec(job=1, kernel="mandelbrot", params={"max_iter": 40}, inputs={}))
        await peer.send(Lease([lease(1, 1, params)]))
        (item,) = (await peer.recv(Result)).results
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
    assert item.error is None, item.error
    assert item.outputs is not None
    out = item.outputs["iters"]
    assert out.data is not None and sha(out.data) == out.digest and out.shape == [24, 40]
    got = np.frombuffer(out.data, np.uint32).reshape(24, 40)
    expected = mandelbrot.reference(params | {"max_iter": 40}, {})["iters"]
    np.testing.assert_array_equal(got, expected)


def test_worker_runs_a_gpu_kernel_on_its_own_device() -> None:
    asyncio.run(runs_a_gpu_kernel())


async def retries_until_the_coordinator_is_up() -> None:
    stop, logs = asyncio.Event(), []
    async with FakeCoordinator() as fake:
        url = fake.url
    # Nobody listens at first: the worker keeps trying, then finds the coordinator.
    task = start_worker(url, stop, logs)
    await asyncio.sleep(0.3)
    assert not task.done() and sum("reconnecting" in line for line in logs) >= 2
    port = int(url.rsplit(":", 1)[1])
    fake = FakeCoordinator()
    fake.server = await serve(fake._serve, "127.0.0.1", port, process_request=fake._http)
    try:
        peer = await fake.next_peer()
        await peer.recv(Hello)
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
        fake.server.close()
        await fake.server.wait_closed()


def test_worker_retries_until_the_coordinator_is_up() -> None:
    asyncio.run(retries_until_the_coordinator_is_up())


def test_stop_while_disconnected_returns_promptly() -> None:
    async def scenario() -> float:
        stop = asyncio.Event()
        task = start_worker("http://127.0.0.1:9", stop, [])
        await asyncio.sleep(0.1)
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.0


# ---- pieces -------------------------------------------------------------------------------


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0), (1000, 30.0)]:
        delays = [backoff_delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10


def test_websocket_url_follows_the_scheme() -> None:
    assert websocket_url("http://h:8000/") == "ws://h:8000/api/v1/worker"
    assert websocket_url("https://h") == "wss://h/api/v1/worker"
    with pytest.raises(ValueError, match="http"):
        websocket_url("h:8000")


def test_identity_survives_in_its_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "id.json"
    assert Identity.load(path) == Identity()
    Identity("w-9", "s-9").save(path)
    assert Identity.load(path) == Identity("w-9", "s-9")
    path.write_text("{not json")
    assert Identity.load(path) == Identity()


def test_results_pack_under_the_message_bound() -> None:
    outputs = {"y": Array("uint8", (100,), bytes(range(100)))}
    items = [Finished.ok(n, "w", outputs, 1.0).item(max_inline=1000) for n in range(10)]
    one = len(encoder.encode(items[0]))
    packed, too_big = pack(items, max_message=3 * one + 100, max_items=100)
    assert too_big == []
    assert [p.positions for p in packed] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    for p in packed:
        assert len(p.message) <= 3 * one + 100
        decoded = msgspec.json.decode(p.message, type=Result)
        assert [r.lease for r in decoded.results] == p.positions
    packed, too_big = pack(items[:2], max_message=one // 2, max_items=100)
    assert packed == [] and too_big == [0, 1]
    # And under the count a coordinator takes in one message (Welcome.max_results).
    packed, too_big = pack(items[:5], max_message=1 << 20, max_items=2)
    assert [p.positions for p in packed] == [[0, 1], [2, 3], [4]] and too_big == []


def test_outputs_over_max_inline_wait_for_upload() -> None:
    small = Array("uint8", (4,), b"abcd")
    big = Array("float32", (100,), bytes(400))
    done = Finished.ok(1, "w", {"small": small, "big": big}, 2.5)
    assert done.unstored(max_inline=64) == ["big"]
    done.stored.add("big")
    assert done.unstored(max_inline=64) == []
    item = done.item(max_inline=64)
    assert item.outputs is not None
    assert item.outputs["small"].data == b"abcd" and item.outputs["big"].data is None
    assert item.outputs["big"].digest == sha(bytes(400)) and item.outputs["big"].shape == [100]
    done.blobs_only = True
    assert done.unstored(max_inline=64) == ["small"]
    failed = Finished.failed(2, "w", ValueError("x" * 10_000), 1.0)
    assert failed.error is not None and failed.error.startswith("ValueError: xxx")
    assert len(failed.error) <= 4000


async def cache_scenario() -> None:
    async with FakeCoordinator() as fake, httpx.AsyncClient(base_url=fake.url) as http:
        blobs = [fake.add(np.full(10, k, np.int32)) for k in range(3)]  # 40 bytes each
        cache = BlobCache(http, max_bytes=100)
        first = await asyncio.gather(*(cache.get(blobs[0]) for _ in range(3)))
        assert first == [fake.blobs[blobs[0].digest]] * 3
        assert fake.blob_gets == [blobs[0].digest]  # one download for three requests
        await cache.get(blobs[1])
        await cache.get(blobs[0])  # now the most recently used
        await cache.get(blobs[2])
        assert cache.size == 80 and blobs[0].digest in cache and blobs[1].digest not in cache
        array = await cache.array(blobs[2])
        assert array.shape == (10,) and array.dtype == "int32"
        short = BlobRef(digest=blobs[2].digest, dtype="int32", shape=[5])
        with pytest.raises(BlobError, match="larger"):
            await BlobCache(http, 100).get(short)
        missing = ref_of(np.zeros(2, np.uint8))
        with pytest.raises(BlobError, match="404"):
            await cache.get(missing)
        await cache.aclose()


def test_blob_cache_shares_downloads_and_evicts_the_least_recent() -> None:
    asyncio.run(cache_scenario())


class UploadServer:
    """Plain HTTP that stores PUT /api/v1/blobs/{digest}, except digests listed in ``refuse``.

    (The websockets server answers GET only, so uploads go here.)
    """

    def __init__(self) -> None:
        self.puts: list[tuple[str, dict[str, str], bytes]] = []
        self.refuse: set[str] = set()
        self.drop = 0  # requests answered by closing the connection, as a stale keep-alive is

    async def __aenter__(self) -> UploadServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        line, *fields = head.strip().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if self.drop:
            self.drop -= 1
            writer.close()
            return
        self.puts.append((line, headers, body))
        refused = line.split()[1].rsplit("/", 1)[1] in self.refuse
        status = b"400 Bad Request" if refused else b"201 Created"
        writer.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
        )
        await writer.drain()
        writer.close()


async def upload_scenario() -> None:
    async with UploadServer() as store, httpx.AsyncClient(base_url=store.url) as http:
        digest = sha(b"payload")
        await put_blob(http, digest, b"payload", "Worker w-1:s-1")
        store.refuse.add(digest)
        with pytest.raises(BlobError, match="HTTP 400"):
            await put_blob(http, digest, b"payload", "Worker w-1:s-1")
    line, headers, body = store.puts[0]
    assert line == f"PUT /api/v1/blobs/{digest} HTTP/1.1"
    assert headers["authorization"] == "Worker w-1:s-1" and body == b"payload"


def test_put_blob_sends_worker_credentials() -> None:
    asyncio.run(upload_scenario())


async def dropped_connections() -> None:
    async with UploadServer() as store, httpx.AsyncClient(base_url=store.url) as http:
        digest = sha(b"payload")
        store.drop = 2  # closed without an answer twice: the third try lands
        await put_blob(http, digest, b"payload", "Worker w-1:s-1")
        assert len(store.puts) == 1 and store.drop == 0
        store.drop = 3
        with pytest.raises(BlobUnreachable, match=r"RemoteProtocolError.*\(3 tries\)"):
            await put_blob(http, digest, b"payload", "Worker w-1:s-1")
        assert len(store.puts) == 1


def test_a_connection_closed_under_a_blob_request_is_retried_then_reported() -> None:
    asyncio.run(dropped_connections())


async def uploads_large_outputs() -> None:
    stop, logs = asyncio.Event(), []
    async with FakeCoordinator() as fake, UploadServer() as store:
        worker = Worker(store.url, concurrency=1, stop=stop, log=logs.append)
        worker.ws_url = websocket_url(fake.url)
        task = asyncio.create_task(worker.run())
        peer = await fake.next_peer()
        await peer.recv(Hello)
        # A 32-byte digest is over this bound, so it must be stored as a blob first.
        await peer.send(welcome(max_inline=16))
        assert (await peer.recv(Ready)).n == 1
        await peer.send(JobSpec(job=1, kernel="checksum", params={}, inputs={}))
        store.refuse.add(sha(expected_digest({"n": 3}, {})))
        outcomes = []
        for n in range(8):
            await peer.send(Lease([lease(n, 1, {"n": n})]))
            (item,) = (await peer.recv(Result)).results
            assert (await peer.recv(Ready)).n == 1
            outcomes.append(item)
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
    stored = {line.split()[1].rsplit("/", 1)[1]: body for line, _, body in store.puts}
    for n, item in enumerate(outcomes):
        if n == 3:
            # The store refused it: the unit is reported failed instead of held forever.
            assert item.error is not None and item.error.startswith("BlobError: ")
            continue
        assert item.error is None and item.outputs is not None
        out = item.outputs["digest"]
        assert out.data is None and stored[out.digest] == expected_digest({"n": n}, {})
    assert len(store.puts) == 8
    assert all(h["authorization"] == "Worker w-1:s-w-1" for _, h, _ in store.puts)


def test_worker_uploads_outputs_over_max_inline() -> None:
    asyncio.run(uploads_large_outputs())
