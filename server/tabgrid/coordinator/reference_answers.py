"""Known answers the coordinator computes itself with the kernel's reference, for units small
enough; and blobs read as numpy arrays."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from tabgrid.blobs import BlobStore, digest_of
from tabgrid.coordinator.job_context import JobContext
from tabgrid.coordinator.rules import credit
from tabgrid.protocol import BlobRef, Output
from tabgrid.runtime.array import ITEMSIZE
from tabgrid.store import blob_rows

REFERENCE_GFLOP = 1.0  # the largest unit the coordinator computes itself as a known answer


def compute(
    conn: Connection, blobs: BlobStore, ctx: JobContext, params: dict, refs: dict[str, BlobRef]
) -> tuple[dict[str, Output], dict[str, bytes]] | None:
    """The unit's answer from the kernel's reference, computed here, when it has one and
    the unit is small enough (REFERENCE_GFLOP); None otherwise."""
    reference = getattr(ctx.kernel, "reference", None)
    if not callable(reference):
        return None
    shapes = {k: (r.dtype, tuple(r.shape)) for k, r in refs.items()}
    if credit(ctx.kernel, params, shapes) > REFERENCE_GFLOP:
        return None
    try:
        arrays = {k: read_array(conn, blobs, r.digest, r.dtype, r.shape) for k, r in refs.items()}
        return _as_outputs(reference(params, arrays))
    except Exception:  # noqa: BLE001 - then workers alone decide, as without a reference
        return None


def _as_outputs(arrays: dict[str, Any]) -> tuple[dict[str, Output], dict[str, bytes]]:
    import numpy as np

    outputs, data = {}, {}
    for name, value in arrays.items():
        a = np.ascontiguousarray(value)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        if a.dtype.name not in ITEMSIZE:
            raise ValueError(f"the reference gave {a.dtype.name} for {name!r}")
        raw = a.tobytes()
        outputs[name] = Output(digest=digest_of(raw), dtype=a.dtype.name, shape=list(a.shape))
        data[outputs[name].digest] = raw
    return outputs, data


def read_array(
    conn: Connection | None, blobs: BlobStore, digest: str, dtype: str, shape: list[int]
) -> Any:
    """A blob as a numpy array: small ones live in the database, the rest in files."""
    data = blob_rows.read(conn, digest) if conn is not None else None
    if data is None:
        data = blobs.read(digest)
    return as_array(data, dtype, shape)


def as_array(data: bytes, dtype: str, shape: list[int]) -> Any:
    """Little-endian bytes as the array they hold, without a copy."""
    import numpy as np

    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
