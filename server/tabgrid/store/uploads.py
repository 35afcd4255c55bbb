"""Uploads: who made them, how long they keep their blob, what each owner may still send and
who may read a blob.

Every upload is a claim (table blob_uploads) by its owner: a token (``token:<id>``) or a
worker (``worker:<id>``). A blob stays while a job uses it (a row in blob_refs) or a live claim
holds it. A token's claim lasts ``upload_ttl_s`` or until it is used: a job of that token
submitted after the upload uses the blob (then the job holds it; the claim goes when the job is
deleted, or at the token's next upload). A worker's lasts ``worker_upload_ttl_s`` (its result
names the blob, and then the job holds it) or until a job whose outputs name it is deleted.
Another submitter's job never uses up a claim. The blob sweeper deletes what nothing holds any
more, rows and files.

Uploads no job uses yet are bounded per owner: a token by ``upload_quota_bytes`` and
``upload_quota_blobs``; a worker by what the leases it holds declare (``declared_bytes``), and
at most by ``worker_upload_quota_bytes`` and ``worker_upload_quota_blobs``. A worker that holds
no lease may upload nothing: its credentials are given to anyone who says hello.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import (
    Connection,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)

from tabgrid.settings import Limits
from tabgrid.store.codec import loads_inputs
from tabgrid.store.sql import insert_ignore
from tabgrid.store.tables import Blob, BlobUpload, BlobUse, Job, Replica, Unit
from tabgrid.store.tokens import Principal

C = BlobUpload.__table__  # type: ignore[attr-defined]
B = Blob.__table__  # type: ignore[attr-defined]
REFS = BlobUse.__table__  # type: ignore[attr-defined]
J = Job.__table__  # type: ignore[attr-defined]
U = Unit.__table__  # type: ignore[attr-defined]
R = Replica.__table__  # type: ignore[attr-defined]

CHUNK = 500  # digests per IN (...) list
SWEEP_BATCH = 1000  # claims expired, and blob rows walked, per sweep pass


@dataclass(frozen=True)
class Owner:
    """Who sends or reads a blob: a token's holder, or a worker by its id and secret."""

    kind: str  # "token" or "worker"
    id: str
    principal: Principal | None = None  # the token's, for kind "token"

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def is_operator(self) -> bool:
        return self.principal is not None and self.principal.is_operator

    @property
    def token_id(self) -> int | None:
        return self.principal.id if self.principal is not None else None

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"


class Refused(Exception):
    """An upload the owner may not make; the API turns it into a problem document."""

    def __init__(self, status: int, title: str, detail: str, retry_after: float | None = None):
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail, self.retry_after = status, title, detail, retry_after


# ---- what a worker's leases declare ------------------------------------------------------------

Shapes = Mapping[str, tuple[str, tuple[int, ...]]]


def _matmul(params: Mapping[str, Any], shapes: Shapes) -> int:
    (m, _), (_, n) = shapes["a"][1], shapes["b"][1]
    return m * n * 4  # c: (m, n) float32


def _mandelbrot(params: Mapping[str, Any], shapes: Shapes) -> int:
    return int(params["width"]) * int(params["height"]) * 4  # iters: (height, width) uint32


def _checksum(params: Mapping[str, Any], shapes: Shapes) -> int:
    return 32  # digest: (32,) uint8


def _wgsl(params: Mapping[str, Any], shapes: Shapes) -> int | None:
    from tabgrid.kernels.wgsl.plan import plan_for

    plan, errors = plan_for(params.get("shader"), params.get("manifest"))
    if plan is None:
        return None
    lengths = plan.output_lengths(params, errors)
    return None if errors else sum(lengths.values()) * 4  # every WGSL element type is 4 bytes


_DECLARED: dict[str, Callable[[Mapping[str, Any], Shapes], int | None]] = {
    "matmul": _matmul,
    "mandelbrot": _mandelbrot,
    "checksum": _checksum,
    "wgsl": _wgsl,
}


def declared_bytes(kernel: str, params: Mapping[str, Any], shapes: Shapes, max_blob: int) -> int:
    """The most one unit's outputs may take, as declared: what its kernel's documented outputs
    need for the unit's params and input shapes (matmul: m x n float32; mandelbrot: height x
    width uint32; checksum: 32 bytes; wgsl: the output lengths its manifest states, 4 bytes an
    element). A kernel that cannot say, or a unit it cannot size, declares ``max_blob``, the
    bound on any one blob; no declaration is ever above it."""
    size = None
    state = _DECLARED.get(kernel)
    if state is not None:
        try:
            size = state(params, shapes)
        except Exception:  # a unit the kernel would refuse: it says nothing about the size
            size = None
    return max_blob if size is None or size < 0 else min(size, max_blob)


