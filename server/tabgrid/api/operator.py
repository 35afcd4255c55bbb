"""Operator actions over HTTP: ban, drain, pause/resume/priority, tokens, the audit log.

Each action and its audit entry are written in one transaction, then the live side (the
scheduler's connections) is told.
"""

from __future__ import annotations

import re
import time

import msgspec
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from tabgrid.api import auth
from tabgrid.api.io import (
    NO_STORE,
    decode,
    int_param,
    json_response,
    path_int,
    read_body,
    services,
)
from tabgrid.api.openapi import Query
from tabgrid.api.problems import ProblemError, not_found
from tabgrid.protocol import (
    AuditLine,
    AuditLog,
    BanRequest,
    JobStatus,
    NoBody,
    PriorityRequest,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    TokenList,
    WorkerAction,
)
from tabgrid.store import audit, bans, job_controls, jobs, tokens
from tabgrid.store.tokens import Principal

MAX_AUDIT = 500
AUDIT_LIMIT = Query("limit", "integer", f"entries, at most {MAX_AUDIT} (capped)", minimum=1)
# Worker ids are uuid4 hex; this is what the path accepts, and what /openapi.json says.
WORKER_ID = {"type": "string", "pattern": "^[0-9A-Za-z]{1,64}$"}
_WORKER_ID = re.compile(WORKER_ID["pattern"])


async def _body[T](request: Request, type_: type[T]) -> T:
    body = await read_body(request, 64 * 1024, "an operator request")
    return decode(body or b"{}", type_)


def _worker_id(request: Request) -> str:
    wid = request.path_params["id"]
    if _WORKER_ID.fullmatch(wid) is None:  # str.isalnum() would take any script's letters
        raise ProblemError(
            400, "Bad Request", f"{wid[:80]!r} is not a worker id (1 to 64 ASCII letters/digits)"
        )
    return wid


# ---- workers ------------------------------------------------------------------------------


async def ban_worker(request: Request) -> Response:
    who = auth.caller(request)
    wid = _worker_id(request)
    reason = (await _body(request, BanRequest)).reason.strip()
    svc = services(request)
    done = await svc.store.run(_ban, wid, reason, who, time.time())
    svc.scheduler.banned(wid, reason)
    return json_response(WorkerAction(wid, "ban", released=done.released, discarded=done.discarded))


def _ban(conn: Connection, wid: str, reason: str, who: Principal, now: float) -> bans.Banned:
    _known(conn, wid)
    done = bans.ban(conn, wid, reason, now)
    detail = f"{reason} ({done.released} leases released, {done.discarded} results discarded)"
    audit.record(conn, who, "ban", f"worker {wid}", detail, now)
    return done


def _known(conn: Connection, wid: str) -> None:
    if not bans.exists(conn, wid):
        raise not_found(f"no worker {wid} is known to this coordinator")


def _worker_action(action: str):  # type: ignore[no-untyped-def]
    """unban, drain, undrain: a flag in the store, an audit entry, the live connection told."""

    async def endpoint(request: Request) -> Response:
        who = auth.caller(request)
        wid = _worker_id(request)
        await _body(request, NoBody)
        svc = services(request)
        await svc.store.run(_flag, wid, action, who, time.time())
        if action in ("drain", "undrain"):
            svc.scheduler.set_draining(wid, action == "drain")
        return json_response(WorkerAction(wid, action))

    endpoint.__name__ = f"{action}_worker"
    return endpoint


def _flag(conn: Connection, wid: str, action: str, who: Principal, now: float) -> None:
    _known(conn, wid)
    if action == "unban":
        bans.unban(conn, wid)
    else:
        bans.set_draining(conn, wid, action == "drain")
    audit.record(conn, who, action, f"worker {wid}", "", now)


unban_worker = _worker_action("unban")
drain_worker = _worker_action("drain")
undrain_worker = _worker_action("undrain")


# ---- jobs ---------------------------------------------------------------------------------


def _job_action(action: str):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> Response:
        who = auth.caller(request)
        job_id = path_int(request, "id")
        if action == "priority":
            change: int | None = (await _body(request, PriorityRequest)).priority
        else:
            await _body(request, NoBody)
            change = None
        svc = services(request)
        status = await svc.store.run(_on_job, job_id, action, change, who, time.time())
        svc.scheduler.poke()
        return json_response(status)

    endpoint.__name__ = f"{action}_job"
    return endpoint


def _on_job(
    conn: Connection, job_id: int, action: str, priority: int | None, who: Principal, now: float
) -> JobStatus:
    job = jobs.job_record(conn, job_id)
    if job is None:
        raise not_found(f"job {job_id} does not exist")
    if priority is not None:
        job_controls.set_priority(conn, job_id, priority, now)
        detail = f"{job['priority']} -> {priority}"
    else:
        refused = job_controls.transition(conn, job_id, action, now)
        if refused:
            raise ProblemError(409, "Conflict", refused)
        detail = ""
    audit.record(conn, who, action, f"job {job_id}", detail, now)
    record = jobs.job_record(conn, job_id) or job
    return jobs.status_of(conn, record, tokens.name_of(conn, record["owner_id"]), now)


pause_job = _job_action("pause")
resume_job = _job_action("resume")
prioritize_job = _job_action("priority")


# ---- tokens and the audit log ---------------------------------------------------------------


_token_decoder = msgspec.json.Decoder(TokenCreate)


async def create_token(request: Request) -> Response:
    who = auth.caller(request)
    svc = services(request)
    body = await read_body(request, svc.settings.limits.max_body)
    want = decode(body, TokenCreate, _token_decoder)
    now = time.time()
    expires = None if want.expires_in_s is None else now + want.expires_in_s
    token_id, token = await svc.store.run(_create_token, want, who, now, expires)
    created = TokenCreated(
        id=token_id, role=want.role, name=want.name, token=token, expires_at=expires
    )
    return json_response(created, 201, NO_STORE)  # the secret, once: no cache may keep it


def _create_token(
    conn: Connection, want: TokenCreate, who: Principal, now: float, expires: float | None
) -> tuple[int, str]:
    token_id, token = tokens.create(conn, want.role, want.name, now, expires)
    detail = f"{want.role} {want.name!r}"
    if expires is not None:
        detail += f", expires {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(expires))}"
    audit.record(conn, who, "create token", f"token {token_id}", detail, now)
    return token_id, token


async def list_tokens(request: Request) -> Response:
    rows = await services(request).store.run(tokens.list_all)
    return json_response(TokenList([msgspec.convert(r, TokenInfo) for r in rows]))


async def revoke_token(request: Request) -> Response:
    who = auth.caller(request)
    token_id = path_int(request, "id")
    await services(request).store.run(_revoke, token_id, who, time.time())
    return Response(status_code=204)


def _revoke(conn: Connection, token_id: int, who: Principal, now: float) -> None:
    if not tokens.revoke(conn, token_id, now):
        raise not_found(f"token {token_id} does not exist or is already revoked")
    audit.record(conn, who, "revoke", f"token {token_id}", "", now)


async def audit_log(request: Request) -> Response:
    limit = int_param(request, AUDIT_LIMIT, 50, MAX_AUDIT)
    rows = await services(request).store.run(audit.recent, limit)
    return json_response(AuditLog([msgspec.convert(r, AuditLine) for r in rows]))


async def metrics(request: Request) -> Response:
    body = services(request).telemetry.exposition()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
