"""What every API handler shares: bounded bodies in, msgspec responses out, query parameters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from tabgrid.problems import bad_request, decode_problem, too_large

if TYPE_CHECKING:
    from tabgrid.app import Services

JSON_TYPE = "application/json"
_encoder = msgspec.json.Encoder()


def services(conn: HTTPConnection) -> Services:
    return conn.app.state.services


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(value), status, headers=headers, media_type=JSON_TYPE)


def check_length(request: Request, limit: int, what: str) -> None:
    """Refuses a body whose declared length is over the limit before reading a byte of it."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise bad_request(f"Content-Length {declared!r} is not a number") from None
    if size > limit:
        raise too_large(what, limit, size)


async def bounded(request: Request, limit: int, what: str) -> AsyncIterator[bytes]:
    """The body's chunks, stopped with a 413 as soon as they pass the limit: a sender may lie
    about Content-Length or send none (chunked)."""
    check_length(request, limit, what)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(what, limit)
        yield chunk


async def read_body(request: Request, limit: int, what: str = "a request body") -> bytes:
    return b"".join([chunk async for chunk in bounded(request, limit, what)])


def decode[T](body: bytes, type_: type[T], decoder: msgspec.json.Decoder[T] | None = None) -> T:
    try:
        if decoder is not None:
            return decoder.decode(body)
        return msgspec.json.decode(body, type=type_)
    except msgspec.DecodeError as e:
        raise decode_problem(body, e, type_) from None


def int_param(request: Request, name: str, default: int, low: int, high: int | None = None) -> int:
    """An integer query parameter; values above `high` are capped, not refused."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"query parameter {name}={raw!r} is not an integer") from None
    if value < low:
        raise bad_request(f"query parameter {name}={value} must be at least {low}")
    return value if high is None else min(value, high)


def choice_param(request: Request, name: str, allowed: Collection[str]) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw not in allowed:
        raise bad_request(f"query parameter {name}={raw!r} is not one of: {', '.join(allowed)}")
    return raw


def path_int(request: Request, name: str) -> int:
    raw = request.path_params[name]
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"{name} {raw!r} in the path is not an integer") from None
