"""Content-addressed blobs: one interface (base.BlobStore), kept as files on this host
(files.FileBlobStore) or, for several hosts, in the database (store/blob_parts.py)."""

from __future__ import annotations

from tabgrid.blobs.base import (
    DIGEST,
    BlobError,
    BlobStore,
    Corrupt,
    Incoming,
    Large,
    check_digest,
    digest_of,
)
from tabgrid.blobs.files import FileBlobStore

__all__ = [
    "DIGEST",
    "BlobError",
    "BlobStore",
    "Corrupt",
    "FileBlobStore",
    "Incoming",
    "Large",
    "check_digest",
    "digest_of",
]