def _held_leases(conn: Connection, worker_id: str, limits: Limits) -> list[int]:
    """What each lease the worker holds declares its unit's outputs may take."""
    rows = conn.execute(
        select(R.c.job_id, U.c.params, U.c.inputs)
        .select_from(R.join(U, U.c.id == R.c.unit_id))
        .where(R.c.worker_id == worker_id, R.c.state == "leased")
        .limit(limits.max_leases)
    ).all()
    if not rows:
        return []
    job_ids = list({job for job, _, _ in rows})
    jobs = {
        row.id: (row.kernel, msgspec.json.decode(row.params), loads_inputs(row.inputs))
        for row in conn.execute(
            select(J.c.id, J.c.kernel, J.c.params, J.c.inputs).where(J.c.id.in_(job_ids))
        )
    }
    sizes, seen = [], {}
    for job_id, unit_params, unit_inputs in rows:
        key = (job_id, unit_params, unit_inputs)
        if key not in seen:
            kernel, params, inputs = jobs[job_id]
            refs = inputs | loads_inputs(unit_inputs)
            shapes = {n: (r.dtype, tuple(r.shape)) for n, r in refs.items()}
            merged = params | msgspec.json.decode(unit_params)
            seen[key] = declared_bytes(kernel, merged, shapes, limits.max_blob)
        sizes.append(seen[key])
    return sizes


# ---- budgets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """What an owner may still upload: one blob's bound, and what its quota leaves."""

    owner: Owner
    per_blob: int
    per_blob_why: str
    quota_bytes: int
    quota_blobs: int
    quota_why: str
    pending_bytes: int  # in uploads no job uses yet, this digest's own claim aside
    pending_blobs: int
    next_expiry: float | None  # when the first of those expires

    @property
    def room(self) -> int:
        return max(0, self.quota_bytes - self.pending_bytes)

    @property
    def limit(self) -> int:
        """The most bytes the body may have."""
        return min(self.per_blob, self.room)

    def check(self, size: int, now: float, so_far: bool = False) -> None:
        """Raises Refused when an upload of ``size`` bytes (``so_far``: at least) does not fit."""
        has = f"at least {size}" if so_far else f"{size}"
        if size > self.per_blob:
            raise Refused(
                413,
                "Content Too Large",
                f"a blob from {self.owner} may be at most {self.per_blob} bytes "
                f"({self.per_blob_why}); this one has {has} bytes",
            )
        if size > self.room or self.pending_blobs + 1 > self.quota_blobs:
            wait = None if self.next_expiry is None else max(1.0, self.next_expiry - now)
            when = f"; the first expires in {math.ceil(wait)} s" if wait is not None else ""
            raise Refused(
                429,
                "Upload Quota Exceeded",
                f"{self.owner} has {self.pending_bytes} bytes in {self.pending_blobs} upload(s) "
                f"that no job uses yet, and may have at most {self.quota_bytes} bytes and "
                f"{self.quota_blobs} upload(s) ({self.quota_why}); this upload of {has} bytes "
                f"does not fit. {_what_to_do(self.owner)}{when}",
                wait,
            )


def _what_to_do(owner: Owner) -> str:
    if owner.kind == "worker":
        return (
            "Send the results that name the outputs already uploaded; an upload no result "
            "names is deleted after worker_upload_ttl_s"
        )
    return (
        "Submit the job that uses the blobs already uploaded (or delete the job you no longer "
        "need), or wait: an upload no job uses is deleted after upload_ttl_s"
    )


def _pending(
    conn: Connection, owner: Owner, digest: str, now: float
) -> tuple[int, int, float | None]:
    """Bytes, count and first expiry of the owner's live claims no job uses yet (for a token:
    no job of its own), besides the one on ``digest``."""
    if owner.kind == "worker":
        used = exists().where(REFS.c.digest == C.c.digest)
    else:
        used = (
            select(literal(1))
            .select_from(REFS.join(J, J.c.id == REFS.c.job_id))
            .where(REFS.c.digest == C.c.digest, J.c.owner_id == owner.token_id)
            .exists()
        )
    q = select(func.coalesce(func.sum(C.c.size), 0), func.count(), func.min(C.c.expires_at)).where(
        C.c.owner == owner.key, C.c.expires_at > now, C.c.digest != digest, ~used
    )
    size, count, first = conn.execute(q).one()
    return int(size), int(count), first


