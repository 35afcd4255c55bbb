"""The OpenAPI document, generated from the route table and the msgspec types it names."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import msgspec

from tabgrid.problems import PROBLEM_TYPE
from tabgrid.protocol import PROTOCOL_VERSION, Problem

REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


@dataclass(frozen=True)
class Media:
    """A non-JSON body: its media type and, where it has one, the type of each item."""

    type: str
    item: type | None = None
    description: str = ""


@dataclass(frozen=True)
class Query:
    name: str
    schema: str  # "integer" | "string"
    description: str
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """One route: how it is served and how it is documented."""

    method: str
    path: str
    handler: Callable[..., Any]
    summary: str
    auth: Sequence[str] = ("bearer",)  # security schemes, any one of which is enough
    body: type | Media | None = None
    returns: type | Media | None = None
    status: int = 200
    also: tuple[int, ...] = ()  # further success statuses with the same body
    query: tuple[Query, ...] = ()
    problems: tuple[int, ...] = ()


def document(endpoints: Sequence[Endpoint], title: str, version: str) -> dict[str, Any]:
    types = {Problem, *_types(endpoints)}
    _, components = msgspec.json.schema_components(
        sorted(types, key=lambda t: t.__name__), ref_template=REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        paths.setdefault(_PATH_PARAM.sub(r"{\1}", ep.path), {})[ep.method.lower()] = _operation(ep)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Every error is an RFC 9457 problem document (application/problem+json). "
                f"Workers connect to the websocket /api/v1/worker (protocol {PROTOCOL_VERSION}), "
                "whose messages are the Hello..Bye schemas of tabgrid.protocol."
            ),
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": _SECURITY},
    }


_SECURITY = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API token"},
    "worker": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "'Worker <worker_id>:<secret>' as received in Welcome",
    },
}


def _types(endpoints: Sequence[Endpoint]) -> set[type]:
    found: set[type] = set()
    for ep in endpoints:
        for t in (ep.body, ep.returns):
            if isinstance(t, Media):
                t = t.item
            if t is not None:
                found.add(t)
    return found


def _operation(ep: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": ep.summary,
        "operationId": ep.handler.__name__,
        "responses": _responses(ep),
    }
    params = [_path_param(name) for name in _PATH_PARAM.findall(ep.path)]
    params += [_query_param(q) for q in ep.query]
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = {"required": True, "content": _content(ep.body)}
    op["security"] = [{scheme: []} for scheme in ep.auth]
    return op


def _responses(ep: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in (ep.status, *ep.also):
        response: dict[str, Any] = {"description": HTTPStatus(status).phrase}
        if ep.returns is not None and status != 204:
            response["content"] = _content(ep.returns)
        out[str(status)] = response
    problems = set(ep.problems) | {500}
    if ep.auth:
        problems |= {401, 403}
    for status in sorted(problems):
        out[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_TYPE: {"schema": {"$ref": REF.format(name="Problem")}}},
        }
    return out


def _content(t: type | Media) -> dict[str, Any]:
    if isinstance(t, Media):
        schema: dict[str, Any] = {"type": "string"}
        if t.item is not None:
            schema = {"$ref": REF.format(name=t.item.__name__)}
        if t.description:
            schema = {**schema, "description": t.description}
        return {t.type: {"schema": schema}}
    return {"application/json": {"schema": {"$ref": REF.format(name=t.__name__)}}}


def _path_param(name: str) -> dict[str, Any]:
    schema = {"type": "integer"} if name == "id" else {"type": "string"}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query_param(q: Query) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": q.schema}
    if q.enum:
        schema["enum"] = list(q.enum)
    return {
        "name": q.name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": q.description,
    }
