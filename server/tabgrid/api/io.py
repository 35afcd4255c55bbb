"""What every API handler shares: bounded bodies in, msgspec responses out, parameters parsed
within the bounds /openapi.json documents, long responses that end with their token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from tabgrid.api.openapi import PATH_PARAMS, Query
from tabgrid.api.problems import bad_request, decode_problem, too_large

if TYPE_CHECKING:
    from tabgrid.services import Services

JSON_TYPE = "application/json"
NO_STORE = {"Cache-Control": "no-store"}  # responses that carry a secret
_encoder = msgspec.json.Encoder()
# ASCII digits only: int() also takes '٣', '1_000' and ' 7', and str.isdigit() takes '²'.
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_ID = PATH_PARAMS["id"]


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


def parse_int(raw: str, low: int, high: int) -> int | None:
    """`raw` as an integer in [low, high], written in ASCII digits; None when it is not."""
    if _INTEGER.fullmatch(raw) is None:
        return None
    value = int(raw)
    return value if low <= value <= high else None


def int_param(request: Request, q: Query, default: int, cap: int | None = None) -> int:
    """The integer query parameter `q`, refused outside its documented bounds; a value above
    `cap` (a page size) is capped, not refused."""
    raw = request.query_params.get(q.name)
    if raw is None or raw == "":
        return default
    value = parse_int(raw, q.minimum, q.maximum)
    if value is None:
        raise bad_request(
            f"query parameter {q.name}={raw[:40]!r} is not an integer from {q.minimum} "
            f"to {q.maximum} (ASCII digits)"
        )
    return value if cap is None else min(value, cap)


def choice_param(request: Request, name: str, allowed: Collection[str]) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw not in allowed:
        raise bad_request(f"query parameter {name}={raw!r} is not one of: {', '.join(allowed)}")
    return raw


def path_int(request: Request, name: str) -> int:
    """A row id in the path, within what the id columns hold (protocol.RowId)."""
    raw = request.path_params[name]
    value = parse_int(raw, _ID["minimum"], _ID["maximum"])
    if value is None:
        raise bad_request(
            f"{name} {raw[:40]!r} in the path is not an integer from {_ID['minimum']} "
            f"to {_ID['maximum']}"
        )
    return value


# ---- long responses -------------------------------------------------------------------------
