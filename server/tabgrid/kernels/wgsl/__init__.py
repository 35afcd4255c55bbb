"""A submitter's own WGSL compute shader, bound and dispatched as its manifest declares.

Params: ``shader`` (WGSL text), ``manifest`` (entry, bindings, workgroups; see
``manifest``) and any numbers the manifest's expressions and uniforms name. No
submitter Python runs on a volunteer's machine: only the shader, through WebGPU.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterator, Mapping
from typing import Any

from tabgrid.kernels.wgsl.manifest import DTYPES, UniformBinding
from tabgrid.kernels.wgsl.plan import Described, Plan, plan_for
from tabgrid.kernels.wgsl.source import scan, strip_comments
from tabgrid.runtime.array import Array
from tabgrid.runtime.errors import KernelError
from tabgrid.runtime.gpu import Buffer, Gpu

NAME = "wgsl"
VERSION = "1"
_PACK = {"f32": "f", "i32": "i", "u32": "I"}
# What an output buffer holds in the check run (see _unwritten): a quiet NaN with a payload
# no arithmetic produces, for f32; for integers a value a shader is unlikely to write.
SENTINEL = 0x7FC0FFEE
_MARK = struct.pack("<I", SENTINEL)
_ZERO = bytes(4)
MAX_READ_PAD = 1 << 22  # elements of SENTINEL after an input in the read check (16 MiB)


def _plan(params: Mapping[str, Any]) -> tuple[Plan | None, list[str]]:
    missing = [f"param {key!r} is required" for key in ("shader", "manifest") if key not in params]
    if missing:
        return None, missing
    return plan_for(params["shader"], params["manifest"])


def validate_job(params: dict[str, Any], inputs: Described) -> list[str]:
    """Everything about the shader and manifest; the job-level inputs that are present."""
    plan, errors = _plan(params)
    return errors if plan is None else plan.check_inputs(inputs)


def validate_unit(params: dict[str, Any], inputs: Described) -> list[str]:
    """Inputs present with matching dtypes; sizes and workgroups evaluate to positive ints."""
    plan, errors = _plan(params)
    return errors if plan is None else plan.check_unit(params, inputs)


def _sizes(
    plan: Plan, params: Mapping[str, Any], shapes: Described
) -> tuple[dict[str, int], tuple[int, int, int]]:
    errors: list[str] = []
    lengths = plan.output_lengths(params, errors, shapes)
    counts = plan.workgroup_counts(params, errors, shapes)
    if not errors:
        errors = plan.coverage(lengths, counts)
    if errors:
        raise KernelError("; ".join(errors))
    return lengths, (counts[0], counts[1], counts[2])


def _words(data: bytes, word: bytes) -> Iterator[int]:
    """The indices of the 4-byte elements of ``data`` equal to ``word`` (searched in C)."""
    at = data.find(word)
    while at >= 0:
        if at % 4 == 0:
            yield at // 4
            at = data.find(word, at + 4)
        else:
            at = data.find(word, at + 4 - at % 4)


def _unwritten_problem(name: str, length: int, never: list[int]) -> str:
    first, last = never[0], never[-1]
    return (
        f"output {name!r}: {len(never)} of its {length} elements (indices {first} to {last}) "
        "were never written by the shader and would come back as zeros: make its 'length' "
        "the number of elements the shader writes, or dispatch enough workgroups to cover "
        "them; if the shader leaves elements at zero on purpose (a histogram, atomics, a "
        'sparse result), declare "written_by": "any" for this output (docs/kernels.md)'
    )


def _uniform_bytes(uniform: UniformBinding, params: Mapping[str, Any]) -> bytes:
    layout = "<" + "".join(_PACK[scalar] for _, scalar in uniform.fields)
    return struct.pack(layout, *(params[name] for name, _ in uniform.fields))


async def run(gpu: Gpu, params: dict[str, Any], inputs: dict[str, Array]) -> dict[str, Array]:
    plan, errors = _plan(params)
    if plan is None:
        raise KernelError("; ".join(errors))
    shapes = {name: (a.dtype, tuple(a.shape)) for name, a in inputs.items()}
    lengths, workgroups = _sizes(plan, params, shapes)
    bound: dict[int, Buffer] = {}
    owned: list[Buffer] = []
    try:
        uploaded: dict[str, Buffer] = {}
        for b in plan.inputs:
            if b.name not in uploaded:
                uploaded[b.name] = await gpu.upload(inputs[b.name].data)
                owned.append(uploaded[b.name])
            bound[b.binding] = uploaded[b.name]
        for out in plan.outputs:
            bound[out.binding] = await gpu.empty(4 * lengths[out.name])
            owned.append(bound[out.binding])
        for uniform in plan.uniforms:
            bound[uniform.binding] = await gpu.upload(
                _uniform_bytes(uniform, params), usage="uniform"
            )
            owned.append(bound[uniform.binding])
        await gpu.dispatch(params["shader"], plan.entry, bound, workgroups)
        data = {out.name: await gpu.read(bound[out.binding]) for out in plan.outputs}
        await _check_written(gpu, params, plan, bound, workgroups, lengths, data, owned)
        await _check_reads(gpu, params, plan, inputs, bound, workgroups, data, owned)
        return {
            out.name: Array(DTYPES[out.scalar], (lengths[out.name],), data[out.name])
            for out in plan.outputs
        }
    finally:
        gpu.release(*owned)


async def _check_written(
    gpu: Gpu,
    params: Mapping[str, Any],
    plan: Plan,
    bound: dict[int, Buffer],
    workgroups: tuple[int, int, int],
    lengths: Mapping[str, int],
    data: Mapping[str, bytes],
    owned: list[Buffer],
) -> None:
    """Raise when the dispatch left output elements unwritten (they would read as zeros).

    The manifest cannot say which elements a shader writes, so this watches: an element
    that is zero after the run is a candidate, and when there are any the dispatch runs
    again with those outputs filled with SENTINEL instead of zeros. An element still holding
    SENTINEL was never written. Outputs declared ``"written_by": "any"`` are not checked;
    the second run costs one more dispatch only for units whose outputs hold exact zeros.
    """
    candidates = {
        out.binding: out
        for out in plan.outputs
        if out.written_by != "any" and next(_words(data[out.name], _ZERO), None) is not None
    }
    if not candidates:
        return
    again = dict(bound)
    for number, out in candidates.items():
        fill = _MARK * lengths[out.name]
        again[number] = await gpu.upload(fill)
        owned.append(again[number])
    await gpu.dispatch(params["shader"], plan.entry, again, workgroups)
    problems = []
    for number, out in candidates.items():
        first = data[out.name]
        marked = await gpu.read(again[number])
        never = [i for i in _words(marked, _MARK) if first[4 * i : 4 * i + 4] == _ZERO]
        if never:
            problems.append(_unwritten_problem(out.name, lengths[out.name], never))
    if problems:
        raise KernelError("; ".join(problems))


def _read_suspects(
    plan: Plan, params: Mapping[str, Any], inputs: Mapping[str, Array]
) -> dict[int, int]:
    """Input bindings a param-bounded loop may read past the end of: {binding: elements to
    pad it to}. An input qualifies when the manifest declares no length for it (a declared
    one was checked at submission), an integer param exceeds its length, and the shader does
    not bound its reads by ``arrayLength`` (padding would change what it computes)."""
    ints = [v for v in params.values() if type(v) is int and v > 0]
    suspects = {}
    for b in plan.inputs:
        have = len(inputs[b.name].data) // 4
        over = [v for v in ints if v > have]
        if b.length is None and over:
            suspects[b.binding] = min(max(over) * 4, have + MAX_READ_PAD)  # vec4 reads too
    if suspects:  # the shader is read only when a param could overrun an input
        for binding in _bounded_by_array_length(params["shader"]):
            suspects.pop(binding, None)
    return suspects


@functools.lru_cache(maxsize=64)
def _bounded_by_array_length(shader: str) -> frozenset[int]:
    """Bindings whose variable the shader passes to ``arrayLength``."""
    source = strip_comments(shader)
    return frozenset(
        v.binding
        for v in scan(shader).bindings
        if re.search(rf"arrayLength\s*\(\s*&\s*{re.escape(v.name)}\b", source)
    )


async def _check_reads(
    gpu: Gpu,
    params: Mapping[str, Any],
    plan: Plan,
    inputs: Mapping[str, Array],
    bound: dict[int, Buffer],
    workgroups: tuple[int, int, int],
    data: Mapping[str, bytes],
    owned: list[Buffer],
) -> None:
    """Raise when the shader read past the end of an input: WebGPU then hands it zeros or
    other elements, and the answer is wrong without a sign. Only for inputs a param could
    overrun (see _read_suspects): the dispatch runs again with each such input followed by
    SENTINEL elements; outputs that change show reads beyond the real input."""
    suspects = _read_suspects(plan, params, inputs)
    if not suspects:
        return
    again = dict(bound)
    by_binding = {b.binding: b for b in plan.inputs}
    for number, pad_to in suspects.items():
        raw = inputs[by_binding[number].name].data
        again[number] = await gpu.upload(raw + _MARK * (pad_to - len(raw) // 4))
        owned.append(again[number])
    for out in plan.outputs:  # fresh zeros, as the first run had: a shader may accumulate
        again[out.binding] = await gpu.empty(len(data[out.name]))
        owned.append(again[out.binding])
    await gpu.dispatch(params["shader"], plan.entry, again, workgroups)
    changed = [
        out.name for out in plan.outputs if await gpu.read(again[out.binding]) != data[out.name]
    ]
    if changed:
        names = ", ".join(repr(by_binding[n].name) for n in suspects)
        sizes = ", ".join(
            f"{name!r} = {v}" for name, v in params.items() if type(v) is int and v > 0
        )
        raise KernelError(
            f"the shader reads past the end of input {names} (outputs {', '.join(changed)} "
            f"change with what lies beyond it), so its answer would be wrong: a param is "
            f"larger than the input ({sizes}; input lengths "
            + ", ".join(
                f"{by_binding[n].name!r} {len(inputs[by_binding[n].name].data) // 4}"
                for n in suspects
            )
            + "); pass a param that fits the input, bound the reads by arrayLength, or "
            "declare the input's 'length' so the mismatch is refused at submission"
        )


def reference(params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """A submitter's shader has no CPU twin; its results are validated by replication."""
    raise KernelError("the wgsl kernel has no CPU reference; use a replica quorum")


def flops(params: dict[str, Any], inputs: Described) -> float:
    """Output elements written, as a stand-in for work.

    The shader's true cost (its workgroup size and loop counts) cannot be read from the
    manifest, so credit counts one operation per output element; 0 when the sizes do not
    evaluate.
    """
    plan, _ = _plan(params)
    if plan is None:
        return 0.0
    errors: list[str] = []
    lengths = plan.output_lengths(params, errors, inputs)
    return 0.0 if errors else float(sum(lengths.values()))