def _consume_used(conn: Connection, owner: Owner) -> None:
    """Deletes the token's claims that a job of its own, submitted after the upload, uses: that
    job holds the blob now. Keeps what each upload costs bounded by the uploads not yet used."""
    used = (
        select(literal(1))
        .select_from(REFS.join(J, J.c.id == REFS.c.job_id))
        .where(
            REFS.c.digest == C.c.digest,
            J.c.owner_id == owner.token_id,
            J.c.created_at >= C.c.created_at,
        )
        .exists()
    )
    conn.execute(delete(C).where(C.c.owner == owner.key, used))


def budget(conn: Connection, owner: Owner, digest: str, limits: Limits, now: float) -> Budget:
    """What ``owner`` may upload now; raises Refused (403) for a worker that holds no lease."""
    if owner.kind == "token":
        _consume_used(conn, owner)
    pending, count, first = _pending(conn, owner, digest, now)
    if owner.kind == "token":
        return Budget(
            owner,
            limits.max_blob,
            "the coordinator's max_blob",
            limits.upload_quota_bytes,
            limits.upload_quota_blobs,
            "per token: upload_quota_bytes, upload_quota_blobs",
            pending,
            count,
            first,
        )
    held = _held_leases(conn, owner.id, limits)
    if not held:
        raise Refused(
            403,
            "Forbidden",
            f"worker {owner.id} holds no lease: a worker's credentials upload only the outputs "
            "of units leased to it, while it holds the lease",
        )
    declared = sum(held)
    quota = min(declared, limits.worker_upload_quota_bytes)
    why = (
        f"the outputs of the {len(held)} lease(s) it holds declare {declared} bytes"
        if quota == declared
        else f"worker_upload_quota_bytes; its {len(held)} lease(s) declare {declared}"
    )
    return Budget(
        owner,
        max(held),
        "the largest output a lease it holds declares",
        quota,
        limits.worker_upload_quota_blobs,
        f"{why}; worker_upload_quota_blobs",
        pending,
        count,
        first,
    )


def _lock_owner(conn: Connection, owner: Owner) -> None:
    """Serializes one owner's uploads on PostgreSQL, so concurrent ones cannot both fit. An
    advisory lock, not the owner's row: the scheduler's rounds lock worker rows, in another
    order. SQLite runs one write transaction at a time anyway."""
    if conn.dialect.name == "postgresql":
        conn.execute(_PG_LOCK, {"key": f"tabgrid upload {owner.key}"})


_PG_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


def register(
    conn: Connection, owner: Owner, digest: str, size: int, limits: Limits, ttl: float, now: float
) -> None:
    """Records an upload whose bytes arrived: the blob, and the owner's claim on it for ``ttl``
    seconds (renewed when it was there). Checks the budget again under the owner's lock;
    raises Refused when it no longer fits."""
    _lock_owner(conn, owner)
    budget(conn, owner, digest, limits, now).check(size, now)
    insert_ignore(conn, B, [{"digest": digest, "size": size, "created_at": now}])
    values = {"size": size, "created_at": now, "expires_at": now + ttl}
    renewed = conn.execute(
        update(C).where(C.c.digest == digest, C.c.owner == owner.key).values(**values)
    )
    if renewed.rowcount == 0:
        conn.execute(insert(C).values(digest=digest, owner=owner.key, **values))


# ---- reading -----------------------------------------------------------------------------------


def may_read(conn: Connection, owner: Owner, digest: str, now: float) -> bool:
    """Operators read every blob; a token the blobs it uploaded (while its claim lives) and those
    its jobs use, inputs and outputs; a worker only the inputs of the units it holds leases on,
    named by the unit or its job. Never another worker's outputs: a worker that could read them
    could copy a result instead of computing it, and redundancy would check nothing."""
    if owner.is_operator:
        return True
    if owner.kind == "worker":
        # The inputs columns are JSON naming digests; a digest is 64 hex characters, which
        # LIKE takes literally. The worker's leases are few (max_leases) and indexed.
        pattern = f"%{digest}%"
        q = (
            select(literal(1))
            .select_from(R.join(U, U.c.id == R.c.unit_id).join(J, J.c.id == R.c.job_id))
            .where(
                R.c.worker_id == owner.id,
                R.c.state == "leased",
                or_(U.c.inputs.like(pattern), J.c.inputs.like(pattern)),
            )
            .limit(1)
        )
        return conn.execute(q).first() is not None
    return digest in readable(conn, owner, [digest], now)


