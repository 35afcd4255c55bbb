"""The HTTP API's one route table: every route with its role (enforced here, before its handler
runs), its body and what it returns; served and documented (/openapi.json) from the same rows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tabgrid.api import auth, problems
from tabgrid.api import blobs as api_blobs
from tabgrid.api import console as api_console
from tabgrid.api import embeddings as api_embeddings
from tabgrid.api import jobs as api_jobs
from tabgrid.api import models as api_models
from tabgrid.api import operator as api_operator
from tabgrid.api.io import NO_STORE, json_response, services
from tabgrid.api.openapi import Endpoint, Media, Query, document
from tabgrid.api.problems import ProblemError
from tabgrid.api.roles import Role
from tabgrid.coordinator import console_hub as console
from tabgrid.protocol import (
    AuditLog,
    BanRequest,
    BlobStored,
    EmbedAbout,
    EmbedJob,
    EmbedLayout,
    EmbedRequest,
    Health,
    JobList,
    JobStatus,
    JobSubmit,
    JobSummary,
    ModelImport,
    ModelImported,
    ModelList,
    NoBody,
    PriorityRequest,
    ServerLimits,
    TokenCreate,
    TokenCreated,
    TokenList,
    UnitPage,
    UnitResultLine,
    WorkerAction,
)
from tabgrid.settings import Settings
from tabgrid.store.db import ping

PREFIX = "/api/v1"
Handler = Callable[[Request], Awaitable[Response]]


async def healthz(request: Request) -> Response:
    try:
        await services(request).store.run(ping)
    except Exception as e:
        raise ProblemError(
            503, "Service Unavailable", f"the database does not answer: {type(e).__name__}"
        ) from None
    return json_response(Health(status="ok"))


async def limits(request: Request) -> Response:
    got = services(request).settings.limits
    return json_response(
        ServerLimits(max_units=got.max_units, max_body=got.max_body, max_blob=got.max_blob)
    )


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
_VIEW = (
    Query("sort", "string", "worker column to sort by (default credit)", console.SORTS),
    Query("order", "string", "asc or desc", ("asc", "desc")),
    Query("q", "string", "matches id, name, adapter or address"),
    Query("kind", "string", "browser or native", console.KINDS),
    Query("state", "string", "active, paused, draining, banned or offline", console.STATES),
    api_console.PAGE,
    api_console.PER_PAGE,
)
_WORKER = {"id": api_operator.WORKER_ID}
_WORKER_PATH = f"{PREFIX}/workers/{{id}}"

ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "PUT",
        f"{PREFIX}/blobs/{{digest}}",
        api_blobs.put_blob,
        "Store bytes under their sha256 (checked while streaming); a worker only the outputs "
        "of leases it holds; uploads no job uses yet are bounded and expire",
        body=Media("application/octet-stream", description="the raw bytes"),
        returns=BlobStored,
        status=201,
        also=(200,),
        problems=(400, 413, 429),
        role=Role.WORKER,
    ),
    Endpoint(
        "GET",
        f"{PREFIX}/blobs/{{digest}}",
        api_blobs.get_blob,
        "The bytes of a blob, checked against its digest (immutable; HEAD works too): for its "
        "uploader, the owners of jobs that use it, operators, and workers leased a unit that "
        "names it as an input",
        returns=Media("application/octet-stream", description="the raw bytes"),
        problems=(400, 404, 409),
        role=Role.WORKER,
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
        role=Role.SUBMITTER,
    ),
    Endpoint(
        "GET",
        f"{PREFIX}/limits",
        limits,
        "What one submission may be: units per job, bytes per request body and per blob (the "
        "SDK splits a larger job into several, or refuses it before uploading)",
        returns=ServerLimits,
        role=Role.SUBMITTER,
    ),
    Endpoint(
        "GET",
        f"{PREFIX}/jobs",
        api_jobs.list_jobs,
        "Jobs, newest first (a submitter's own; an operator's all)",
        returns=JobList,
        query=(Query("state", "string", "only jobs in this state", api_jobs.JOB_STATES), _PAGE),
        problems=(400,),
        role=Role.SUBMITTER,
    ),
    Endpoint(
        "GET",
        _JOB,
        api_jobs.get_job,
        "A job's status",
        returns=JobStatus,
        problems=(400, 404),
        role=Role.SUBMITTER,
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
        role=Role.SUBMITTER,
    ),
    Endpoint(
        "GET",
        f"{_JOB}/results",
        api_jobs.results,
        "Validated units' outputs, one JSON line per unit, by index",
        returns=Media("application/x-ndjson", UnitResultLine, "one UnitResultLine per line"),
        query=(_AFTER,),
        problems=(400, 404),
        role=Role.SUBMITTER,
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
        role=Role.SUBMITTER,
    ),
    Endpoint(
        "POST",
        f"{_JOB}/cancel",
        api_jobs.cancel_job,
        "Cancel a job's open units",
        returns=JobStatus,
        problems=(400, 404),
        role=Role.SUBMITTER,
    ),
    Endpoint(
        "POST",
        f"{_JOB}/retry",
        api_jobs.retry_job,
        "Put an ended job's failed units back to pending, each with a new replica budget; "
        "the job runs again (409 while it runs or when no unit failed)",
        body=NoBody,
        returns=JobStatus,
        problems=(400, 404, 409),
        role=Role.SUBMITTER,
    ),
    Endpoint(
        "GET",
        f"{_JOB}/summary",
        api_jobs.summary,
        "What a job cost: wall time, reported GPU time, GFLOP, credit, replicas per unit",
        returns=JobSummary,
        problems=(400, 404),
        role=Role.SUBMITTER,
    ),
    Endpoint(
        "DELETE",
        _JOB,
        api_jobs.delete_job,
        "Delete a job and free the blobs nothing else uses",
        status=204,
        problems=(400, 404),
        role=Role.SUBMITTER,
    ),
    Endpoint(
        "GET",
        f"{PREFIX}/models",
        api_models.list_models,
        "Registered models: name, architecture, embedding dims, max tokens, layers, bytes",
        returns=ModelList,
        role=Role.SUBMITTER,
    ),
    Endpoint(
        "POST",
        f"{PREFIX}/models",
        api_models.import_model,
        "Register a model (operators): a BERT sentence encoder with mean pooling, its "
        "tokenizer.json and float32 weight tensors uploaded first as blobs; the same model "
        "again answers 200",
        body=ModelImport,
        returns=ModelImported,
        status=201,
        also=(200,),
        problems=(400, 401, 403, 409, 413, 422),
        role=Role.OPERATOR,
    ),
    Endpoint(
        "POST",
        f"{PREFIX}/embeddings",
        api_embeddings.create,
        "Embed texts with a registered model: tokenized (truncated at the model's max tokens), "
        "sorted by length and cut into units of an ordinary embed job",
        body=EmbedRequest,
        returns=EmbedJob,
        status=201,
        problems=(400, 404, 413, 422),
        role=Role.SUBMITTER,
    ),
    Endpoint(
        "GET",
        f"{PREFIX}/embeddings/{{id}}",
        api_embeddings.layout,
        "Where each text's embedding is: for each unit (by index) the input positions of its "
        "rows; the texts truncated",
        returns=EmbedLayout,
        problems=(400, 404),
        role=Role.SUBMITTER,
    ),
    Endpoint(
        "GET",
        f"{PREFIX}/embeddings/{{id}}/about",
        api_embeddings.about,
        "What an embedding job computes, and for whom: for its owner, operators, and workers "
        "holding one of its leases (the contribute page shows it)",
        returns=EmbedAbout,
        problems=(400, 404),
        role=Role.WORKER,
    ),
    Endpoint(
        "POST",
        f"{PREFIX}/tokens",
        api_operator.create_token,
        "Create an API token (operators only); the token is shown once",
        body=TokenCreate,
        returns=TokenCreated,
        status=201,
        problems=(400, 413, 422),
        headers=NO_STORE,
        role=Role.OPERATOR,
    ),
    Endpoint(
        "GET",
        f"{PREFIX}/console/stream",
        api_console.stream,
        "Server-sent events: a network snapshot about once a second (operators), until "
        "the token is revoked",
        returns=Media(
            "text/event-stream", description="event: snapshot, data: JSON", events=("snapshot",)
        ),
        query=_VIEW,
        problems=(400, 401, 403, 503),
        role=Role.OPERATOR,
    ),
    Endpoint(
        "GET",
        f"{PREFIX}/workers",
        api_console.workers,
        "One page of the worker table (operators)",
        query=_VIEW,
        problems=(400, 401, 403),
        role=Role.OPERATOR,
    ),
    Endpoint(
        "POST",
        f"{_WORKER_PATH}/ban",
        api_operator.ban_worker,
        "Ban a worker: its leases are released, its unvalidated results discarded",
        body=BanRequest,
        returns=WorkerAction,
        problems=(400, 401, 403, 404, 422),
        params=_WORKER,
        role=Role.OPERATOR,
    ),
    *(
        Endpoint(
            "POST",
            f"{_WORKER_PATH}/{action}",
            handler,
            summary,
            body=NoBody,
            returns=WorkerAction,
            problems=(400, 401, 403, 404),
            params=_WORKER,
            role=Role.OPERATOR,
        )
        for action, handler, summary in (
            ("unban", api_operator.unban_worker, "Lift a worker's ban"),
            ("drain", api_operator.drain_worker, "Let a worker finish its leases, no more"),
            ("undrain", api_operator.undrain_worker, "Give a drained worker work again"),
        )
    ),
    *(
        Endpoint(
            "POST",
            f"{_JOB}/{action}",
            handler,
            summary,
            body=NoBody,
            returns=JobStatus,
            problems=(400, 401, 403, 404, 409),
            role=Role.OPERATOR,
        )
        for action, handler, summary in (
            ("pause", api_operator.pause_job, "Stop leasing a job's units (operators)"),
            ("resume", api_operator.resume_job, "Lease a paused job's units again"),
        )
    ),
    Endpoint(
        "POST",
        f"{_JOB}/priority",
        api_operator.prioritize_job,
        "Set a job's priority: higher runs first (operators)",
        body=PriorityRequest,
        returns=JobStatus,
        problems=(400, 401, 403, 404, 422),
        role=Role.OPERATOR,
    ),
    Endpoint(
        "GET",
        f"{_JOB}/picture.png",
        api_console.job_picture,
        "A mandelbrot job's picture from the tiles validated so far",
        returns=Media("image/png"),
        problems=(400, 404, 422),
        role=Role.SUBMITTER,
    ),
    Endpoint(
        "GET",
        f"{PREFIX}/tokens",
        api_operator.list_tokens,
        "Every token, revoked ones too (operators)",
        returns=TokenList,
        problems=(401, 403),
        role=Role.OPERATOR,
    ),
    Endpoint(
        "DELETE",
        f"{PREFIX}/tokens/{{id}}",
        api_operator.revoke_token,
        "Revoke a token (operators)",
        status=204,
        problems=(400, 401, 403, 404),
        role=Role.OPERATOR,
    ),
    Endpoint(
        "GET",
        f"{PREFIX}/audit",
        api_operator.audit_log,
        "The latest operator actions, newest first",
        returns=AuditLog,
        query=(api_operator.AUDIT_LIMIT,),
        problems=(400, 401, 403),
        role=Role.OPERATOR,
    ),
    Endpoint(
        "GET",
        "/metrics",
        api_operator.metrics,
        "Prometheus metrics (operators)",
        returns=Media("text/plain", description="Prometheus text format 0.0.4"),
        problems=(401, 403),
        role=Role.OPERATOR,
    ),
    Endpoint(
        "GET", "/healthz", healthz, "Liveness", returns=Health, problems=(503,), role=Role.ANONYMOUS
    ),
    Endpoint("GET", "/openapi.json", openapi_json, "This document", role=Role.ANONYMOUS),
]


def routes() -> list[Route]:
    """One route per path, so a wrong method gets a 405 that lists every allowed one."""
    by_path: dict[str, dict[str, Handler]] = {}
    for ep in ENDPOINTS:
        by_path.setdefault(ep.path, {})[ep.method] = _guarded(ep)
    return [
        Route(path, _dispatch(handlers), methods=list(handlers))
        for path, handlers in by_path.items()
    ]


def _guarded(ep: Endpoint) -> Handler:
    """The one place a route's role is enforced: the handler runs only for a caller the role
    admits, and finds that caller with auth.caller(request)."""
    handler, role = ep.handler, ep.role

    async def endpoint(request: Request) -> Response:
        request.state.caller = await auth.admit(request, role)
        return await handler(request)

    return endpoint


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
