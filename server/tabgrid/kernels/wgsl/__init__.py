"""A submitter's own WGSL compute shader, bound and dispatched as its manifest declares.

Params: ``shader`` (WGSL text), ``manifest`` (entry, bindings, workgroups; see
``manifest``) and any numbers the manifest's expressions and uniforms name. No
submitter Python runs on a volunteer's machine: only the shader, through WebGPU.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from tabgrid.kernels.wgsl.manifest import DTYPES, UniformBinding
from tabgrid.kernels.wgsl.plan import Described, Plan, plan_for
from tabgrid.runtime.array import Array
from tabgrid.runtime.errors import KernelError
from tabgrid.runtime.gpu import Buffer, Gpu

NAME = "wgsl"
VERSION = "1"
_PACK = {"f32": "f", "i32": "i", "u32": "I"}


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


def _sizes(plan: Plan, params: Mapping[str, Any]) -> tuple[dict[str, int], tuple[int, int, int]]:
    errors: list[str] = []
    lengths = plan.output_lengths(params, errors)
    counts = plan.workgroup_counts(params, errors)
    if errors:
        raise KernelError("; ".join(errors))
    return lengths, (counts[0], counts[1], counts[2])


def _uniform_bytes(uniform: UniformBinding, params: Mapping[str, Any]) -> bytes:
    layout = "<" + "".join(_PACK[scalar] for _, scalar in uniform.fields)
    return struct.pack(layout, *(params[name] for name, _ in uniform.fields))


async def run(gpu: Gpu, params: dict[str, Any], inputs: dict[str, Array]) -> dict[str, Array]:
    plan, errors = _plan(params)
    if plan is None:
        raise KernelError("; ".join(errors))
    lengths, workgroups = _sizes(plan, params)
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
        return {
            out.name: Array(
                DTYPES[out.scalar], (lengths[out.name],), await gpu.read(bound[out.binding])
            )
            for out in plan.outputs
        }
    finally:
        gpu.release(*owned)


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
    lengths = plan.output_lengths(params, errors)
    return 0.0 if errors else float(sum(lengths.values()))