def readable(conn: Connection, owner: Owner, digests: Iterable[str], now: float) -> set[str]:
    """Of these digests, those the token may read and name in a job: its live uploads and the
    blobs its jobs use."""
    found: set[str] = set()
    for chunk in _chunks(sorted(set(digests))):
        found.update(
            conn.execute(
                select(C.c.digest).where(
                    C.c.digest.in_(chunk), C.c.owner == owner.key, C.c.expires_at > now
                )
            ).scalars()
        )
        rest = [d for d in chunk if d not in found]
        if rest:
            found.update(
                conn.execute(
                    select(REFS.c.digest)
                    .select_from(REFS.join(J, J.c.id == REFS.c.job_id))
                    .where(REFS.c.digest.in_(rest), J.c.owner_id == owner.token_id)
                    .distinct()
                ).scalars()
            )
    return found


# ---- freeing -----------------------------------------------------------------------------------


def release_job(conn: Connection, job_id: int, digests: Collection[str]) -> None:
    """A job being deleted has used the claims that led to it: its owner's uploads of its blobs
    made before it was submitted, and workers' uploads of them (its outputs). Later uploads by
    its owner stay: they are for a submission still to come."""
    job = conn.execute(select(J.c.owner_id, J.c.created_at).where(J.c.id == job_id)).first()
    if job is None or not digests:
        return
    for chunk in _chunks(list(digests)):
        mine = and_(C.c.owner == f"token:{job.owner_id}", C.c.created_at <= job.created_at)
        conn.execute(delete(C).where(C.c.digest.in_(chunk), or_(mine, C.c.owner.like("worker:%"))))


def claimed(conn: Connection, digests: Collection[str], now: float) -> set[str]:
    """Of these digests, those a live upload claim holds."""
    found: set[str] = set()
    for chunk in _chunks(list(digests)):
        q = select(C.c.digest).where(C.c.digest.in_(chunk), C.c.expires_at > now).distinct()
        found.update(conn.execute(q).scalars())
    return found


def _unused(conn: Connection, digests: Collection[str], now: float) -> list[str]:
    """Of these digests, those no job uses and no live claim holds."""
    used: set[str] = claimed(conn, digests, now)
    for chunk in _chunks(list(digests)):
        q = select(REFS.c.digest).where(REFS.c.digest.in_(chunk)).distinct()
        used.update(conn.execute(q).scalars())
    return [d for d in digests if d not in used]


def still_held(conn: Connection, digests: Collection[str], now: float) -> set[str]:
    """Of these digests, those that came back after they were freed (a blob row, a job, a live
    claim): their files must stay."""
    held = set(claimed(conn, digests, now))
    for chunk in _chunks(list(digests)):
        held.update(conn.execute(select(B.c.digest).where(B.c.digest.in_(chunk))).scalars())
        held.update(conn.execute(select(REFS.c.digest).where(REFS.c.digest.in_(chunk))).scalars())
    return held


@dataclass
class Swept:
    freed: list[str]  # digests whose rows went; their files go next
    expired: int  # claims that ran out
    cursor: str  # where the next walk over blob rows starts ("" from the beginning)
    more: bool  # a full batch of expired claims: run again now


def sweep(conn: Connection, now: float, orphan_age: float, cursor: str) -> Swept:
    """One pass: deletes claims past their time, and the rows of blobs that nothing holds any
    more among theirs and one page of the blobs table (walked by digest from ``cursor``: it
    finds blobs left without a claim, such as uploads made before claims existed, once they
    are ``orphan_age`` old). Returns the freed digests."""
    expired = conn.execute(
        select(C.c.digest, C.c.owner).where(C.c.expires_at <= now).limit(SWEEP_BATCH)
    ).all()
    candidates = {digest for digest, _ in expired}
    for chunk in _chunks(sorted(candidates)):
        conn.execute(delete(C).where(C.c.digest.in_(chunk), C.c.expires_at <= now))
    page = conn.execute(
        select(B.c.digest, B.c.created_at)
        .where(B.c.digest > cursor)
        .order_by(B.c.digest)
        .limit(SWEEP_BATCH)
    ).all()
    candidates.update(d for d, created in page if created <= now - orphan_age)
    next_cursor = page[-1][0] if len(page) == SWEEP_BATCH else ""
    free = _unused(conn, sorted(candidates), now)
    for chunk in _chunks(free):
        conn.execute(delete(B).where(B.c.digest.in_(chunk)))
    return Swept(free, len(expired), next_cursor, len(expired) == SWEEP_BATCH)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]
