"""A manifest checked against its shader, compiled once per job, checked cheaply per unit."""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from math import prod
from typing import Any

from tabgrid.kernels.params import Described
from tabgrid.kernels.wgsl import source as wgsl_source
from tabgrid.kernels.wgsl.expr import NO_SHAPES, Expr, ExprError, evaluate_count
from tabgrid.kernels.wgsl.manifest import (
    DTYPES,
    TOP_KEYS,
    Binding,
    InputBinding,
    OutputBinding,
    UniformBinding,
    check_keys,
    check_name,
    check_sized,
    parse_bindings,
    parse_workgroups,
)
from tabgrid.runtime.array import ITEMSIZE
from tabgrid.runtime.gpu import MAX_STORAGE_BUFFER_BINDING_SIZE, MAX_WORKGROUPS_PER_DIMENSION

_CACHE_SHADERS = 32
_CACHE_MANIFESTS = 8


@dataclass(frozen=True, slots=True)
class Plan:
    entry: str
    inputs: tuple[InputBinding, ...]
    outputs: tuple[OutputBinding, ...]
    uniforms: tuple[UniformBinding, ...]
    workgroups: tuple[Expr, Expr, Expr]
    input_names: frozenset[str]
    # (param name, lowest, highest, may be a float) for every uniform field
    scalars: tuple[tuple[str, float, float, bool], ...]
    # the entry point's @workgroup_size; None when the scanner cannot read it (then only
    # the worker's check of what the dispatch wrote applies)
    workgroup_size: tuple[int, int, int] | None = None

    def check_inputs(self, inputs: Described) -> list[str]:
        """Errors for the inputs present: unbound names, dtypes that differ from the shader."""
        errors = [
            f"input {name!r} is not bound by any manifest binding"
            for name in inputs
            if name not in self.input_names
        ]
        for b in self.inputs:
            described = inputs.get(b.name)
            if described is not None and b.scalar is not None and DTYPES[b.scalar] != described[0]:
                errors.append(
                    f"input {b.name!r} is {described[0]} but binding {b.binding} in the shader "
                    f"is array<{b.scalar}> (needs {DTYPES[b.scalar]})"
                )
        return errors

    def check_unit(self, params: Mapping[str, Any], inputs: Described) -> list[str]:
        """Errors for one unit: missing or mistyped inputs, sizes, workgroups, uniforms."""
        errors = self.check_inputs(inputs)
        for b in self.inputs:
            described = inputs.get(b.name)
            if described is None:
                errors.append(f"input {b.name!r} (binding {b.binding}) is missing")
            else:
                _check_size(b.name, described, errors)
                if b.length is not None:
                    self._check_read(b, params, inputs, errors)
        lengths = self.output_lengths(params, errors, inputs)
        for length in lengths.values():
            if length * 4 > MAX_STORAGE_BUFFER_BINDING_SIZE:
                errors.append(f"an output of {length} elements is over {_MAX_BYTES}")
        counts = self.workgroup_counts(params, errors, inputs)
        for count in counts:
            if count > MAX_WORKGROUPS_PER_DIMENSION:
                errors.append(f"workgroups: {count} is more than {MAX_WORKGROUPS_PER_DIMENSION}")
        if len(counts) == 3:
            errors.extend(self.coverage(lengths, counts))
        for name, lo, hi, real in self.scalars:
            value = params.get(name)
            kind = type(value)
            if not ((kind is int or (real and kind is float)) and lo <= value <= hi):
                errors.append(_uniform_problem(name, value, real))
        return errors

    def _check_read(
        self, b: InputBinding, params: Mapping[str, Any], inputs: Described, errors: list[str]
    ) -> None:
        """An input's declared ``length`` (what the shader reads) fits in what it holds."""
        assert b.length is not None
        try:
            need = evaluate_count(b.length, params, inputs)
        except ExprError as e:
            errors.append(f"input {b.name!r} length: {e}")
            return
        have = prod(inputs[b.name][1])
        if need > have:
            smaller = " or ".join(f"a smaller {n!r}" for n in sorted(b.length.names))
            errors.append(
                f"input {b.name!r} holds {have} elements, but its 'length' {b.length.text!r} = "
                f"{need}: the shader would read {need - have} elements past its end, where "
                f"WebGPU returns zeros or other elements instead of failing; pass "
                f"{smaller + ' or ' if smaller else ''}a longer {b.name!r}"
            )

    def output_lengths(
        self, params: Mapping[str, Any], errors: list[str], shapes: Described = NO_SHAPES
    ) -> dict[str, int]:
        lengths = {}
        for out in self.outputs:
            try:
                lengths[out.name] = evaluate_count(out.length, params, shapes)
            except ExprError as e:
                errors.append(f"output {out.name!r} length: {e}")
        return lengths

    def workgroup_counts(
        self, params: Mapping[str, Any], errors: list[str], shapes: Described = NO_SHAPES
    ) -> list[int]:
        counts = []
        for expr in self.workgroups:
            try:
                counts.append(evaluate_count(expr, params, shapes))
            except ExprError as e:
                errors.append(f"workgroups: {e}")
        return counts

    def coverage(self, lengths: Mapping[str, int], counts: list[int]) -> list[str]:
        """Where the dispatch cannot write each output element exactly as its ``written_by``
        declares: too few invocations or workgroups (elements left at zero), or whole
        workgroups with nothing to write (the length is cut short)."""
        errors: list[str] = []
        for out in self.outputs:
            length = lengths.get(out.name)
            if length is None or out.written_by == "any":
                continue
            if out.written_by == "workgroup":
                problem = _per_workgroup(out, length, counts)
            elif self.workgroup_size is not None:
                problem = _per_invocation(out, length, counts, self.workgroup_size)
            else:
                problem = None  # the worker checks what the dispatch wrote
            if problem is not None:
                errors.append(problem)
        return errors


