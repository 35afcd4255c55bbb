"""The OpenAPI document, generated from the route table and the msgspec types it names."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import msgspec

from tabgrid.api.problems import PROBLEM_TYPE
from tabgrid.api.roles import SCHEMES, Role
from tabgrid.protocol import INT64_MAX, PROTOCOL_VERSION, Digest, Problem, RowId

REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{(\w+)(?::\w+)?}")
# Path parameters by name, unless an endpoint says otherwise: the same bounds api/io.py checks.
PATH_PARAMS: dict[str, dict[str, Any]] = {
    "id": msgspec.json.schema(RowId),
    "digest": msgspec.json.schema(Digest),
}


@dataclass(frozen=True)
class Media:
    """A non-JSON body: its media type and, where it has one, the type of each item (each
    line of NDJSON; the JSON in each event's data for server-sent events)."""

    type: str
    item: Any = None
    description: str = ""
    events: tuple[str, ...] = ()  # text/event-stream: the event names sent


@dataclass(frozen=True)
class Query:
    """A query parameter, as documented and as api/io.py parses it: integers outside
    [minimum, maximum] are refused with a 400 (a page size may still be capped below it)."""

    name: str
    schema: str  # "integer" | "string"
    description: str
    enum: tuple[str, ...] = ()
    minimum: int = 0
    maximum: int = INT64_MAX


@dataclass(frozen=True)
class Endpoint:
    """One route: how it is served and how it is documented."""

    method: str
    path: str
    handler: Callable[..., Any]
    summary: str
    role: Role  # who may call it: enforced by routes.py, documented as security schemes
    body: type | Media | None = None
    returns: type | Media | None = None
    status: int = 200
    also: tuple[int, ...] = ()  # further success statuses with the same body
    query: tuple[Query, ...] = ()
    problems: tuple[int, ...] = ()
    params: Mapping[str, Mapping[str, Any]] | None = None  # path parameters not in PATH_PARAMS
    headers: Mapping[str, str] | None = None  # fixed headers of every success response


def document(endpoints: Sequence[Endpoint], title: str, version: str) -> dict[str, Any]:
    types = sorted({Problem, *_types(endpoints)}, key=repr)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    by_type = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        path = _PATH_PARAM.sub(r"{\1}", ep.path)
        paths.setdefault(path, {})[ep.method.lower()] = _operation(ep, by_type)
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


Schemas = dict[Any, dict[str, Any]]


def _operation(ep: Endpoint, schemas: Schemas) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": ep.summary,
        "operationId": ep.handler.__name__,
        "responses": _responses(ep, schemas),
    }
    params = [_path_param(name, ep) for name in _PATH_PARAM.findall(ep.path)]
    params += [_query_param(q) for q in ep.query]
    if params:
        op["parameters"] = params
    if ep.body is not None:
        op["requestBody"] = {"required": True, "content": _content(ep.body, schemas)}
    op["security"] = [{scheme: []} for scheme in SCHEMES[ep.role]]
    return op


def problem_statuses(ep: Endpoint) -> set[int]:
    """Every error status the endpoint can answer: those it names, and those that follow from
    its parameters, its body and its security."""
    found = set(ep.problems) | {500}
    if SCHEMES[ep.role]:
        found |= {401, 403}
    if _PATH_PARAM.search(ep.path) or ep.query:
        found.add(400)  # a parameter that does not parse or is out of range
    if ep.body is not None and not isinstance(ep.body, Media):
        found |= {400, 413, 422}  # malformed JSON, too large, not the documented schema
    return found


def _responses(ep: Endpoint, schemas: Schemas) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in (ep.status, *ep.also):
        response: dict[str, Any] = {"description": HTTPStatus(status).phrase}
        if ep.returns is not None and status != 204:
            response["content"] = _content(ep.returns, schemas)
        if ep.headers:
            response["headers"] = {
                name: {"required": True, "schema": {"type": "string", "const": value}}
                for name, value in ep.headers.items()
            }
        out[str(status)] = response
    for status in sorted(problem_statuses(ep)):
        out[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_TYPE: {"schema": {"$ref": REF.format(name="Problem")}}},
        }
    return out


def _content(t: type | Media, schemas: Schemas) -> dict[str, Any]:
    if not isinstance(t, Media):
        return {"application/json": {"schema": schemas[t]}}
    schema: dict[str, Any] = {"type": "string"}
    if t.events:
        schema = _event_schema(t, schemas)
    elif t.item is not None:
        schema = schemas[t.item]
    if t.description:
        schema = {**schema, "description": t.description}
    return {t.type: {"schema": schema}}


def _event_schema(t: Media, schemas: Schemas) -> dict[str, Any]:
    """One server-sent event, as OpenAPI 3.1 describes each event of a text/event-stream."""
    data: dict[str, Any] = {"type": "string", "contentMediaType": "application/json"}
    if t.item is not None:
        data["contentSchema"] = schemas[t.item]
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {"event": {"type": "string", "enum": list(t.events)}, "data": data},
    }


def _path_param(name: str, ep: Endpoint) -> dict[str, Any]:
    given = (ep.params or {}).get(name)
    schema = dict(given if given is not None else PATH_PARAMS.get(name, {"type": "string"}))
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query_param(q: Query) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": q.schema}
    if q.enum:
        schema["enum"] = list(q.enum)
    if q.schema == "integer":
        schema |= {"minimum": q.minimum, "maximum": q.maximum}
    return {
        "name": q.name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": q.description,
    }
