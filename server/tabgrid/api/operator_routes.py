"""The operator endpoints' rows of the API table (served and documented with the rest)."""

from __future__ import annotations

from tabgrid.api import console as api_console
from tabgrid.api import operator as api_operator
from tabgrid.api.openapi import Endpoint, Media, Query
from tabgrid.coordinator import console_hub as console
from tabgrid.operator_bodies import (
    AuditLog,
    BanRequest,
    NoBody,
    PriorityRequest,
    TokenList,
    WorkerAction,
)
from tabgrid.protocol import JobStatus

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


def endpoints(prefix: str, job: str) -> list[Endpoint]:
    worker = f"{prefix}/workers/{{id}}"
    return [
        Endpoint(
            "GET",
            f"{prefix}/console/stream",
            api_console.stream,
            "Server-sent events: a network snapshot about once a second (operators), until "
            "the token is revoked",
            returns=Media(
                "text/event-stream", description="event: snapshot, data: JSON", events=("snapshot",)
            ),
            query=_VIEW,
            problems=(400, 401, 403, 503),
        ),
        Endpoint(
            "GET",
            f"{prefix}/workers",
            api_console.workers,
            "One page of the worker table (operators)",
            query=_VIEW,
            problems=(400, 401, 403),
        ),
        Endpoint(
            "POST",
            f"{worker}/ban",
            api_operator.ban_worker,
            "Ban a worker: its leases are released, its unvalidated results discarded",
            body=BanRequest,
            returns=WorkerAction,
            problems=(400, 401, 403, 404, 422),
            params=_WORKER,
        ),
        *(
            Endpoint(
                "POST",
                f"{worker}/{action}",
                handler,
                summary,
                body=NoBody,
                returns=WorkerAction,
                problems=(400, 401, 403, 404),
                params=_WORKER,
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
                f"{job}/{action}",
                handler,
                summary,
                body=NoBody,
                returns=JobStatus,
                problems=(400, 401, 403, 404, 409),
            )
            for action, handler, summary in (
                ("pause", api_operator.pause_job, "Stop leasing a job's units (operators)"),
                ("resume", api_operator.resume_job, "Lease a paused job's units again"),
            )
        ),
        Endpoint(
            "POST",
            f"{job}/priority",
            api_operator.prioritize_job,
            "Set a job's priority: higher runs first (operators)",
            body=PriorityRequest,
            returns=JobStatus,
            problems=(400, 401, 403, 404, 422),
        ),
        Endpoint(
            "GET",
            f"{job}/picture.png",
            api_console.job_picture,
            "A mandelbrot job's picture from the tiles validated so far",
            returns=Media("image/png"),
            problems=(400, 404, 422),
        ),
        Endpoint(
            "GET",
            f"{prefix}/tokens",
            api_operator.list_tokens,
            "Every token, revoked ones too (operators)",
            returns=TokenList,
            problems=(401, 403),
        ),
        Endpoint(
            "DELETE",
            f"{prefix}/tokens/{{id}}",
            api_operator.revoke_token,
            "Revoke a token (operators)",
            status=204,
            problems=(400, 401, 403, 404),
        ),
        Endpoint(
            "GET",
            f"{prefix}/audit",
            api_operator.audit_log,
            "The latest operator actions, newest first",
            returns=AuditLog,
            query=(api_operator.AUDIT_LIMIT,),
            problems=(400, 401, 403),
        ),
        Endpoint(
            "GET",
            "/metrics",
            api_operator.metrics,
            "Prometheus metrics (operators)",
            returns=Media("text/plain", description="Prometheus text format 0.0.4"),
            problems=(401, 403),
        ),
    ]