_MAX_BYTES = f"{MAX_STORAGE_BUFFER_BINDING_SIZE} bytes"
_RANGES = {
    "f32": (-3.4028234663852886e38, 3.4028234663852886e38, True),
    "i32": (-(2**31), 2**31 - 1, False),
    "u32": (0, 2**32 - 1, False),
}


def _check_size(name: str, described: tuple[str, tuple[int, ...]], errors: list[str]) -> None:
    dtype, shape = described
    count = prod(shape)
    if count == 0:
        errors.append(f"input {name!r} is empty")
    elif count * ITEMSIZE.get(dtype, 8) > MAX_STORAGE_BUFFER_BINDING_SIZE:
        errors.append(f"input {name!r} is over {_MAX_BYTES}")


def _shown(counts: Iterable[int]) -> str:
    return "[" + ", ".join(map(str, counts)) + "]"


def _held(out: OutputBinding, length: int, needed: int) -> str:
    """How to say how many elements an output has (and vectors, for a vector array)."""
    if out.width == 1:
        return f"{length} elements"
    return f"{length} elements ({needed} vec{out.width})"


def _per_invocation(
    out: OutputBinding, length: int, counts: list[int], size: tuple[int, int, int]
) -> str | None:
    # formatted only for a problem: this runs for every unit of a job
    needed = length if out.width == 1 else -(-length // out.width)
    invocations = counts[0] * counts[1] * counts[2] * size[0] * size[1] * size[2]
    one_d = counts[1] == counts[2] == size[1] == size[2] == 1
    if invocations >= needed and not (one_d and invocations >= needed + size[0]):
        return None
    held = _held(out, length, needed)
    dispatch = f"workgroups {_shown(counts)} × @workgroup_size{tuple(size)} = {invocations}"
    fits = -(-needed // size[0])
    if invocations < needed:
        hint = (
            f"dispatch ceil({needed} / {size[0]}) = {fits} workgroups in x"
            if one_d
            else f"dispatch workgroups whose product times {prod(size)} is at least {needed}"
        )
        return (
            f"output {out.name!r} has {held}, but {dispatch} invocations write one each, so "
            f'{needed - invocations} would stay zero: {hint}, or declare "written_by": '
            f'"any" if each invocation writes several'
        )
    idle = (invocations - needed) // size[0]
    return (
        f"output {out.name!r} has {held}, but {dispatch} invocations write one each: "
        f"{idle} whole workgroup(s) have no element to write, so the shader's writes "
        f"past the end are dropped (or land on other elements): make its 'length' cover "
        f"every element the shader writes (up to {invocations * out.width}), dispatch "
        f'ceil({needed} / {size[0]}) = {fits} workgroups, or declare "written_by": '
        f'"workgroup" (one element per workgroup) or "any"'
    )


def _per_workgroup(out: OutputBinding, length: int, counts: list[int]) -> str | None:
    needed = length if out.width == 1 else -(-length // out.width)
    groups = counts[0] * counts[1] * counts[2]
    if groups == needed:
        return None
    held = _held(out, length, needed)
    dispatch = f"workgroups {_shown(counts)} = {groups} workgroups"
    if groups < needed:
        return (
            f"output {out.name!r} is written one element per workgroup and has {held}, but "
            f"{dispatch} leave {needed - groups} at zero: make its 'length' "
            f"{groups * out.width} or dispatch {needed} workgroups"
        )
    return (
        f"output {out.name!r} is written one element per workgroup but has {held} for "
        f"{dispatch}: {groups - needed} workgroups' elements would be dropped; make its "
        f"'length' {groups * out.width} (the workgroups' product)"
    )


def _uniform_problem(name: str, value: Any, real: bool) -> str:
    if value is None:
        return f"uniform field {name!r} needs a param {name!r}"
    return f"param {name!r} = {value!r} is not {'a finite f32' if real else 'an integer in range'}"


# ---- comparing the manifest with the shader -----------------------------------------------


def _fields(fields: Iterable[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{n}: {t}" for n, t in fields) + "}"


def _uniform_type(
    b: UniformBinding, var: wgsl_source.ShaderVar, info: wgsl_source.ShaderInfo
) -> str | None:
    """Why the shader's uniform type differs from the manifest's fields, or None."""
    if var.type in wgsl_source.SCALARS:
        if [t for _, t in b.fields] == [var.type]:
            return None
        return f"shader type is {var.type}, manifest lists {_fields(b.fields)}"
    if var.type not in info.structs:
        return f"shader type {var.type} is not a struct of f32, i32 and u32 fields"
    declared = info.structs[var.type]
    if declared is None:
        return f"shader struct {var.type} has field attributes the manifest cannot describe"
    if declared != list(b.fields):
        return (
            f"shader struct {var.type} is {_fields(declared)}, manifest lists {_fields(b.fields)}"
        )
    return None


def _against_var(
    b: Binding, var: wgsl_source.ShaderVar, info: wgsl_source.ShaderInfo
) -> tuple[Binding, str | None]:
    declared = f"var<{var.space}{', ' + var.access if var.access else ''}> {var.name}"
    if isinstance(b, UniformBinding):
        if var.space != "uniform":
            return (
                b,
                f"binding {b.binding} (uniform): shader declares {declared}, needs var<uniform>",
            )
        problem = _uniform_type(b, var, info)
        return b, None if problem is None else f"binding {b.binding} (uniform): {problem}"
    kind, access = ("input", "read") if isinstance(b, InputBinding) else ("output", "read_write")
    where = f"binding {b.binding} ({kind} {b.name!r})"
    if var.space != "storage" or var.access != access:
        return b, f"{where}: shader declares {declared}, an {kind} needs var<storage, {access}>"
    scalar = wgsl_source.element_scalar(var.type)
    if scalar is None:
        return b, f"{where}: shader type {var.type} is not an array of f32, i32 or u32"
    if isinstance(b, OutputBinding) and scalar != b.scalar:
        return b, f"{where}: manifest type {b.scalar} but the shader's {var.type} holds {scalar}"
    if isinstance(b, InputBinding):
        return replace(b, scalar=scalar), None
    return replace(b, width=wgsl_source.element_width(var.type)), None


def _against_shader(
    entry: str | None, bindings: list[Binding], info: wgsl_source.ShaderInfo, errors: list[str]
) -> list[Binding]:
    errors.extend(info.errors)
    if entry is not None and entry not in info.entries:
        found = ", ".join(info.entries) or "none"
        errors.append(f"entry point {entry!r} is not a @compute fn in the shader (found: {found})")
    declared: dict[int, wgsl_source.ShaderVar] = {}
    for var in info.bindings:
        if var.group != 0:
            errors.append(f"shader var {var.name!r} is in @group({var.group}); only 0 is bound")
        else:
            declared.setdefault(var.binding, var)
    numbers = {b.binding for b in bindings}
    for number, var in sorted(declared.items()):
        if number not in numbers:
            errors.append(
                f"shader declares @group(0) @binding({number}) (var {var.name!r}) "
                f"but the manifest has no binding {number}"
            )
    checked = []
    for b in bindings:
        var = declared.get(b.binding)
        if var is None:
            errors.append(
                f"manifest binding {b.binding} has no @group(0) @binding({b.binding}) in the shader"
            )
            continue
        b, problem = _against_var(b, var, info)
        if problem is not None:
            errors.append(problem)
        checked.append(b)
    return checked


def build_plan(shader: Any, manifest: Any) -> tuple[Plan | None, list[str]]:
    """The plan for a job's shader and manifest, or None and every problem found."""
    errors: list[str] = []
    shader_ok = isinstance(shader, str) and bool(shader.strip())
    if not shader_ok:
        errors.append("param 'shader' must be the WGSL source text")
    if not isinstance(manifest, dict):
        return None, [*errors, "param 'manifest' must be an object (entry, bindings, workgroups)"]
    check_keys(manifest, frozenset(TOP_KEYS), "manifest", errors)
    entry = (
        check_name(manifest["entry"], "manifest 'entry'", errors) if "entry" in manifest else None
    )
    bindings = parse_bindings(manifest["bindings"], errors) if "bindings" in manifest else []
    workgroups = None
    if "workgroups" in manifest:
        workgroups = parse_workgroups(manifest["workgroups"], errors)
    if workgroups is not None:
        inputs = {b.name for b in bindings if isinstance(b, InputBinding)}
        for i, expr in enumerate(workgroups):
            check_sized(expr, inputs, f"workgroups[{i}]", errors)
    size = None
    if shader_ok:
        info = wgsl_source.scan(shader)
        bindings = _against_shader(entry, bindings, info, errors)
        size = info.workgroup_sizes.get(entry) if entry is not None else None
    if errors or entry is None or workgroups is None:
        return None, errors
    by_kind = {
        kind: tuple(b for b in bindings if isinstance(b, kind))
        for kind in (InputBinding, OutputBinding, UniformBinding)
    }
    return Plan(
        entry=entry,
        inputs=by_kind[InputBinding],
        outputs=by_kind[OutputBinding],
        uniforms=by_kind[UniformBinding],
        workgroups=workgroups,
        input_names=frozenset(b.name for b in by_kind[InputBinding]),
        scalars=tuple(
            (name, *_RANGES[scalar]) for u in by_kind[UniformBinding] for name, scalar in u.fields
        ),
        workgroup_size=size,
    ), []


@dataclass(slots=True)
class _Cached:
    manifest: Any  # the object last seen, for an identity check
    snapshot: Any  # a private copy, to notice edits made to that object since
    key: str  # canonical JSON, which tells 1, 1.0 and true apart where == does not
    plan: Plan | None
    errors: list[str]


_cache: OrderedDict[str, list[_Cached]] = OrderedDict()


def plan_for(shader: Any, manifest: Any) -> tuple[Plan | None, list[str]]:
    """``build_plan``, remembered per shader text and manifest.

    Every unit of a job carries the same shader and manifest objects, so after the first
    unit this is a dict lookup, an identity check and one comparison of the small manifest.
    """
    if type(shader) is not str:
        return build_plan(shader, manifest)
    seen = _cache.get(shader)
    if seen is None:
        seen = _cache[shader] = []
        if len(_cache) > _CACHE_SHADERS:
            _cache.popitem(last=False)
    for hit in seen:
        if hit.manifest is manifest and hit.snapshot == manifest:
            return hit.plan, list(hit.errors)
    try:
        key = json.dumps(manifest, sort_keys=True)
    except (TypeError, ValueError):
        return build_plan(shader, manifest)
    for hit in seen:
        if hit.key == key:
            hit.manifest = manifest
            return hit.plan, list(hit.errors)
    plan, errors = build_plan(shader, manifest)
    seen.append(_Cached(manifest, copy.deepcopy(manifest), key, plan, errors))
    del seen[:-_CACHE_MANIFESTS]
    return plan, list(errors)
