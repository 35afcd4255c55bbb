"""What every blob store does: content-addressed bytes (sha256), checked against their digest
when they come in and again when they are read back. A store says only how to keep bytes
(files.py: files on this host; store/blob_parts.py: parts in the database)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import copy
import hashlib
import os
import re
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

DIGEST = re.compile(r"^[0-9a-f]{64}$")
MAX_REMEMBERED = 1024  # blobs found corrupt, remembered to say so


class BlobError(ValueError):
    pass


class Corrupt(BlobError):
    """A stored blob's bytes no longer hash to its digest (damaged where it is kept)."""


@dataclass(frozen=True)
class Incoming:
    """Bytes received and checked, in a temporary file until they land."""

    digest: str
    tmp: str
    size: int


@dataclass(frozen=True)
class Large:
    """A stored blob too large to read whole before sending: ``stream_checked`` sends it."""

    digest: str
    size: int


class _Landing:
    def __init__(self, counts: dict[str, int], digest: str) -> None:
        self.counts, self.digest = counts, digest

    def __enter__(self) -> None:
        self.counts[self.digest] = self.counts.get(self.digest, 0) + 1

    def __exit__(self, *exc: object) -> None:
        left = self.counts[self.digest] - 1
        if left:
            self.counts[self.digest] = left
        else:
            del self.counts[self.digest]


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    if not DIGEST.match(digest):
        raise BlobError(f"{digest!r} is not a sha256 digest (64 lower-case hex characters)")
    return digest


