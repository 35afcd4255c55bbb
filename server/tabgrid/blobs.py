"""Content-addressed blobs (sha256) on the filesystem next to the database."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
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
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = root / "tmp"
        self._tmp.mkdir(exist_ok=True)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

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
        target = self.path(actual)
        if not target.exists():
            self._commit(target, lambda f: f.write(data))
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
            target.parent.mkdir(exist_ok=True)
            os.replace(tmp, target)
            return True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def _commit(self, target: Path, write) -> None:  # type: ignore[no-untyped-def]
        # Write then rename, so a reader never sees half a blob and a crash leaves no torn file.
        target.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
