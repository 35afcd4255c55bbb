"""Who is asking: bearer tokens with roles, and workers' own credentials for blob uploads."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from sqlalchemy import Connection
from starlette.requests import Request

from tabgrid.api.io import services
from tabgrid.api.problems import ProblemError
from tabgrid.api.roles import Role
from tabgrid.store import tokens, workers
from tabgrid.store.tokens import Principal
from tabgrid.store.uploads import Owner

SUBMITTER = "submitter"
OPERATOR = "operator"
ANY_ROLE = (SUBMITTER, OPERATOR)

RECHECK_S = 1.0  # a long response checks its token again at least this often
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tabgrid"'}
_INVALID = {"WWW-Authenticate": 'Bearer realm="tabgrid", error="invalid_token"'}


def _unauthorized(detail: str, headers: dict[str, str]) -> ProblemError:
    return ProblemError(401, "Unauthorized", detail, headers=headers)


def _credentials(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if not header or not value.strip():
        raise _unauthorized(
            "this route needs a token: send the header 'Authorization: Bearer <token>' "
            "(an operator creates tokens with 'tabgrid token create')",
            _CHALLENGE,
        )
    return scheme.lower(), value.strip()


async def admit(request: Request, role: Role) -> Principal | Owner | None:
    """The caller, if `role` admits it: 401 without valid credentials, 403 for the wrong role.
    Routes call this through the route table, never a handler by itself."""
    match role:
        case Role.ANONYMOUS:
            return None
        case Role.WORKER:
            return await uploader(request)
        case Role.SUBMITTER:
            return await principal(request)
        case Role.OPERATOR:
            return await principal(request, OPERATOR)


def caller(request: Request) -> Principal:
    """The token holder the route's role admitted (a SUBMITTER or OPERATOR route)."""
    who = request.state.caller
    assert isinstance(who, Principal), "only token routes have a token holder"
    return who


def blob_caller(request: Request) -> Owner:
    """The token holder or worker a WORKER route admitted."""
    who = request.state.caller
    assert isinstance(who, Owner), "only WORKER routes have a blob caller"
    return who


async def principal(request: Request, *roles: str) -> Principal:
    """The token's holder; 401 without a valid token, 403 when its role is not among `roles`."""
    scheme, value = _credentials(request)
    if scheme != "bearer":
        raise _unauthorized(
            f"unsupported authorization scheme {scheme!r} here: use 'Bearer <token>'", _CHALLENGE
        )
    return check_role(await _lookup(request, value), roles or ANY_ROLE)


async def _lookup(request: Request, token: str) -> Principal:
    store = services(request).store
    who = await store.run(tokens.lookup, token)
    if who is None:
        expired = await store.run(tokens.expired_at, token)
        if expired is not None:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expired))
            raise _unauthorized(
                f"the token expired at {when}: ask an operator for a new one", _INVALID
            )
        raise _unauthorized(
            "the token is unknown or was revoked: ask an operator for a new one", _INVALID
        )
    return who


def check_role(who: Principal, roles: tuple[str, ...]) -> Principal:
    if who.role not in roles:
        raise ProblemError(
            403,
            "Forbidden",
            f"this route needs the role {' or '.join(roles)}; the token "
            f"{who.name or who.id!r} has the role {who.role}",
        )
    return who


async def uploader(request: Request) -> Owner:
    """Who sends or reads a blob: a token of any role, or a worker by its id and secret (from
    Welcome). 401 without valid credentials, 403 for a banned worker. What each may do with a
    blob is decided by the blob routes (store/uploads.py)."""
    if not request.headers.get("authorization", "").strip():
        raise _unauthorized(
            "blobs need credentials: a token ('Authorization: Bearer <token>') or a worker's "
            "('Authorization: Worker <worker_id>:<secret>', as Welcome gave them)",
            _CHALLENGE,
        )
    scheme, value = _credentials(request)
    if scheme == "bearer":
        who = await _lookup(request, value)
        return Owner("token", str(who.id), who)
    if scheme == "worker":
        worker_id, _, secret = value.partition(":")
        verdict = await services(request).store.run(_worker_verdict, worker_id, secret)
        if verdict == "unknown":
            raise _unauthorized(
                "unknown worker id or wrong secret: use the worker_id and secret from Welcome",
                {"WWW-Authenticate": 'Worker realm="tabgrid"'},
            )
        if verdict == "banned":
            raise ProblemError(403, "Forbidden", f"worker {worker_id} is banned by an operator")
        return Owner("worker", worker_id)
    raise _unauthorized(
        f"unsupported authorization scheme {scheme!r}: use 'Bearer <token>' or "
        "'Worker <worker_id>:<secret>'",
        _CHALLENGE,
    )


def _worker_verdict(conn: Connection, worker_id: str, secret: str) -> str:
    if not worker_id or not secret or not workers.check_secret(conn, worker_id, secret):
        return "unknown"
    row = workers.get(conn, worker_id)
    return "banned" if row and row["banned"] else "ok"


class TokenRevoked(Exception):
    """Ends a response whose token stopped holding mid-way without completing it, so that
    the client sees a broken transfer rather than a short one."""


async def token_holds(request: Request, roles: tuple[str, ...] = ()) -> bool:
    """Whether the request's token is still valid (and of one of `roles`)."""
    try:
        await principal(request, *roles)
    except ProblemError:
        return False
    return True


async def while_authorised[T](
    request: Request,
    chunks: AsyncIterator[T],
    roles: tuple[str, ...] = (),
    *,
    abort: bool = False,
    every_s: float = RECHECK_S,
) -> AsyncIterator[T]:
    """The chunks of a streamed response for as long as the token that opened it holds: once
    `every_s` has passed since the last check, it is checked again before the next chunk goes
    out. A revoked token ends an event stream (`abort` false: the client signs in again) or
    breaks off a transfer that must not look complete (`abort` true, e.g. NDJSON results)."""
    checked = time.monotonic()
    try:
        async for chunk in chunks:
            if time.monotonic() - checked >= every_s:
                if not await token_holds(request, roles):
                    if abort:
                        raise TokenRevoked("the token was revoked while its response streamed")
                    return
                checked = time.monotonic()
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
