"""The HTTP API: the route table (served and documented from one list), tokens, health."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
from sqlalchemy import Connection, text
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tabgrid.api import auth, problems
from tabgrid.api import blobs as api_blobs
from tabgrid.api import jobs as api_jobs
from tabgrid.api import operator_routes as api_operator_table
from tabgrid.api.blobs import BlobStored
from tabgrid.api.io import NO_STORE, decode, json_response, read_body, services
from tabgrid.api.openapi import Endpoint, Media, Query, document
from tabgrid.api.problems import ProblemError
from tabgrid.protocol import (
    JobList,
    JobStatus,
    JobSubmit,
    TokenCreate,
    TokenCreated,
    UnitPage,
    UnitResultLine,
)
from tabgrid.settings import Settings
from tabgrid.store import audit, tokens

PREFIX = "/api/v1"
Handler = Callable[[Request], Awaitable[Response]]
_token_decoder = msgspec.json.Decoder(TokenCreate)


class Health(msgspec.Struct):
    status: str


async def create_token(request: Request) -> Response:
    who = await auth.principal(request, auth.OPERATOR)
    svc = services(request)
    body = await read_body(request, svc.settings.limits.max_body)
    want = decode(body, TokenCreate, _token_decoder)
    token_id, token = await svc.store.run(_create_token, want, who, time.time())
    created = TokenCreated(id=token_id, role=want.role, name=want.name, token=token)
    return json_response(created, 201, NO_STORE)  # the secret, once: no cache may keep it


def _create_token(
    conn: Connection, want: TokenCreate, who: tokens.Principal, now: float
) -> tuple[int, str]:
    token_id, token = tokens.create(conn, want.role, want.name, now)
    audit.record(conn, who, "create token", f"token {token_id}", f"{want.role} {want.name!r}", now)
    return token_id, token


async def healthz(request: Request) -> Response:
    try:
        await services(request).store.run(_ping)
    except Exception as e:
        raise ProblemError(
            503, "Service Unavailable", f"the database does not answer: {type(e).__name__}"
        ) from None
    return json_response(Health(status="ok"))


def _ping(conn: Connection) -> None:
    conn.execute(text("SELECT 1"))


async def openapi_json(request: Request) -> Response:
    return Response(_openapi_bytes(), media_type="application/json")


@cache
def _openapi_bytes() -> bytes:
    return msgspec.json.encode(document(ENDPOINTS, "tabgrid coordinator", _version()))


def _version() -> str:
    try:
        return version("tabgrid")
    except PackageNotFoundError:
        return "0+unknown"


_PAGE = api_jobs.LIMIT
_AFTER = api_jobs.AFTER
_JOB = f"{PREFIX}/jobs/{{id}}"

ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "PUT",
        f"{PREFIX}/blobs/{{digest}}",
        api_blobs.put_blob,
        "Store bytes under their sha256 (checked while streaming); a worker only the outputs "
        "of leases it holds; uploads no job uses yet are bounded and expire",
        auth=("bearer", "worker"),
        body=Media("application/octet-stream", description="the raw bytes"),
        returns=BlobStored,
        status=201,
        also=(200,),
        problems=(400, 413, 429),
    ),
    Endpoint(
        "GET",
        f"{PREFIX}/blobs/{{digest}}",
        api_blobs.get_blob,
        "The bytes of a blob, checked against its digest (immutable; HEAD works too): for its "
        "uploader, the owners of jobs that use it, operators, and workers leased a unit that "
        "names it as an input",
        auth=("bearer", "worker"),
        returns=Media("application/octet-stream", description="the raw bytes"),
        problems=(400, 404, 409),
    ),
    Endpoint(
        "POST",
        f"{PREFIX}/jobs",
        api_jobs.submit_job,
        "Submit a job (200 with the existing job for a repeated idempotency_key)",
        body=JobSubmit,
        returns=JobStatus,
        status=201,
        also=(200,),
        problems=(400, 413, 422),
    ),
    Endpoint(
        "GET",
        f"{PREFIX}/jobs",
        api_jobs.list_jobs,
        "Jobs, newest first (a submitter's own; an operator's all)",
        returns=JobList,
        query=(Query("state", "string", "only jobs in this state", api_jobs.JOB_STATES), _PAGE),
        problems=(400,),
    ),
    Endpoint(
        "GET", _JOB, api_jobs.get_job, "A job's status", returns=JobStatus, problems=(400, 404)
    ),
    Endpoint(
        "GET",
        f"{_JOB}/units",
        api_jobs.list_units,
        "A page of a job's units, by index",
        returns=UnitPage,
        query=(
            Query("state", "string", "only units in this state", api_jobs.UNIT_STATES),
            _AFTER,
            _PAGE,
        ),
        problems=(400, 404),
    ),
    Endpoint(
        "GET",
        f"{_JOB}/results",
        api_jobs.results,
        "Validated units' outputs, one JSON line per unit, by index",
        returns=Media("application/x-ndjson", UnitResultLine, "one UnitResultLine per line"),
        query=(_AFTER,),
        problems=(400, 404),
    ),
    Endpoint(
        "GET",
        f"{_JOB}/events",
        api_jobs.events,
        "Server-sent events: 'progress' with a JobStatus about once a second, then 'end' "
        "(data null if the job was deleted); the stream stops when its token is revoked",
        returns=Media(
            "text/event-stream",
            JobStatus | None,
            "event: progress|end, data: JobStatus",
            events=("progress", "end"),
        ),
        problems=(400, 404),
    ),
    Endpoint(
        "POST",
        f"{_JOB}/cancel",
        api_jobs.cancel_job,
        "Cancel a job's open units",
        returns=JobStatus,
        problems=(400, 404),
    ),
    Endpoint(
        "DELETE",
        _JOB,
        api_jobs.delete_job,
        "Delete a job and free the blobs nothing else uses",
        status=204,
        problems=(400, 404),
    ),
    Endpoint(
        "POST",
        f"{PREFIX}/tokens",
        create_token,
        "Create an API token (operators only); the token is shown once",
        body=TokenCreate,
        returns=TokenCreated,
        status=201,
        problems=(400, 413, 422),
        headers=NO_STORE,
    ),
    *api_operator_table.endpoints(PREFIX, _JOB),
    Endpoint("GET", "/healthz", healthz, "Liveness", auth=(), returns=Health, problems=(503,)),
    Endpoint("GET", "/openapi.json", openapi_json, "This document", auth=()),
]


def routes() -> list[Route]:
    """One route per path, so a wrong method gets a 405 that lists every allowed one."""
    by_path: dict[str, dict[str, Handler]] = {}
    for ep in ENDPOINTS:
        by_path.setdefault(ep.path, {})[ep.method] = ep.handler
    return [
        Route(path, _dispatch(handlers), methods=list(handlers))
        for path, handlers in by_path.items()
    ]


def _dispatch(handlers: dict[str, Handler]) -> Handler:
    if len(handlers) == 1:
        return next(iter(handlers.values()))

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return endpoint


def exception_handlers() -> dict[Any, Any]:
    return problems.exception_handlers()


def middleware(settings: Settings) -> list[Middleware]:
    """None: bounds are enforced where bodies are read, so the websocket path pays nothing."""
    return []
