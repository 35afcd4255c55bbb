"""Puts back the dict keys that msgspec writes as ``[...]`` in a validation error's path.

msgspec names list indexes (``$.units[3]``) but not dict keys (``$.units[3].inputs[...]``).
A person needs the key, so the path is walked again through the decoded JSON and the target
type: at each ``[...]`` the key is the first whose value does not convert, which is the one
msgspec stopped at, since it validates in document order.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import msgspec

_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def name_keys(body: bytes, type_: Any, path: str) -> str:
    """`path` with each ``[...]`` replaced by the key it stands for, when it can be found."""
    if "[...]" not in path:
        return path
    try:
        return _walk(msgspec.json.decode(body), type_, path)
    except (msgspec.DecodeError, LookupError, TypeError, ValueError):
        return path


def _walk(value: Any, type_: Any, path: str) -> str:
    out = "$"
    rest = path[1:]
    for match in _SEGMENT.finditer(rest):
        name, index = match.groups()
        type_ = _strip(type_)
        if name is not None:
            value, type_ = value[name], _field_type(type_, name)
            out += f".{name}"
        elif index == "...":
            item_type = typing.get_args(type_)[1]
            key = _failing_key(value, item_type)
            if key is None:
                return out + rest[match.start() :]
            value, type_ = value[key], item_type
            out += f".{key}" if _IDENTIFIER.match(key) else f"[{msgspec.json.encode(key).decode()}]"
        else:
            value, type_ = value[int(index)], typing.get_args(type_)[0]
            out += f"[{index}]"
    return out


def _strip(type_: Any) -> Any:
    """The type under Annotated[...] and `X | None`."""
    while True:
        if typing.get_origin(type_) is typing.Annotated:
            type_ = typing.get_args(type_)[0]
            continue
        args = [a for a in typing.get_args(type_) if a is not type(None)]
        if isinstance(type_, type) or len(args) != 1 or typing.get_origin(type_) in (list, dict):
            return type_
        type_ = args[0]


def _field_type(struct: Any, name: str) -> Any:
    for field in msgspec.structs.fields(struct):
        if field.encode_name == name:
            return field.type
    raise LookupError(name)


def _failing_key(value: dict[str, Any], item_type: Any) -> str | None:
    for key, item in value.items():
        try:
            msgspec.convert(item, item_type)
        except msgspec.ValidationError:
            return key
    return None
