"""Reads what a manifest must agree with out of WGSL source: entry points, bindings, structs.

This is a scanner, not a parser: it finds declarations with regular expressions after
removing comments, which is enough to check a manifest before a job is accepted. Anything
it cannot judge is left to the GPU's compiler, whose message reaches the submitter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SCALARS = ("f32", "i32", "u32")

_ARGS = r"\((?:[^()]|\([^()]*\))*\)"
_ATTRS = rf"(?:@\s*[A-Za-z_]\w*\s*(?:{_ARGS})?\s*)"
_FN = re.compile(rf"({_ATTRS}+)fn\s+([A-Za-z_]\w*)")
_VAR = re.compile(rf"({_ATTRS}*)\bvar\s*(?:<([^<>]*)>)?\s*([A-Za-z_]\w*)\s*:\s*([^;=]+?)\s*[;=]")
_ATTR = re.compile(rf"@\s*([A-Za-z_]\w*)\s*({_ARGS})?")
_STRUCT = re.compile(r"\bstruct\s+([A-Za-z_]\w*)\s*\{([^{}]*)\}")
_FIELD = re.compile(r"^\s*([A-Za-z_]\w*)\s*:\s*(.+?)\s*$")
_ARRAY = re.compile(
    r"^array<(?:([fiu]32)|atomic<([iu]32)>|vec[234]<([fiu]32)>|vec[234]([fiu]))(?:,[^<>]+)?>$"
)
_COMMENT = re.compile(r"/\*|\*/|//")
_INT = re.compile(r"^\s*(\d+)[iu]?\s*$")
# module-scope constants a @workgroup_size may name: const N = 64u; override N: u32 = 64;
_CONST = re.compile(
    r"(?:^|[;}\s])(?:const|override)\s+([A-Za-z_]\w*)\s*(?::\s*[iu]32\s*)?=\s*(\d+)[iu]?\s*;"
)
_WIDTH = re.compile(r"^array<(?:atomic<)?vec([234])")


@dataclass(frozen=True, slots=True)
class ShaderVar:
    """A module-scope ``var`` with ``@group``/``@binding`` attributes."""

    name: str
    group: int
    binding: int
    space: str  # "storage", "uniform" or whatever the shader wrote
    access: str  # "read" or "read_write" for storage, "" otherwise
    type: str


@dataclass(slots=True)
class ShaderInfo:
    entries: list[str] = field(default_factory=list)  # @compute functions
    bindings: list[ShaderVar] = field(default_factory=list)
    structs: dict[str, list[tuple[str, str]] | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # each @compute function's @workgroup_size (x, y, z); None where it is not made of
    # integer literals and simple module-scope constants, so only the GPU knows it
    workgroup_sizes: dict[str, tuple[int, int, int] | None] = field(default_factory=dict)


def strip_comments(source: str) -> str:
    """``source`` without line comments and (nested) block comments."""
    out: list[str] = []
    depth = pos = 0
    while (match := _COMMENT.search(source, pos)) is not None:
        token = match.group()
        if depth:
            depth += {"/*": 1, "*/": -1}.get(token, 0)
        elif token == "//":
            out.append(source[pos : match.start()])
            end = source.find("\n", match.end())
            pos = len(source) if end < 0 else end
            continue
        else:
            out.append(source[pos : match.start()])
            out.append(" " if token == "/*" else token)
            depth = int(token == "/*")
        pos = match.end()
    if not depth:
        out.append(source[pos:])
    return "".join(out)


def element_scalar(type_text: str) -> str | None:
    """The scalar of ``array<T>``, ``array<vecN<T>>`` or ``array<T, N>``; None otherwise."""
    match = _ARRAY.match(_compact(type_text))
    if match is None:
        return None
    scalar, atomic, vector, short = match.groups()
    return scalar or atomic or vector or f"{short}32"


def element_width(type_text: str) -> int:
    """Scalars per array element: 4 for ``array<vec4<f32>>``, 1 for ``array<f32>``."""
    match = _WIDTH.match(_compact(type_text))
    return 1 if match is None else int(match.group(1))


def _workgroup_size(args: str, constants: dict[str, int]) -> tuple[int, int, int] | None:
    sizes: list[int] = []
    for part in args.split(","):
        part = part.strip()
        if not part:
            continue
        literal = _INT.match(part)
        if literal is not None:
            sizes.append(int(literal.group(1)))
        elif part in constants:
            sizes.append(constants[part])
        else:
            return None
    if not 1 <= len(sizes) <= 3:
        return None
    x, y, z = (*sizes, 1, 1)[:3]
    return (x, y, z)


def _compact(text: str) -> str:
    return "".join(text.split())


def _attributes(text: str) -> dict[str, str]:
    return {name: (args or "")[1:-1] for name, args in _ATTR.findall(text)}


def _scan_var(attrs: str, template: str, name: str, type_text: str, info: ShaderInfo) -> None:
    found = _attributes(attrs)
    if "binding" not in found and "group" not in found:
        return
    numbers = {key: _INT.match(found.get(key, "")) for key in ("group", "binding")}
    if not all(numbers.values()):
        info.errors.append(
            f"shader var {name!r}: @group and @binding must both be integer literals"
        )
        return
    parts = [p.strip() for p in template.split(",")] if template else [""]
    space = parts[0]
    access = (parts[1] if len(parts) > 1 else "read") if space == "storage" else ""
    group, binding = (int(m.group(1)) for m in numbers.values() if m is not None)
    info.bindings.append(ShaderVar(name, group, binding, space, access, _compact(type_text)))


def _scan_struct(name: str, body: str, info: ShaderInfo) -> None:
    fields: list[tuple[str, str]] | None = []
    for part in body.split(","):
        if not part.strip():
            continue
        match = _FIELD.match(part)
        if match is None or fields is None:
            fields = None  # attributes or odd syntax: cannot be compared field by field
            continue
        fields.append((match.group(1), _compact(match.group(2))))
    info.structs[name] = fields


def scan(source: str) -> ShaderInfo:
    """Entry points, group bindings and structs declared in ``source``."""
    text = strip_comments(source)
    info = ShaderInfo()
    constants = {name: int(value) for name, value in _CONST.findall(text)}
    for attrs, name in _FN.findall(text):
        found = _attributes(attrs)
        if "compute" in found:
            info.entries.append(name)
            size = found.get("workgroup_size")
            info.workgroup_sizes[name] = None if size is None else _workgroup_size(size, constants)
    for attrs, template, name, type_text in _VAR.findall(text):
        _scan_var(attrs, template, name, type_text, info)
    for name, body in _STRUCT.findall(text):
        _scan_struct(name, body, info)
    return info
