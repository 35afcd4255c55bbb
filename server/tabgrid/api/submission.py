"""Checks a job submission before anything is stored: kernel, policy, every unit, every blob.

Every mistake found is reported at once, so a person fixes them all in one round. Unit checks
run for each of up to hundreds of thousands of units: nothing here may cost more per unit than
the kernel's own validate_unit and a dict merge.
"""

from __future__ import annotations

from collections.abc import Iterator
from math import prod
from types import ModuleType

from tabgrid import kernels
from tabgrid.blobs import BlobStore
from tabgrid.coordinator.rules import can_verify
from tabgrid.protocol import BlobRef, JobSubmit, Policy
from tabgrid.runtime.array import ITEMSIZE

Shapes = dict[str, tuple[str, tuple[int, ...]]]


def check(submit: JobSubmit, blobs: BlobStore) -> list[str]:
    """Every reason the job cannot run as submitted; [] when it can."""
    errors: list[str] = []
    if not submit.units:
        errors.append("units: a job needs at least one unit")
    kernel = _kernel(submit.kernel, errors)
    if kernel is not None:
        errors += policy_errors(submit.policy, submit.kernel, kernel)
        errors += _job_errors(kernel, submit)
        errors += _unit_errors(kernel, submit)
    errors += blob_errors(submit, blobs)
    return errors


def _kernel(name: str, errors: list[str]) -> ModuleType | None:
    if name not in kernels.NAMES:
        errors.append(f"kernel: unknown kernel {name!r}; known kernels: {', '.join(kernels.NAMES)}")
        return None
    return kernels.get(name)


def verifiable_kernels() -> list[str]:
    return [name for name in kernels.NAMES if can_verify(kernels.get(name))]


def policy_errors(policy: Policy, name: str, kernel: ModuleType) -> list[str]:
    errors = []
    if policy.error_rate is not None:
        return errors  # credibility decides how many results a unit needs, up to max_replicas
    if policy.quorum == 1 and not (can_verify(kernel) and policy.verifier):
        verifiable = ", ".join(verifiable_kernels()) or "none"
        errors.append(
            f"policy.quorum: 1 is allowed only for a kernel with a verifier, and {name!r} has "
            "none: a single unchecked result could be wrong and nothing would notice. Use "
            f"quorum 2 or more (kernels with a verifier: {verifiable})"
        )
    if policy.max_replicas < policy.quorum:
        errors.append(
            f"policy.max_replicas: {policy.max_replicas} replicas can never reach quorum "
            f"{policy.quorum}; set max_replicas to at least {policy.quorum}"
        )
    return errors


def _job_errors(kernel: ModuleType, submit: JobSubmit) -> list[str]:
    try:
        return list(kernel.validate_job(submit.params, shapes_of(submit.inputs)))
    except Exception as e:
        return [f"the kernel's job check failed: {type(e).__name__}: {e}"]


def _unit_errors(kernel: ModuleType, submit: JobSubmit) -> list[str]:
    validate = kernel.validate_unit
    job_params = submit.params
    job_inputs = shapes_of(submit.inputs)
    errors: list[str] = []
    for i, unit in enumerate(submit.units):
        params = job_params | unit.params if unit.params else job_params
        inputs = job_inputs | shapes_of(unit.inputs) if unit.inputs else job_inputs
        try:
            found = validate(params, inputs)
        except Exception as e:
            found = [f"the kernel's unit check failed: {type(e).__name__}: {e}"]
        if found:
            errors.extend(f"units[{i}]: {message}" for message in found)
    return errors


def shapes_of(inputs: dict[str, BlobRef]) -> Shapes:
    return {name: (ref.dtype, tuple(ref.shape)) for name, ref in inputs.items()}


def _refs(submit: JobSubmit) -> Iterator[tuple[int | None, str, BlobRef]]:
    for name, ref in submit.inputs.items():
        yield None, name, ref
    for i, unit in enumerate(submit.units):
        for name, ref in unit.inputs.items():
            yield i, name, ref


def _where(unit: int | None, name: str) -> str:
    return f"inputs.{name}" if unit is None else f"units[{unit}].inputs.{name}"


def blob_errors(submit: JobSubmit, blobs: BlobStore) -> list[str]:
    """Each referenced blob is stored and holds as many bytes as its dtype and shape need."""
    sizes: dict[str, int | None] = {}
    errors: list[str] = []
    for unit, name, ref in _refs(submit):
        known = ref.digest in sizes
        if not known:
            sizes[ref.digest] = _size(blobs, ref.digest)
        have = sizes[ref.digest]
        if have is None:
            if not known:
                errors.append(
                    f"{_where(unit, name)}: blob {ref.digest} is not stored; upload it first "
                    f"with PUT /api/v1/blobs/{ref.digest}"
                )
            continue
        need = prod(ref.shape) * ITEMSIZE[ref.dtype]
        if have != need:
            errors.append(
                f"{_where(unit, name)}: blob {ref.digest} holds {have} bytes, but {ref.dtype} "
                f"with shape {list(ref.shape)} needs {need}"
            )
    return errors


def _size(blobs: BlobStore, digest: str) -> int | None:
    try:
        return blobs.size(digest)
    except FileNotFoundError:
        return None
