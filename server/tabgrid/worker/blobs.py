"""Blobs for the native worker: fetched inputs in a byte-bounded cache, uploaded outputs."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from math import prod
from typing import Protocol

import httpx

from tabgrid.protocol import BlobRef
from tabgrid.runtime.array import ITEMSIZE, Array

CHUNK = 1 << 16


class BlobError(Exception):
    """A blob could not be fetched or stored, or its bytes do not match its reference."""


class BlobUnreachable(BlobError):
    """The coordinator could not be reached; trying again later may work."""


def expected_size(ref: BlobRef) -> int:
    return prod(ref.shape) * ITEMSIZE[ref.dtype]


def blob_path(digest: str) -> str:
    return f"/api/v1/blobs/{digest}"


async def _read_bounded(response: httpx.Response, limit: int, digest: str) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes(CHUNK):
        size += len(chunk)
        if size > limit:
            raise BlobError(f"blob {digest} is larger than the {limit} bytes its shape needs")
        parts.append(chunk)
    return b"".join(parts)


class Identity(Protocol):
    @property
    def worker_id(self) -> str | None: ...

    @property
    def secret(self) -> str | None: ...


def worker_auth(identity: Identity) -> str | None:
    """The Authorization header value for a worker's blob requests: the coordinator serves a
    worker only the inputs of the units it holds leases on, and stores only their outputs."""
    if not identity.worker_id or not identity.secret:
        return None
    return f"Worker {identity.worker_id}:{identity.secret}"


# A GET or PUT of a content-addressed blob is idempotent: a connection the coordinator closed
# as this worker reused it (keep-alive expiry, a restart) costs a retry, not the unit.
TRIES = 3
RETRY_S = 0.25


async def _retrying[T](what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    for n in range(1, TRIES + 1):
        try:
            return await attempt()
        except httpx.TransportError as e:
            if n == TRIES:
                raise BlobUnreachable(f"{what}: {type(e).__name__}: {e} ({n} tries)") from e
            await asyncio.sleep(RETRY_S * n)
    raise AssertionError("unreachable")


async def fetch_blob(http: httpx.AsyncClient, ref: BlobRef, auth: str | None = None) -> bytes:
    """The blob's bytes, checked against its size and sha256; ``auth`` is the worker's
    credentials (worker_auth)."""
    size = expected_size(ref)
    headers = {"authorization": auth} if auth else {}

    async def attempt() -> bytes:
        async with http.stream("GET", blob_path(ref.digest), headers=headers) as response:
            if response.status_code != 200:
                raise BlobError(f"GET blob {ref.digest}: HTTP {response.status_code}")
            return await _read_bounded(response, size, ref.digest)

    data = await _retrying(f"GET blob {ref.digest}", attempt)
    if len(data) != size:
        raise BlobError(f"blob {ref.digest} has {len(data)} bytes, its shape needs {size}")
    actual = hashlib.sha256(data).hexdigest()
    if actual != ref.digest:
        raise BlobError(f"blob {ref.digest} arrived with sha256 {actual}")
    return data


async def put_blob(http: httpx.AsyncClient, digest: str, data: bytes, auth: str) -> None:
    """Store bytes under their digest with the worker's credentials."""
    headers = {"authorization": auth, "content-type": "application/octet-stream"}

    async def attempt() -> httpx.Response:
        return await http.put(blob_path(digest), content=data, headers=headers)

    response = await _retrying(f"PUT blob {digest}", attempt)
    if response.status_code not in (200, 201):
        raise BlobError(f"PUT blob {digest}: HTTP {response.status_code}: {response.text[:300]}")


class BlobCache:
    """Input blobs by digest, least recently used first out, at most ``max_bytes`` in all.

    Concurrent requests for one digest share a single download, made with the credentials
    ``auth`` returns at the time (the worker's identity may change when it reconnects).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        max_bytes: int,
        auth: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.http = http
        self.max_bytes = max_bytes
        self.auth = auth
        self.size = 0
        self._blobs: OrderedDict[str, bytes] = OrderedDict()
        self._pending: dict[str, asyncio.Task[bytes]] = {}

    def __contains__(self, digest: str) -> bool:
        return digest in self._blobs

    async def get(self, ref: BlobRef) -> bytes:
        data = self._blobs.get(ref.digest)
        if data is not None:
            self._blobs.move_to_end(ref.digest)
            return data
        task = self._pending.get(ref.digest)
        if task is None:
            task = asyncio.create_task(fetch_blob(self.http, ref, self.auth()))
            self._pending[ref.digest] = task
            task.add_done_callback(lambda t, digest=ref.digest: self._landed(digest, t))
        # A cancelled unit must not cancel a download other units are waiting for.
        return await asyncio.shield(task)

    async def array(self, ref: BlobRef) -> Array:
        # The digest travels with the bytes it was checked against: kernels key resident
        # GPU buffers by it.
        return Array(ref.dtype, tuple(ref.shape), await self.get(ref), ref.digest)

    def _landed(self, digest: str, task: asyncio.Task[bytes]) -> None:
        del self._pending[digest]
        if task.cancelled() or task.exception() is not None:
            return
        self.put(digest, task.result())

    def put(self, digest: str, data: bytes) -> None:
        if len(data) > self.max_bytes or digest in self._blobs:
            return
        while self.size + len(data) > self.max_bytes:
            _, old = self._blobs.popitem(last=False)
            self.size -= len(old)
        self._blobs[digest] = data
        self.size += len(data)

    async def aclose(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
