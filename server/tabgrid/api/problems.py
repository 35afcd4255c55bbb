"""Every HTTP error as an RFC 9457 problem document that tells a person what to do next."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from tabgrid.api.jsonpath import name_keys
from tabgrid.protocol import Problem

log = logging.getLogger("tabgrid.api.routes")

PROBLEM_TYPE = "application/problem+json"
MAX_ERRORS = 50

_encoder = msgspec.json.Encoder()
_BYTE_POSITION = re.compile(r"\(byte (\d+)\)")
_AT_PATH = re.compile(r"^(.*) - at `(\$[^`]*)`$", re.DOTALL)


class ProblemError(Exception):
    """Raised anywhere in a handler; the exception handler turns it into a problem response."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        errors: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = list(errors)
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return problem_response(self.status, self.title, self.detail, self.errors, self.headers)


def capped(errors: Sequence[str], limit: int = MAX_ERRORS) -> list[str]:
    """At most `limit` errors, the last line saying how many were left out."""
    if len(errors) <= limit:
        return list(errors)
    return [*errors[:limit], f"... and {len(errors) - limit} more"]


def problem_response(
    status: int,
    title: str,
    detail: str = "",
    errors: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = Problem(title=title, status=status, detail=detail, errors=capped(errors))
    return Response(_encoder.encode(body), status, headers=headers, media_type=PROBLEM_TYPE)


# ---- the problems handlers raise often ------------------------------------------------------


def bad_request(detail: str, errors: Sequence[str] = ()) -> ProblemError:
    return ProblemError(400, "Bad Request", detail, errors)


def not_found(detail: str) -> ProblemError:
    return ProblemError(404, "Not Found", detail)


def too_large(what: str, limit: int, size: int | None = None) -> ProblemError:
    got = f" (this one has {size} bytes)" if size is not None else ""
    return ProblemError(
        413,
        "Content Too Large",
        f"{what} may be at most {limit} bytes{got}: split it into several smaller ones "
        f"(the SDK's submit(split=True) does, within GET /api/v1/limits), or ask the "
        f"coordinator's operator to raise max_body (or max_blob for a blob)",
    )


def decode_problem(body: bytes, exc: msgspec.DecodeError, type_: type) -> ProblemError:
    """A malformed body names the line and column; a mismatch names the JSON path."""
    if isinstance(exc, msgspec.ValidationError):
        message, path = _split_path(str(exc))
        path = name_keys(body, type_, path)
        return ProblemError(
            422,
            "Unprocessable Content",
            f"the body is JSON but not a valid {type_.__name__}: fix the field named below "
            "(the schema is in /openapi.json)",
            [f"{path}: {message}"],
        )
    where = _line_column(body, str(exc))
    return ProblemError(
        400, "Malformed JSON", f"the body is not valid JSON{where}: {exc}", [str(exc)]
    )


def _split_path(message: str) -> tuple[str, str]:
    match = _AT_PATH.match(message)
    if match is None:
        return message, "$"
    return match.group(1), match.group(2)


def _line_column(body: bytes, message: str) -> str:
    match = _BYTE_POSITION.search(message)
    if match is None:
        return ""
    pos = min(int(match.group(1)), len(body))
    line = body.count(b"\n", 0, pos) + 1
    column = pos - (body.rfind(b"\n", 0, pos) + 1) + 1
    return f" at line {line}, column {column}"


# ---- exception handlers ---------------------------------------------------------------------


async def _on_problem(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, ProblemError)
    if isinstance(conn, WebSocket):
        await conn.close(code=1008, reason=exc.detail[:120])
        return None
    return exc.response()


async def _on_http(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, HTTPException)
    if isinstance(conn, WebSocket):
        await conn.close(code=1008, reason=str(exc.detail)[:120])
        return None
    status = exc.status_code
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return problem_response(status, title, _http_detail(conn, exc), headers=exc.headers)


def _http_detail(conn: HTTPConnection, exc: HTTPException) -> str:
    method = conn.scope.get("method", "GET")
    path = conn.url.path
    if exc.status_code == 404:
        return f"no route matches {method} {path}; the routes are listed in /openapi.json"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow", "")
        return f"{method} is not allowed on {path}; use one of: {allowed}"
    if exc.detail and exc.detail != HTTPStatus(exc.status_code).phrase:
        return str(exc.detail)
    return f"{method} {path} failed with status {exc.status_code}"


async def _on_error(request: Request, exc: Exception) -> Response:
    # The server logs the traceback too (Starlette re-raises after answering); this line ties
    # the failure to the request a person will report.
    log.error("%s %s failed: %r", request.method, request.url.path, exc)
    return problem_response(
        500,
        "Internal Server Error",
        "the coordinator failed while handling this request; the cause is in its log. "
        "Retrying may help; if it persists, report it with the time of the request",
    )


def exception_handlers() -> dict[Any, Callable[..., Any]]:
    return {ProblemError: _on_problem, HTTPException: _on_http, Exception: _on_error}
