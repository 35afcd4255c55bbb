"""Content-addressed blobs (sha256) on the filesystem next to the database."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path

DIGEST = re.compile(r"^[0-9a-f]{64}$")


class BlobError(ValueError):
    pass


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

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest

    def _fast_path(self, digest: str) -> str:
        check_digest(digest)
        return f"{self._root}/{digest[:2]}/{digest}"

    def has(self, digest: str) -> bool:
        return os.path.exists(self._fast_path(digest))

    def size(self, digest: str) -> int:
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

    async def put_stream(self, chunks: AsyncIterator[bytes], digest: str, limit: int) -> bool:
        """Streams a body to disk while hashing it; returns whether the blob is new."""
        target = self.path(digest)
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise BlobError(f"blob is larger than the limit of {limit} bytes")
                    h.update(chunk)
                    f.write(chunk)
            if h.hexdigest() != digest:
                raise BlobError(f"the bytes hash to {h.hexdigest()}, not {digest}")
            if target.exists():
                return False
            os.replace(tmp, target)
            return True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)
