"""Blobs as files under the data directory, named by their digest: the default, right for one
host (several hosts keep blobs in the database: store/blob_parts.py)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

from tabgrid.blobs.base import BlobStore, check_digest

READ_CHUNK = 1 << 20  # bytes read from disk at a time when hashing or sending a blob


class FileBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        # The temporary files sit beside their targets, so landing one is a rename.
        super().__init__(root / "tmp")
        self.root = root
        for i in range(256):  # made once, so the result path never checks for them
            (root / f"{i:02x}").mkdir(exist_ok=True)
        self._root = str(root)

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest

    def _fast_path(self, digest: str) -> str:
        return f"{self._root}/{digest[:2]}/{digest}"

    def _size(self, digest: str) -> int | None:
        try:
            return os.stat(self._fast_path(digest)).st_size
        except FileNotFoundError:
            return None

    def _read(self, digest: str) -> bytes | None:
        try:
            with open(self._fast_path(digest), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _chunks(self, digest: str) -> Iterator[bytes]:
        f = open(self._fast_path(digest), "rb")  # noqa: SIM115 - closed when the iterator is

        def pieces() -> Iterator[bytes]:
            with f:
                while chunk := f.read(READ_CHUNK):
                    yield chunk

        return pieces()

    def _write(self, digest: str, data: bytes | None, tmp: str | None, replace: bool) -> bool:
        target = self._fast_path(digest)
        new = not os.path.exists(target)
        if tmp is not None:
            os.replace(tmp, target)
        elif new or replace:
            # Write then rename: a reader never sees half a blob, a crash leaves no torn file.
            part = f"{target}.{threading.get_ident()}.tmp"
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data or b"")
            finally:
                os.close(fd)
            os.replace(part, target)
        return new

    def _remove(self, digest: str, freed: bool) -> None:
        Path(self._fast_path(digest)).unlink(missing_ok=True)
