"""Batch jobs over HTTP: submit, watch, page through units and results, cancel, retry,
delete, and a job's summary (time, GFLOP, credit, replicas).

A submitter sees only its own jobs: another owner's job answers 404, exactly like a job that
does not exist, so ids reveal nothing. Operators see every job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import get_args

import msgspec
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tabgrid import kernels
from tabgrid.api import auth, submission
from tabgrid.api import blobs as api_blobs
from tabgrid.api.auth import while_authorised
from tabgrid.api.io import (
    choice_param,
    decode,
    encode,
    int_param,
    json_response,
    path_int,
    read_body,
    services,
)
from tabgrid.api.openapi import Query
from tabgrid.api.problems import ProblemError, not_found
from tabgrid.coordinator.rules import credit
from tabgrid.protocol import (
    INT32_MAX,
    JobList,
    JobState,
    JobStatus,
    JobSubmit,
    JobSummary,
    NoBody,
    Output,
    Policy,
    UnitPage,
    UnitResultLine,
    UnitState,
)
from tabgrid.store import audit, jobs, tokens
from tabgrid.store.codec import loads_inputs
from tabgrid.store.tokens import Principal

RESULTS_PAGE = 1000
EVENT_INTERVAL_S = 1.0
JOB_STATES = get_args(JobState)
UNIT_STATES = get_args(UnitState)
FINAL = frozenset(jobs.FINAL_JOB_STATES)

_submit_decoder = msgspec.json.Decoder(JobSubmit)

# Documented in /openapi.json (api.ENDPOINTS) and parsed here from the same declarations.
LIMIT = Query("limit", "integer", "page size (capped at the coordinator's max_page)", minimum=1)
AFTER = Query(
    "after",
    "integer",
    "only units with an index greater than this",
    minimum=-1,
    maximum=INT32_MAX,  # compared with the unit index column
)


# ---- reads inside one transaction -------------------------------------------------------------


def _visible(conn: Connection, job_id: int, who: Principal) -> dict | None:
    job = jobs.job_record(conn, job_id)
    if job is None or not (who.is_operator or job["owner_id"] == who.id):
        return None
    return job


def _status_of(conn: Connection, job: dict, now: float) -> JobStatus:
    return jobs.status_of(conn, job, tokens.name_of(conn, job["owner_id"]), now)


def _status(conn: Connection, job_id: int, who: Principal, now: float) -> JobStatus | None:
    job = _visible(conn, job_id, who)
    return None if job is None else _status_of(conn, job, now)


def _idempotent(conn: Connection, who: Principal, key: str, now: float) -> JobStatus | None:
    job_id = jobs.find_idempotent(conn, who.id, key)
    return None if job_id is None else _status(conn, job_id, who, now)


def _missing(job_id: int) -> ProblemError:
    return not_found(f"job {job_id} does not exist or belongs to someone else")


async def _job_status(request: Request, job_id: int, who: Principal) -> JobStatus:
    status = await services(request).store.run(_status, job_id, who, time.time())
    if status is None:
        raise _missing(job_id)
    return status


# ---- submit -----------------------------------------------------------------------------------


async def submit_job(request: Request) -> Response:
    who = auth.caller(request)
    svc = services(request)
    limits = svc.settings.limits
    body = await read_body(request, limits.max_body, "a job submission")
    submit = await asyncio.to_thread(decode, body, JobSubmit, _submit_decoder)
    if len(submit.units) > limits.max_units:
        raise ProblemError(
            413,
            "Too Many Units",
            f"a job may have at most {limits.max_units} units (this one has "
            f"{len(submit.units)}); split it into several jobs",
        )
    if submit.idempotency_key is not None:
        found = await svc.store.run(_idempotent, who, submit.idempotency_key, time.time())
        if found is not None:
            return json_response(found, 200, _location(found.id))
    # Only blobs this submitter may read count as stored (api_blobs.readable_store).
    blobs = await api_blobs.readable_store(svc, who, submit)
    errors = await asyncio.to_thread(submission.check, submit, blobs)
    if errors:
        raise ProblemError(
            422,
            "Job Rejected",
            f"{len(errors)} problem(s) in the submission; nothing was stored. Fix each one "
            "listed in errors and submit again",
            errors,
        )
    return await _create(request, who, submit)


async def _create(request: Request, who: Principal, submit: JobSubmit) -> Response:
    svc = services(request)
    try:
        job_id = await svc.store.run(jobs.create_job, who.id, submit, time.time())
    except IntegrityError:
        # The same idempotency key raced in from a second request: that one won.
        key = submit.idempotency_key
        found = key and await svc.store.run(_idempotent, who, key, time.time())
        if not found:
            raise
        return json_response(found, 200, _location(found.id))
    svc.scheduler.poke()
    status = await _job_status(request, job_id, who)
    return json_response(status, 201, _location(job_id))


def _location(job_id: int) -> dict[str, str]:
    return {"Location": f"/api/v1/jobs/{job_id}"}


# ---- read -------------------------------------------------------------------------------------


async def list_jobs(request: Request) -> Response:
    who = auth.caller(request)
    svc = services(request)
    state = choice_param(request, "state", JOB_STATES)
    limit = int_param(request, LIMIT, 100, svc.settings.limits.max_page)
    listed = await svc.store.run(_list, who, state, limit, time.time())
    return json_response(listed)


def _list(conn: Connection, who: Principal, state: str | None, limit: int, now: float) -> JobList:
    rows = jobs.list_jobs(conn, None if who.is_operator else who.id, state, limit)
    names: dict[int | None, str] = {}
    out = []
    for job in rows:
        owner = job["owner_id"]
        if owner not in names:
            names[owner] = tokens.name_of(conn, owner)
        out.append(jobs.status_of(conn, job, names[owner], now))
    return JobList(jobs=out)


async def get_job(request: Request) -> Response:
    who = auth.caller(request)
    return json_response(await _job_status(request, path_int(request, "id"), who))


async def list_units(request: Request) -> Response:
    who = auth.caller(request)
    svc = services(request)
    job_id = path_int(request, "id")
    state = choice_param(request, "state", UNIT_STATES)
    after = int_param(request, AFTER, -1)
    limit = int_param(request, LIMIT, 500, svc.settings.limits.max_page)
    page = await svc.store.run(_units, job_id, who, state, after, limit)
    if page is None:
        raise _missing(job_id)
    return json_response(page)


def _units(
    conn: Connection, job_id: int, who: Principal, state: str | None, after: int, limit: int
) -> UnitPage | None:
    job = _visible(conn, job_id, who)
    if job is None:
        return None
    policy = msgspec.json.decode(job["policy"], type=Policy)
    units = jobs.list_units(conn, job_id, policy, state, after, limit)
    next_after = units[-1].index if len(units) == limit else None
    return UnitPage(units=units, next_after=next_after)


async def results(request: Request) -> Response:
    who = auth.caller(request)
    job_id = path_int(request, "id")
    after = int_param(request, AFTER, -1)
    await _job_status(request, job_id, who)
    # The first page is read before the status line goes out: a failure there is a problem
    # response, not a 200 cut off mid-body.
    store = services(request).store
    first = await store.run(jobs.done_outputs, job_id, after, RESULTS_PAGE)
    lines = _result_lines(request, job_id, first)
    return StreamingResponse(
        while_authorised(request, lines, abort=True), media_type="application/x-ndjson"
    )


async def _result_lines(
    request: Request, job_id: int, page: list[tuple[int, dict[str, Output], int]]
) -> AsyncIterator[bytes]:
    store = services(request).store
    while page:
        # Small outputs carry their bytes (kept in their unit's row); the rest are blob refs.
        lines = [encode(UnitResultLine(i, out, rev)) for i, out, rev in page]
        yield b"\n".join(lines) + b"\n"
        if len(page) < RESULTS_PAGE:
            return
        page = await store.run(jobs.done_outputs, job_id, page[-1][0], RESULTS_PAGE)


async def events(request: Request) -> Response:
    who = auth.caller(request)
    job_id = path_int(request, "id")
    first = await _job_status(request, job_id, who)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    stream = while_authorised(request, _event_stream(request, who, first))
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


async def _event_stream(request: Request, who: Principal, status: JobStatus) -> AsyncIterator[str]:
    store = services(request).store
    job_id = status.id
    while True:
        data = encode(status).decode()
        yield f"event: progress\ndata: {data}\n\n"
        if status.state in FINAL:
            yield f"event: end\ndata: {data}\n\n"
            return
        await asyncio.sleep(EVENT_INTERVAL_S)
        if await request.is_disconnected():
            return
        latest = await store.run(_status, job_id, who, time.time())
        if latest is None:
            yield "event: end\ndata: null\n\n"  # deleted while watched
            return
        status = latest


async def summary(request: Request) -> Response:
    who = auth.caller(request)
    job_id = path_int(request, "id")
    found = await services(request).store.run(_summary_rows, job_id, who)
    if found is None:
        raise _missing(job_id)
    job, rows = found
    return json_response(await asyncio.to_thread(_summarise, job, rows, time.time()))


def _summary_rows(conn: Connection, job_id: int, who: Principal) -> tuple[dict, dict] | None:
    job = _visible(conn, job_id, who)
    return None if job is None else (job, jobs.summary_rows(conn, job_id))


def _summarise(job: dict, rows: dict, now: float) -> JobSummary:
    """GFLOP: each validated unit's work once, by its kernel's own count (the one credit is
    granted by); credit: that work once per valid replica, as the workers were paid."""
    try:
        kernel = kernels.get(job["kernel"])
    except Exception:  # a kernel this coordinator no longer has: no work to count
        kernel = None
    job_params = msgspec.json.decode(job["params"])
    job_inputs = loads_inputs(job["inputs"])
    gflop = paid = 0.0
    for params, inputs, state, valid in rows["units"]:
        if kernel is None or (state != "done" and not valid):
            continue
        refs = job_inputs | loads_inputs(inputs)
        shapes = {k: (r.dtype, tuple(r.shape)) for k, r in refs.items()}
        work = credit(kernel, job_params | msgspec.json.decode(params), shapes)
        gflop += work if state == "done" else 0.0
        paid += work * valid
    by_state = rows["by_state"]
    replicas = sum(n for n, _ in by_state.values())
    start = job["created_at"]
    return JobSummary(
        id=job["id"],
        state=job["state"],
        units=job["n_units"],
        wall_s=(job["finished_at"] or now) - start,
        compute_s=sum(ms for _, ms in by_state.values()) / 1000,
        gflop=gflop,
        credit=paid,
        replicas=replicas,
        replicas_per_unit=replicas / job["n_units"] if job["n_units"] else 0.0,
        valid=by_state.get("valid", (0, 0))[0],
        invalid=by_state.get("invalid", (0, 0))[0],
        errors=rows["errors"],
        workers=rows["workers"],
    )


# ---- change -----------------------------------------------------------------------------------


async def retry_job(request: Request) -> Response:
    who = auth.caller(request)
    svc = services(request)
    job_id = path_int(request, "id")
    decode(await read_body(request, 1024, "a retry request") or b"{}", NoBody)
    status = await svc.store.run(_retry, job_id, who, time.time())
    if status is None:
        raise _missing(job_id)
    svc.scheduler.poke()
    return json_response(status)


def _retry(conn: Connection, job_id: int, who: Principal, now: float) -> JobStatus | None:
    job = _visible(conn, job_id, who)
    if job is None:
        return None
    if job["state"] not in FINAL:
        raise ProblemError(
            409,
            "Conflict",
            f"job {job_id} is {job['state']}: only an ended job (done, failed or cancelled) "
            "has its failed units retried; wait for it to end, or cancel it first",
        )
    policy = msgspec.json.decode(job["policy"], type=Policy)
    n = jobs.retry_failed(conn, job_id, policy.first_replicas, now)
    if n == 0:
        raise ProblemError(
            409, "Conflict", f"job {job_id} has no failed units to retry (it is {job['state']})"
        )
    if who.is_operator and job["owner_id"] != who.id:
        audit.record(conn, who, "retry", f"job {job_id}", f"{n} failed unit(s) retried", now)
    return _status_of(conn, jobs.job_record(conn, job_id) or job, now)


async def cancel_job(request: Request) -> Response:
    who = auth.caller(request)
    svc = services(request)
    job_id = path_int(request, "id")
    done = await svc.store.run(_cancel, job_id, who, time.time())
    if done is None:
        raise _missing(job_id)
    pairs, status = done
    if pairs:
        svc.scheduler.cancelled(pairs, "job cancelled")
    return json_response(status)


def _cancel(
    conn: Connection, job_id: int, who: Principal, now: float
) -> tuple[list[tuple[int, str]], JobStatus] | None:
    job = _visible(conn, job_id, who)
    if job is None:
        return None
    pairs = _stop(conn, job, who, "cancel", now)
    return pairs, _status_of(conn, jobs.job_record(conn, job_id) or job, now)


async def delete_job(request: Request) -> Response:
    who = auth.caller(request)
    svc = services(request)
    job_id = path_int(request, "id")
    done = await svc.store.run(_retire, job_id, who, time.time())
    if done is None:
        raise _missing(job_id)
    pairs, digests = done
    if pairs:
        svc.scheduler.cancelled(pairs, "job deleted")
    svc.scheduler.forget_job(job_id)
    await api_blobs.free(svc, digests)
    return Response(status_code=204)


def _retire(
    conn: Connection, job_id: int, who: Principal, now: float
) -> tuple[list[tuple[int, str]], list[str]] | None:
    job = _visible(conn, job_id, who)
    if job is None:
        return None
    pairs = _stop(conn, job, who, "delete", now)
    return pairs, jobs.retire_job(conn, job_id)


def _stop(
    conn: Connection, job: dict, who: Principal, action: str, now: float
) -> list[tuple[int, str]]:
    """Cancels the job's open units (a cancel, or the first step of a delete); an operator
    acting on someone else's job is written to the audit log under ``action``."""
    job_id = job["id"]
    pairs = [] if job["state"] in FINAL else jobs.cancel_job(conn, job_id, now)
    if who.is_operator and job["owner_id"] != who.id:
        audit.record(conn, who, action, f"job {job_id}", f"was {job['state']}", now)
    return pairs
