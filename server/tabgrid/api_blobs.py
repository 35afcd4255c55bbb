"""Content-addressed blobs over HTTP: PUT checks the hash while streaming to disk, GET is
immutable and cacheable forever."""

from __future__ import annotations

import time

from msgspec import Struct
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from tabgrid import auth
from tabgrid.blobs import DIGEST, BlobError
from tabgrid.httpio import bounded, json_response, services
from tabgrid.problems import ProblemError, bad_request, not_found
from tabgrid.store import blob_rows
from tabgrid.store.sql import insert_ignore
from tabgrid.store.tables import Blob

B = Blob.__table__  # type: ignore[attr-defined]
IMMUTABLE = "public, max-age=31536000, immutable"


class BlobStored(Struct):
    digest: str
    size: int


def _digest(request: Request) -> str:
    digest = request.path_params["digest"]
    if not DIGEST.match(digest):
        raise bad_request(
            f"{digest!r} is not a sha256 digest: a blob's name is the 64 lower-case hex "
            "characters of the sha256 of its bytes"
        )
    return digest


async def put_blob(request: Request) -> Response:
    await auth.uploader(request)
    digest = _digest(request)
    svc = services(request)
    limit = svc.settings.limits.max_blob
    chunks = bounded(request, limit, "a blob")
    try:
        new = await svc.blobs.put_stream(chunks, digest, limit)
    except BlobError as e:
        raise ProblemError(
            400,
            "Digest Mismatch",
            f"{e}: the URL must name the sha256 of exactly the bytes sent",
        ) from None
    size = svc.blobs.size(digest)
    await svc.store.run(_register, digest, size, time.time())
    return json_response(BlobStored(digest, size), 201 if new else 200)


def _register(conn: Connection, digest: str, size: int, now: float) -> None:
    insert_ignore(conn, B, [{"digest": digest, "size": size, "created_at": now}])


async def get_blob(request: Request) -> Response:
    digest = _digest(request)
    svc = services(request)
    path = svc.blobs.path(digest)
    headers = {"Cache-Control": IMMUTABLE}
    if path.is_file():
        return FileResponse(path, media_type="application/octet-stream", headers=headers)
    data = await svc.store.run(blob_rows.read, digest)  # small validated outputs
    if data is None:
        raise not_found(f"blob {digest} is not stored here; upload it with PUT first")
    return Response(data, media_type="application/octet-stream", headers=headers)
