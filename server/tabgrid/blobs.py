"""Content-addressed blobs (sha256) on the filesystem next to the database, checked against
their digest when they come in and again when they are read back."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

DIGEST = re.compile(r"^[0-9a-f]{64}$")
READ_CHUNK = 1 << 20  # bytes read from disk at a time when hashing or sending a blob
MAX_REMEMBERED = 1024  # blobs found corrupt, remembered to say so


class BlobError(ValueError):
    pass


class Corrupt(BlobError):
    """A stored blob's bytes no longer hash to its digest (damaged on disk)."""


@dataclass(frozen=True)
class Incoming:
    """Bytes received and checked, in a temporary file until they land."""

    digest: str
    tmp: str
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


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        for i in range(256):  # made once, so the result path never checks for them
            (root / f"{i:02x}").mkdir(exist_ok=True)
        self._root = str(root)
        self._landing: dict[str, int] = {}
        self._corrupt: OrderedDict[str, float] = OrderedDict()
        self._only: frozenset[str] | None = None

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest

    def _fast_path(self, digest: str) -> str:
        check_digest(digest)
        return f"{self._root}/{digest[:2]}/{digest}"

    def has(self, digest: str) -> bool:
        if self._only is not None and digest not in self._only:
            return False
        return os.path.exists(self._fast_path(digest))

    def size(self, digest: str) -> int:
        if self._only is not None and digest not in self._only:
            raise FileNotFoundError(f"blob {digest} is not stored for this reader")
        return self.path(digest).stat().st_size

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobError(f"blob {digest} is not stored") from None

    def put(self, data: bytes, digest: str | None = None) -> str:
        actual = digest_of(data)
        if digest is not None and digest != actual:
            raise BlobError(f"the bytes hash to {actual}, not {digest}")
        target = self._fast_path(actual)
        if not os.path.exists(target):
            # Write then rename: a reader never sees half a blob, a crash leaves no torn file.
            tmp = f"{target}.{threading.get_ident()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, target)
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
        """Moves checked bytes to their name; returns whether the blob was not there before. A
        file already there is replaced too: its bytes may have been damaged."""
        target = self.path(incoming.digest)
        new = not target.exists()
        os.replace(incoming.tmp, target)
        self._corrupt.pop(incoming.digest, None)
        return new

    # ---- uploads racing deletions ------------------------------------------------------------
    # An upload registers its claim, then lands its file; a deletion checks the database, then
    # unlinks. A digest is "landing" from before the claim until after the file is in place,
    # and nothing unlinks a landing digest, so a deletion that saw no claim cannot remove the
    # file of an upload that made one. (Within this process: the event loop runs both steps.)

    def landing(self, digest: str) -> contextlib.AbstractContextManager[None]:
        return _Landing(self._landing, digest)

    def is_landing(self, digest: str) -> bool:
        return digest in self._landing

    # ---- reading back, checked -----------------------------------------------------------------

    def open_checked(self, digest: str, whole: int) -> bytes | Path | None:
        """The blob's bytes when it has at most ``whole`` of them, checked against the digest;
        its path when larger (``stream_checked`` checks those while sending); None when there is
        no file. Raises Corrupt, and removes the file, when the bytes no longer hash to the
        digest."""
        path = self.path(digest)
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size > whole:
                    return path
                data = f.read()
        except FileNotFoundError:
            return None
        if digest_of(data) != digest:
            self.remove_corrupt(digest)
        return data

    def check_file(self, digest: str) -> int | None:
        """The size of the blob's file after hashing all of it (HEAD); None when there is none.
        Raises Corrupt, and removes the file, when it fails."""
        h = hashlib.sha256()
        size = 0
        try:
            with open(self.path(digest), "rb") as f:
                while chunk := f.read(READ_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            return None
        if h.hexdigest() != digest:
            self.remove_corrupt(digest)
        return size

    async def stream_checked(self, digest: str, path: Path) -> AsyncIterator[bytes]:
        """The file's bytes, hashed as they go. The last chunk is held back until the whole file
        hashes to its digest: a damaged blob is never delivered whole (the response breaks off
        short of its Content-Length) and its file is removed."""
        h = hashlib.sha256()
        with open(path, "rb") as f:
            held = await asyncio.to_thread(f.read, READ_CHUNK)
            while held:
                h.update(held)
                nxt = await asyncio.to_thread(f.read, READ_CHUNK)
                if not nxt:
                    break
                yield held
                held = nxt
        if h.hexdigest() != digest:
            self.remove_corrupt(digest)
        if held:
            yield held

    def remove_corrupt(self, digest: str) -> NoReturn:
        """Removes a file whose bytes do not hash to its name (unless a good copy is landing)
        and raises Corrupt. Remembered for a while, so a later request can say what happened."""
        if not self.is_landing(digest):
            self.path(digest).unlink(missing_ok=True)
        self._corrupt[digest] = time.time()
        while len(self._corrupt) > MAX_REMEMBERED:
            self._corrupt.popitem(last=False)
        raise Corrupt(f"the bytes stored for blob {digest} do not hash to it")

    def found_corrupt(self, digest: str) -> float | None:
        """When the blob's file was found corrupt and removed, if that was recently."""
        return self._corrupt.get(digest)

    # ---- one reader's view -------------------------------------------------------------------

    def only(self, readable: Collection[str]) -> BlobStore:
        """This store as one reader sees it: blobs outside ``readable`` look absent (size and
        has), whether or not they are stored."""
        view = copy.copy(self)
        view._only = frozenset(readable)
        return view

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)
