"""The structure of a submitter's manifest: its keys, bindings, types and expressions.

These checks need neither the shader nor a unit's params; ``plan`` then compares the
bindings with the shader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tabgrid.kernels.wgsl.expr import Expr, ExprError, as_count, parse
from tabgrid.runtime.gpu import MAX_STORAGE_BUFFERS_PER_STAGE, MAX_WORKGROUPS_PER_DIMENSION

DTYPES = {"f32": "float32", "i32": "int32", "u32": "uint32"}
TOP_KEYS = ("entry", "bindings", "workgroups")
KINDS = {
    "input": frozenset({"binding", "input"}),
    "output": frozenset({"binding", "output", "type", "length"}),
    "uniform": frozenset({"binding", "uniform"}),
}
OPTIONAL = {
    "input": frozenset({"length"}),  # elements the shader reads: the input must hold as many
    "output": frozenset({"written_by"}),
    "uniform": frozenset(),
}
# Who writes one element of an output: one invocation each (the default), one workgroup
# each (a reduction's partial results), or the shader's own pattern (no coverage check, and
# elements it leaves at zero are allowed: histograms, atomics, sparse results).
WRITTEN_BY = ("invocation", "workgroup", "any")
MAX_BINDING = 999
_STAND_IN = as_count(parse(1))  # for an expression that did not parse, once reported
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")


@dataclass(frozen=True, slots=True)
class InputBinding:
    binding: int
    name: str
    scalar: str | None  # the shader's array element type, when it could be read
    length: Expr | None = None  # elements the shader reads from it, when declared


@dataclass(frozen=True, slots=True)
class OutputBinding:
    binding: int
    name: str
    scalar: str
    length: Expr
    written_by: str = "invocation"  # one of WRITTEN_BY
    width: int = 1  # scalars per element of the shader's array (4 for vec4), from the shader


@dataclass(frozen=True, slots=True)
class UniformBinding:
    binding: int
    fields: tuple[tuple[str, str], ...]  # (param name, scalar type), in memory order


def _is_int(value: Any) -> bool:
    return type(value) is int


def _where(index: int, spec: Any) -> str:
    if isinstance(spec, dict) and _is_int(spec.get("binding")):
        return f"binding {spec['binding']}"
    return f"bindings[{index}]"


def _expression(text: Any, what: str, errors: list[str]) -> Expr | None:
    try:
        return as_count(parse(text))
    except ExprError as e:
        errors.append(f"{what}: {e}")
        return None


def check_name(value: Any, what: str, errors: list[str]) -> str | None:
    if isinstance(value, str) and _IDENTIFIER.match(value):
        return value
    errors.append(f"{what}: {value!r} is not a name (letters, digits, underscore)")
    return None


def check_keys(
    spec: dict,
    allowed: frozenset[str],
    where: str,
    errors: list[str],
    optional: frozenset[str] = frozenset(),
) -> None:
    missing = sorted(allowed - spec.keys())
    extra = sorted(spec.keys() - allowed - optional)
    if missing:
        errors.append(f"{where}: missing key(s) {', '.join(map(repr, missing))}")
    if extra:
        errors.append(f"{where}: unknown key(s) {', '.join(map(repr, extra))}")


def _uniform_fields(value: Any, where: str, errors: list[str]) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not value:
        errors.append(f"{where}: 'uniform' must be a non-empty list of {{name, type}}")
        return ()
    fields: list[tuple[str, str]] = []
    for i, item in enumerate(value):
        what = f"{where} uniform[{i}]"
        if not isinstance(item, dict):
            errors.append(f"{what}: must be an object with 'name' and 'type'")
            continue
        check_keys(item, frozenset({"name", "type"}), what, errors)
        name = check_name(item.get("name"), f"{what} name", errors)
        scalar = item.get("type")
        if scalar not in DTYPES:
            errors.append(f"{what}: unknown type {scalar!r}; use one of {', '.join(DTYPES)}")
        elif name is not None:
            if any(name == seen for seen, _ in fields):
                errors.append(f"{what}: field {name!r} appears twice")
            fields.append((name, scalar))
    return tuple(fields)


Binding = InputBinding | OutputBinding | UniformBinding


def _binding(index: int, spec: Any, errors: list[str]) -> Binding | None:
    """One manifest binding, not yet compared with the shader; None when it is unusable."""
    where = _where(index, spec)
    if not isinstance(spec, dict):
        errors.append(f"{where}: must be an object, not {type(spec).__name__}")
        return None
    kinds = [kind for kind in KINDS if kind in spec]
    if len(kinds) != 1:
        shown = " and ".join(repr(k) for k in kinds) if kinds else "none"
        errors.append(f"{where}: needs exactly one of 'input', 'output', 'uniform' (has {shown})")
        return None
    kind = kinds[0]
    check_keys(spec, KINDS[kind], where, errors, OPTIONAL[kind])
    number = spec.get("binding")
    if not _is_int(number) or not 0 <= number <= MAX_BINDING:
        errors.append(f"{where}: 'binding' must be an integer from 0 to {MAX_BINDING}")
        return None
    if kind == "input":
        name = check_name(spec.get("input"), f"{where} input", errors)
        read = None
        if "length" in spec:
            # a stand-in when it does not parse keeps the binding for the shader check;
            # the error recorded stops the plan
            read = _expression(spec["length"], f"{where} length", errors) or _STAND_IN
        return None if name is None else InputBinding(number, name, None, read)
    if kind == "uniform":
        return UniformBinding(number, _uniform_fields(spec.get("uniform"), where, errors))
    name = check_name(spec.get("output"), f"{where} output", errors)
    scalar = spec.get("type")
    if scalar not in DTYPES:
        errors.append(f"{where}: unknown element type {scalar!r}; use one of {', '.join(DTYPES)}")
    length = _expression(spec.get("length"), f"{where} length", errors)
    written_by = spec.get("written_by", "invocation")
    if written_by not in WRITTEN_BY:
        errors.append(
            f"{where}: 'written_by' is {written_by!r}; use one of "
            f"{', '.join(map(repr, WRITTEN_BY))} (see docs/kernels.md)"
        )
        written_by = "invocation"  # kept bound, so that the shader check does not miss it
    if name is None or scalar not in DTYPES:
        return None
    return OutputBinding(number, name, scalar, length or _STAND_IN, written_by)


def parse_bindings(value: Any, errors: list[str]) -> list[Binding]:
    if not isinstance(value, list) or not value:
        errors.append("manifest 'bindings' must be a non-empty list")
        return []
    found: list[Binding] = []
    numbers: set[int] = set()
    for index, spec in enumerate(value):
        b = _binding(index, spec, errors)
        if b is None:
            continue
        if b.binding in numbers:
            errors.append(f"binding {b.binding} appears more than once in the manifest")
            continue
        numbers.add(b.binding)
        found.append(b)
    outputs = [b.name for b in found if isinstance(b, OutputBinding)]
    inputs = {b.name for b in found if isinstance(b, InputBinding)}
    for name in sorted({n for n in outputs if outputs.count(n) > 1 or n in inputs}):
        errors.append(f"output {name!r} is bound twice or is also an input")
    for b in found:
        length = b.length if isinstance(b, (InputBinding, OutputBinding)) else None
        if length is not None:
            check_sized(length, inputs, f"binding {b.binding} length", errors)
    storage = sum(not isinstance(b, UniformBinding) for b in found)
    if storage > MAX_STORAGE_BUFFERS_PER_STAGE:
        errors.append(
            f"{storage} storage bindings; WebGPU guarantees only {MAX_STORAGE_BUFFERS_PER_STAGE}"
        )
    return found


def check_sized(expr: Expr, inputs: set[str], what: str, errors: list[str]) -> None:
    """``len(x)`` and ``shape(x, k)`` in ``expr`` name inputs the manifest binds."""
    for name in sorted(expr.inputs - inputs):
        known = ", ".join(sorted(inputs)) or "none"
        errors.append(
            f"{what}: {expr.text!r} reads the size of {name!r}, which is not an input of the "
            f"manifest (inputs: {known})"
        )


def parse_workgroups(value: Any, errors: list[str]) -> tuple[Expr, Expr, Expr] | None:
    if not isinstance(value, list) or len(value) != 3:
        errors.append("manifest 'workgroups' must be a list of 3 counts (numbers or expressions)")
        return None
    exprs = [_expression(v, f"workgroups[{i}]", errors) for i, v in enumerate(value)]
    for i, expr in enumerate(exprs):
        if (
            expr is not None
            and expr.count is not None
            and expr.count > MAX_WORKGROUPS_PER_DIMENSION
        ):
            errors.append(
                f"workgroups[{i}]: {expr.count} is more than {MAX_WORKGROUPS_PER_DIMENSION}"
            )
    x, y, z = exprs
    if x is None or y is None or z is None:
        return None
    return (x, y, z)
