"""Content-addressed blobs over HTTP.

PUT checks the hash while streaming to a temporary file, within what the uploader may still send
(store/uploads.py: a worker only the outputs of the leases it holds, everyone within a quota of
uploads no job uses yet). GET and HEAD need credentials: a blob is read by the token that
uploaded it, the owner of a job that uses it, operators, and workers holding a lease whose unit
or job names it as an input. Its bytes are checked against the digest again on the way out.
The blob sweeper deletes uploads that expired unused, rows and files.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tabgrid.api import auth
from tabgrid.api.io import json_response, services
from tabgrid.api.problems import ProblemError, bad_request, not_found
from tabgrid.blobs import DIGEST, BlobError, BlobStore, Corrupt, Large, digest_of
from tabgrid.coordinator.batch import IN_ROW_BYTES
from tabgrid.protocol import BlobStored, JobSubmit
from tabgrid.settings import MiB
from tabgrid.store import blob_rows, jobs, uploads
from tabgrid.store.tokens import Principal
from tabgrid.store.uploads import Budget, Owner, Refused

if TYPE_CHECKING:
    from tabgrid.services import Services

log = logging.getLogger("tabgrid.blobs")

# Readable only with credentials: a browser or proxy shared by others must not keep a copy.
CACHE = "private, max-age=31536000, immutable"
OCTET = "application/octet-stream"
WHOLE = 4 * MiB  # blobs up to this size are read and checked before a byte of them is sent
MAX_SWEEP_PASSES = 50  # per sweep, each of up to uploads.SWEEP_BATCH expired uploads


def _digest(request: Request) -> str:
    digest = request.path_params["digest"]
    if not DIGEST.match(digest):
        raise bad_request(
            f"{digest!r} is not a sha256 digest: a blob's name is the 64 lower-case hex "
            "characters of the sha256 of its bytes"
        )
    return digest


def _problem(e: Refused) -> ProblemError:
    headers = {} if e.retry_after is None else {"Retry-After": str(math.ceil(e.retry_after))}
    return ProblemError(e.status, e.title, e.detail, headers=headers)


async def _store_run(svc: Services, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return await svc.store.run(fn, *args)
    except Refused as e:
        raise _problem(e) from None


# ---- PUT -----------------------------------------------------------------------------------


async def put_blob(request: Request) -> Response:
    who = auth.blob_caller(request)
    digest = _digest(request)
    svc = services(request)
    settings = svc.settings
    budget: Budget = await _store_run(
        svc, uploads.budget, who, digest, settings.limits, time.time()
    )
    declared = _content_length(request)
    _check(budget, 0 if declared is None else declared)  # with none, the count still counts
    ttl = settings.worker_upload_ttl_s if who.kind == "worker" else settings.upload_ttl_s
    try:
        async with svc.blobs.receive(_body(request, budget), digest) as incoming:
            # From before the claim until the bytes are in place, no deletion removes them.
            with svc.blobs.landing(digest):
                await _store_run(
                    svc,
                    uploads.register,
                    who,
                    digest,
                    incoming.size,
                    settings.limits,
                    ttl,
                    time.time(),
                )
                new = await asyncio.to_thread(svc.blobs.land, incoming)
    except BlobError as e:
        raise ProblemError(
            400,
            "Digest Mismatch",
            f"{e}: the URL must name the sha256 of exactly the bytes sent",
        ) from None
    return json_response(BlobStored(digest, incoming.size), 201 if new else 200)


def _content_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    try:
        return int(declared)
    except ValueError:
        raise bad_request(f"Content-Length {declared!r} is not a number") from None


def _check(budget: Budget, size: int, so_far: bool = False) -> None:
    try:
        budget.check(size, time.time(), so_far)
    except Refused as e:
        raise _problem(e) from None


async def _body(request: Request, budget: Budget) -> AsyncIterator[bytes]:
    """The body's chunks, stopped as soon as they pass what the uploader may send: a sender may
    lie about Content-Length or send none (chunked)."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > budget.limit:
            _check(budget, size, so_far=True)
        yield chunk


# ---- GET and HEAD --------------------------------------------------------------------------


async def get_blob(request: Request) -> Response:
    digest = _digest(request)
    who = auth.blob_caller(request)
    svc = services(request)
    if not await svc.store.run(uploads.may_read, who, digest, time.time()):
        raise _unreadable(who, digest)
    head = request.method == "HEAD"
    headers = {"Cache-Control": CACHE}
    try:
        if head:
            size = await asyncio.to_thread(svc.blobs.check, digest)
            if size is not None:
                return _headers_only(size, headers)
        else:
            found = await asyncio.to_thread(svc.blobs.open_checked, digest, WHOLE)
            if isinstance(found, bytes):
                return Response(found, headers=headers, media_type=OCTET)
            if isinstance(found, Large):
                return StreamingResponse(
                    _streamed(svc.blobs, found),
                    headers=headers | {"content-length": str(found.size)},
                    media_type=OCTET,
                )
    except Corrupt:
        log.error("blob %s did not hash to its digest where it is kept; it was removed", digest)
        raise _corrupt(digest) from None
    data = await svc.store.run(blob_rows.read, digest)  # small validated outputs
    if data is not None:
        if digest_of(data) != digest:
            log.error("blob %s kept in the database does not hash to its digest", digest)
            await svc.store.run(blob_rows.drop_data, digest)
            raise _corrupt(digest)
        if head:
            return _headers_only(len(data), headers)
        return Response(data, headers=headers, media_type=OCTET)
    raise _missing(svc.blobs, digest)


