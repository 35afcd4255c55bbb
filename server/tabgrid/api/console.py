"""The console's reads: the live stream, the worker table, a mandelbrot job's picture."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tabgrid.api import auth, picture
from tabgrid.api.auth import while_authorised
from tabgrid.api.io import int_param, path_int, services
from tabgrid.api.openapi import Query
from tabgrid.api.problems import ProblemError, not_found
from tabgrid.blobs import BlobStore
from tabgrid.coordinator.console_hub import View, ViewError
from tabgrid.store import blob_rows, jobs
from tabgrid.store.codec import loads, loads_outputs

MAX_STREAMS = 64  # concurrent console streams per coordinator
PAGE = Query("page", "integer", "page number, from 0 (capped at 1000000)")
PER_PAGE = Query("per_page", "integer", "rows per page, at most 100 (capped)")


def _view(request: Request) -> View:
    """The worker table's view; its numbers are checked here first, as every query integer
    is (View.parse alone would take '²' for a digit)."""
    for q in (PAGE, PER_PAGE):
        int_param(request, q, 0)
    try:
        return View.parse(request.query_params)
    except ViewError as e:
        raise ProblemError(400, "Bad Request", str(e)) from None


async def stream(request: Request) -> Response:
    """Server-sent events: a 'snapshot' about once a second (see coordinator/console_hub.py),
    for as long as the operator's token holds."""
    view = _view(request)
    svc = services(request)
    hub = svc.hub
    if hub.viewers >= MAX_STREAMS:
        raise ProblemError(503, "Service Unavailable", f"{MAX_STREAMS} consoles are open already")
    hub.viewers += 1  # now, so that streams opening together all count

    async def events() -> AsyncIterator[bytes]:
        try:
            tick, since = -1, None
            while True:
                tick = await hub.wait_after(tick)
                body = hub.snapshot(view, since)
                since = hub.latest.t if hub.latest else None
                yield b"event: snapshot\ndata: " + body + b"\n\n"
        finally:
            hub.viewers -= 1

    # A revoked token ends the stream within a second or two: the console signs in again.
    snapshots = while_authorised(request, events(), (auth.OPERATOR,))
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(snapshots, media_type="text/event-stream", headers=headers)


async def workers(request: Request) -> Response:
    """One page of the worker table, as of the last tick (the same rows the stream pages)."""
    hub = services(request).hub
    if hub.latest is None:
        await hub.wait_after(-1)
    page = hub.workers_page(_view(request))
    return Response(msgspec.json.encode(page), media_type="application/json")


async def job_picture(request: Request) -> Response:
    who = auth.caller(request)
    job_id = path_int(request, "id")
    svc = services(request)
    tiles = await svc.store.run(_tiles, job_id, who, svc.blobs)
    try:
        # Seconds for a large picture: not on the event loop that serves the workers.
        png = await asyncio.to_thread(picture.render, tiles)
    except picture.PictureError as e:
        raise ProblemError(422, "Unprocessable Content", str(e)) from None
    return Response(png, media_type="image/png", headers={"cache-control": "no-store"})


def _tiles(
    conn: Connection, job_id: int, who: Any, blobs: BlobStore
) -> list[tuple[dict, Any | None]]:
    import numpy as np

    job = jobs.picture_job(conn, job_id)
    if job is None or not (who.is_operator or job.owner_id == who.id):
        raise not_found(f"job {job_id} does not exist")
    if job.kernel != "mandelbrot":
        raise ProblemError(
            422, "Unprocessable Content", f"job {job_id} is {job.kernel}, not a picture"
        )
    if job.n_units > picture.MAX_TILES:
        raise ProblemError(422, "Unprocessable Content", f"job {job_id} has too many tiles to draw")
    base = loads(job.params)
    tiles = []
    for params, state, outputs in jobs.unit_outputs(conn, job_id):
        merged = base | loads(params)
        iters = None
        if state == "done" and outputs:
            out = loads_outputs(outputs).get("iters")
            if out is not None:
                data = out.data  # small ones live in their unit's row
                if data is None:
                    data = blob_rows.read(conn, out.digest) or blobs.read(out.digest)
                iters = np.frombuffer(data, dtype="<u4").reshape(out.shape)
        tiles.append((merged, iters))
    return tiles