class BlobStore(abc.ABC):
    """The interface the coordinator uses. Subclasses keep the bytes (the methods marked
    abstract); hashing, checks, corruption and one reader's view are the same for all."""

    def __init__(self, tmp_dir: Path) -> None:
        self._tmp = tmp_dir
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._landing: dict[str, int] = {}
        self._corrupt: OrderedDict[str, float] = OrderedDict()
        self._only: frozenset[str] | None = None

    # ---- how a store keeps bytes -------------------------------------------------------------

    @abc.abstractmethod
    def _size(self, digest: str) -> int | None:
        """The stored blob's size; None when it is not stored."""

    @abc.abstractmethod
    def _read(self, digest: str) -> bytes | None:
        """All of the stored bytes, unchecked; None when not stored."""

    @abc.abstractmethod
    def _chunks(self, digest: str) -> Iterator[bytes]:
        """The stored bytes a bounded piece at a time, unchecked (FileNotFoundError when not
        stored); the pieces are read as the iterator is advanced."""

    @abc.abstractmethod
    def _write(self, digest: str, data: bytes | None, tmp: str | None, replace: bool) -> bool:
        """Stores ``data`` or the file ``tmp`` under ``digest`` so that no reader sees half of
        it; an existing blob stays unless ``replace``. Returns whether none was there."""

    @abc.abstractmethod
    def _remove(self, digest: str, freed: bool) -> None:
        """Removes the stored bytes, if any. ``freed``: nothing held the blob when the caller
        looked; a store shared by several coordinators keeps it if something does now."""

    def close(self) -> None:  # noqa: B027 - most stores hold nothing open
        """Lets go of what the store holds open (the database store's connections)."""

    # ---- the interface -----------------------------------------------------------------------

    def has(self, digest: str) -> bool:
        check_digest(digest)
        if self._only is not None and digest not in self._only:
            return False
        return self._size(digest) is not None

    def size(self, digest: str) -> int:
        check_digest(digest)
        if self._only is not None and digest not in self._only:
            raise FileNotFoundError(f"blob {digest} is not stored for this reader")
        size = self._size(digest)
        if size is None:
            raise FileNotFoundError(f"blob {digest} is not stored")
        return size

    def read(self, digest: str) -> bytes:
        data = self._read(check_digest(digest))
        if data is None:
            raise BlobError(f"blob {digest} is not stored")
        return data

    def put(self, data: bytes, digest: str | None = None) -> str:
        actual = digest_of(data)
        if digest is not None and digest != actual:
            raise BlobError(f"the bytes hash to {actual}, not {digest}")
        self._write(actual, data, None, replace=False)
        return actual

    @contextlib.asynccontextmanager
    async def receive(self, chunks: AsyncIterator[bytes], digest: str) -> AsyncIterator[Incoming]:
        """Streams a body to a temporary file while hashing it; raises BlobError when it does
        not hash to ``digest``. Inside the block the bytes wait for ``land``; the temporary
        file is gone after it either way. The caller bounds ``chunks``."""
        check_digest(digest)
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    h.update(chunk)
                    f.write(chunk)
            if h.hexdigest() != digest:
                raise BlobError(f"the bytes hash to {h.hexdigest()}, not {digest}")
            yield Incoming(digest, tmp, size)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def land(self, incoming: Incoming) -> bool:
        """Stores checked bytes under their digest; returns whether the blob was not there
        before. A blob already there is replaced too: its bytes may have been damaged. Blocks
        while the bytes are copied: call it off the event loop."""
        new = self._write(incoming.digest, None, incoming.tmp, replace=True)
        self._corrupt.pop(incoming.digest, None)
        return new

    async def delete_freed(self, digest: str) -> None:
        """Removes a blob the database no longer holds (api/blobs.py: free), unless an upload
        is landing it. The check and a file's unlink run in one step of the event loop."""
        if not self.is_landing(check_digest(digest)):
            self._remove(digest, freed=True)

    # ---- uploads racing deletions ------------------------------------------------------------
    # An upload registers its claim, then lands its bytes; a deletion checks the database, then
    # removes. A digest is "landing" from before the claim until after the bytes are in place,
    # and nothing removes a landing digest, so a deletion that saw no claim cannot remove the
    # bytes of an upload that made one. Within this process: the event loop runs both steps.
    # Between processes the database store locks the digest (store/blob_parts.py).

    def landing(self, digest: str) -> contextlib.AbstractContextManager[None]:
        return _Landing(self._landing, digest)

    def is_landing(self, digest: str) -> bool:
        return digest in self._landing

    # ---- reading back, checked -----------------------------------------------------------------

    def open_checked(self, digest: str, whole: int) -> bytes | Large | None:
        """The blob's bytes when it has at most ``whole`` of them, checked against the digest;
        a Large when larger (``stream_checked`` checks those while sending); None when it is not
        stored. Raises Corrupt, and removes the blob, when the bytes no longer hash to it."""
        size = self._size(check_digest(digest))
        if size is None:
            return None
        if size > whole:
            return Large(digest, size)
        data = self._read(digest)
        if data is None:
            return None
        if digest_of(data) != digest:
            self.remove_corrupt(digest)
        return data

    def check(self, digest: str) -> int | None:
        """The blob's size after hashing all of it (HEAD); None when it is not stored. Raises
        Corrupt, and removes the blob, when it fails."""
        h = hashlib.sha256()
        size = 0
        try:
            for chunk in self._chunks(check_digest(digest)):
                h.update(chunk)
                size += len(chunk)
        except FileNotFoundError:
            return None
        if h.hexdigest() != digest:
            self.remove_corrupt(digest)
        return size

    async def stream_checked(self, large: Large) -> AsyncIterator[bytes]:
        """The blob's bytes, hashed as they go. The last piece is held back until the whole
        blob hashes to its digest: a damaged blob is never delivered whole (the response
        breaks off short of its Content-Length) and is removed."""
        digest = large.digest
        h = hashlib.sha256()
        pieces = self._chunks(digest)
        try:
            held = await asyncio.to_thread(next, pieces, b"")
            while held:
                h.update(held)
                nxt = await asyncio.to_thread(next, pieces, b"")
                if not nxt:
                    break
                yield held
                held = nxt
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        if h.hexdigest() != digest:
            self.remove_corrupt(digest)
        if held:
            yield held

    def remove_corrupt(self, digest: str) -> NoReturn:
        """Removes bytes that do not hash to their digest (unless a good copy is landing) and
        raises Corrupt. Remembered for a while, so a later request can say what happened."""
        if not self.is_landing(digest):
            self._remove(digest, freed=False)
        self._corrupt[digest] = time.time()
        while len(self._corrupt) > MAX_REMEMBERED:
            self._corrupt.popitem(last=False)
        raise Corrupt(f"the bytes stored for blob {digest} do not hash to it")

    def found_corrupt(self, digest: str) -> float | None:
        """When the blob was found corrupt and removed, if that was recently."""
        return self._corrupt.get(digest)

    # ---- one reader's view -------------------------------------------------------------------

    def only(self, readable: Collection[str]) -> BlobStore:
        """This store as one reader sees it: blobs outside ``readable`` look absent (size and
        has), whether or not they are stored."""
        view = copy.copy(self)
        view._only = frozenset(readable)
        return view
