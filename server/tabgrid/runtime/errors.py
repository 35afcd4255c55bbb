"""The exceptions a unit's run reports to its submitter, and how a worker labels them."""

from __future__ import annotations

# protocol.ResultItem.error_kind: a worker's claim that the error does not depend on the GPU.
DETERMINISTIC = "deterministic"


class KernelError(Exception):
    """A unit cannot run: unknown kernel, bad parameters, or the GPU rejected the shader.

    The message is meant for the person who submitted the job, so it carries the
    compiler's or validator's own text.
    """


class ShaderError(KernelError):
    """The shader failed to compile or its pipeline failed validation.

    WGSL compilation and pipeline validation are specified by WebGPU: every conforming GPU
    gives the same verdict, so retrying elsewhere cannot help. Workers report it with
    ``error_kind = DETERMINISTIC``; the coordinator does not take a worker's word for it
    (coordinator/recording.py)."""

    kind = DETERMINISTIC


def error_kind(error: BaseException) -> str:
    """``DETERMINISTIC`` for a shader error, ``""`` for everything else."""
    return DETERMINISTIC if isinstance(error, ShaderError) else ""
