"""Models and embedding jobs: registration, look-up, and an embedding job with its token blobs.

A model's blobs (weights, tokenizer) are held by upload claims of owner ``model:<key>`` that
never expire: the blob sweeper keeps what a live claim holds, and deleting a job that used the
weights frees none of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from math import prod
from typing import Any

import msgspec
from sqlalchemy import Connection, delete, insert, select

from tabgrid.protocol import BlobRef, JobSubmit
from tabgrid.runtime.array import ITEMSIZE
from tabgrid.store import jobs
from tabgrid.store.codec import dumps, loads, loads_inputs
from tabgrid.store.sql import insert_ignore
from tabgrid.store.tables import Blob, BlobUpload, EmbeddingJob, Model, Replica, Unit

M = Model.__table__  # type: ignore[attr-defined]
E = EmbeddingJob.__table__  # type: ignore[attr-defined]
C = BlobUpload.__table__  # type: ignore[attr-defined]
B = Blob.__table__  # type: ignore[attr-defined]
U = Unit.__table__  # type: ignore[attr-defined]
R = Replica.__table__  # type: ignore[attr-defined]

FOREVER = 1e18  # a claim's expires_at that no clock reaches
_ref = msgspec.json.Decoder(BlobRef)


class ModelConflict(Exception):
    """Another model is registered under this name."""


@dataclass(frozen=True)
class ModelRecord:
    """A model as registered: what the embed kernel needs to run it."""

    name: str
    architecture: str
    config: dict[str, Any]
    tokenizer: BlobRef
    tensors: dict[str, BlobRef]
    lowercase: bool = False  # sentence-transformers' do_lower_case: texts lowered first

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def total_bytes(self) -> int:
        refs = [self.tokenizer, *self.tensors.values()]
        return sum(_nbytes(ref) for ref in {ref.digest: ref for ref in refs}.values())

    @property
    def fingerprint(self) -> str:
        what = dumps([self.architecture, self.config, self.tokenizer, self.tensors, self.lowercase])
        return hashlib.sha256(what.encode()).hexdigest()


@dataclass(frozen=True)
class ModelRow:
    record: ModelRecord
    total_bytes: int
    created_at: float


def _nbytes(ref: BlobRef) -> int:
    return prod(ref.shape) * ITEMSIZE[ref.dtype]


def _row(row: Any) -> ModelRow:
    record = ModelRecord(
        name=row.name,
        architecture=row.architecture,
        config=loads(row.config),
        tokenizer=_ref.decode(row.tokenizer),
        tensors=loads_inputs(row.tensors),
        lowercase=row.lowercase,
    )
    return ModelRow(record, row.total_bytes, row.created_at)


def get(conn: Connection, name: str) -> ModelRow | None:
    row = conn.execute(select(M).where(M.c.key == name.lower())).first()
    return None if row is None else _row(row)


def list_models(conn: Connection) -> list[ModelRow]:
    return [_row(row) for row in conn.execute(select(M).order_by(M.c.key))]


def names(conn: Connection) -> list[str]:
    return list(conn.execute(select(M.c.name).order_by(M.c.key)).scalars())


def register(
    conn: Connection, record: ModelRecord, now: float, uploader: str | None = None
) -> tuple[ModelRow, bool]:
    """Registers the model, or finds the same one registered already (created False). Raises
    ModelConflict when the name is taken by a model with other weights or config. The model's
    claims replace the uploader's (an owner key), which no longer count against its quota."""
    found = conn.execute(select(M).where(M.c.key == record.key)).first()
    if found is not None:
        if found.fingerprint != record.fingerprint:
            raise ModelConflict(found.name)
        return _row(found), False
    conn.execute(
        insert(M).values(
            name=record.name,
            key=record.key,
            architecture=record.architecture,
            config=dumps(record.config),
            tokenizer=dumps(record.tokenizer),
            tensors=dumps(record.tensors),
            lowercase=record.lowercase,
            total_bytes=record.total_bytes,
            fingerprint=record.fingerprint,
            created_at=now,
        )
    )
    refs = {ref.digest: ref for ref in [record.tokenizer, *record.tensors.values()]}
    owner = f"model:{record.key}"
    claims = [
        {"digest": d, "owner": owner, "size": _nbytes(r), "created_at": now, "expires_at": FOREVER}
        for d, r in refs.items()
    ]
    insert_ignore(conn, C, claims)
    if uploader is not None:
        conn.execute(delete(C).where(C.c.owner == uploader, C.c.digest.in_(list(refs))))
    return ModelRow(record, record.total_bytes, now), True


# ---- embedding jobs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Embedding:
    job_id: int
    model: str
    texts: int
    truncated: int


def create_embedding(
    conn: Connection,
    owner_id: int | None,
    submit: JobSubmit,
    blobs: Iterable[tuple[str, int]],
    made: Embedding,
    now: float,
) -> int:
    """The job, the rows of the token blobs its units name (digest, size) and what it was made
    from, in one transaction: a job is created whole or not at all."""
    rows = [{"digest": d, "size": size, "created_at": now} for d, size in blobs]
    insert_ignore(conn, B, rows)
    job_id = jobs.create_job(conn, owner_id, submit, now)
    conn.execute(
        insert(E).values(
            job_id=job_id, model=made.model, texts=made.texts, truncated=made.truncated
        )
    )
    return job_id


def embedding(conn: Connection, job_id: int) -> Embedding | None:
    row = conn.execute(select(E).where(E.c.job_id == job_id)).first()
    if row is None:
        return None
    return Embedding(row.job_id, row.model, row.texts, row.truncated)


def unit_rows(conn: Connection, job_id: int) -> list[list[int]]:
    """Each unit's ``rows`` param, by unit index: where its embeddings go in the input."""
    q = select(U.c.params).where(U.c.job_id == job_id).order_by(U.c.idx)
    return [list(loads(params).get("rows", [])) for params in conn.execute(q).scalars()]


def worker_holds(conn: Connection, worker_id: str, job_id: int) -> bool:
    """Whether the worker holds a lease on one of the job's units now."""
    q = select(R.c.id).where(
        R.c.worker_id == worker_id, R.c.job_id == job_id, R.c.state == "leased"
    )
    return conn.execute(q.limit(1)).first() is not None