def _headers_only(size: int, headers: dict[str, str]) -> Response:
    return Response(None, headers=headers | {"content-length": str(size)}, media_type=OCTET)


async def _streamed(blobs: BlobStore, large: Large) -> AsyncIterator[bytes]:
    try:
        async for chunk in blobs.stream_checked(large):
            yield chunk
    except Corrupt:
        # The status went out with the first chunk: the response breaks off short instead.
        log.error("blob %s did not hash to its digest while sent; it was removed", large.digest)
        raise


def _unreadable(who: Owner, digest: str) -> ProblemError:
    if who.kind == "worker":
        return ProblemError(
            403,
            "Forbidden",
            f"worker {who.id} holds no lease whose unit or job names blob {digest} as an input: "
            "a worker's credentials read only the inputs of the units leased to it, while it "
            "holds the lease",
        )
    # As for another submitter's job: whether the blob exists is not this token's business.
    return not_found(
        f"blob {digest} is not stored here for this token: a blob is readable by the token "
        "that uploaded it (until the upload expires), by the owner of a job that uses it and "
        f"by operators. Upload it with PUT first. {_SMALL_OUTPUTS}"
    )


# A small validated output is not a blob: a reader that took its digest from a unit gets its
# bytes with the job's results instead.
_SMALL_OUTPUTS = (
    f"(Outputs of at most {IN_ROW_BYTES} bytes are not blobs: their bytes come with the "
    "job's results, GET /api/v1/jobs/{id}/results.)"
)


def _missing(blobs: BlobStore, digest: str) -> ProblemError:
    when = blobs.found_corrupt(digest)
    if when is not None:
        return not_found(
            f"blob {digest} is not stored here: its bytes were found damaged on disk "
            f"{time.time() - when:.0f} s ago and removed. Upload it again with PUT"
        )
    return not_found(
        f"blob {digest} is not stored here; upload it with PUT first. {_SMALL_OUTPUTS}"
    )


def _corrupt(digest: str) -> ProblemError:
    return ProblemError(
        409,
        "Corrupt Blob",
        f"the bytes stored for blob {digest} no longer hash to its digest (damaged on disk): "
        "they were not served and have been removed. Upload the blob again with PUT "
        f"/api/v1/blobs/{digest}; whoever needs it can fetch it then",
    )


# ---- who may name a blob in a job ----------------------------------------------------------


async def readable_store(svc: Services, who: Principal, submit: JobSubmit) -> BlobStore:
    """The blob store as this submitter sees it: a job may name only blobs its submitter could
    read (its own uploads, blobs its jobs use; an operator's, any). Otherwise naming a digest
    learned elsewhere would make the submitter an owner of someone else's blob."""
    if who.is_operator:
        return svc.blobs
    digests = await asyncio.to_thread(jobs.input_digests, submit)
    owner = Owner("token", str(who.id), who)
    mine = await svc.store.run(uploads.readable, owner, digests, time.time())
    return svc.blobs.only(mine)


# ---- freeing -------------------------------------------------------------------------------


async def free(svc: Services, digests: list[str]) -> None:
    """Deletes the bytes of blobs whose rows were just deleted, unless they came back
    meanwhile (an upload landing, a claim, a job)."""
    if not digests:
        return
    back = await svc.store.run(uploads.still_held, digests, time.time())
    for i, digest in enumerate(digests):
        if digest not in back:
            await svc.blobs.delete_freed(digest)
        if i % 64 == 63:
            await asyncio.sleep(0)


async def sweep_once(svc: Services, cursor: str = "") -> str:
    """Deletes expired uploads and the blobs nothing holds any more; returns where the walk over
    the blob rows goes on next time."""
    s = svc.settings
    orphan_age = max(s.upload_ttl_s, s.worker_upload_ttl_s)
    freed = expired = 0
    for _ in range(MAX_SWEEP_PASSES):
        swept = await svc.store.run(uploads.sweep, time.time(), orphan_age, cursor)
        await free(svc, swept.freed)
        freed, expired, cursor = freed + len(swept.freed), expired + swept.expired, swept.cursor
        if not swept.more:
            break
    if freed or expired:
        log.info("%d uploads expired unused; %d blobs nothing held were deleted", expired, freed)
    return cursor


async def sweep(svc: Services) -> None:
    """The blob sweeper, a side task of the coordinator: every blob_sweep_interval_s."""
    cursor = ""
    while True:
        await asyncio.sleep(svc.settings.blob_sweep_interval_s)
        try:
            cursor = await sweep_once(svc, cursor)
        except Exception:  # a database hiccup must not stop the coordinator
            log.exception("the blob sweep failed; it runs again in the next interval")
