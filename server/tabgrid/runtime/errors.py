"""The one exception a unit's run reports to its submitter."""

from __future__ import annotations


class KernelError(Exception):
    """A unit cannot run: unknown kernel, bad parameters, or the GPU rejected the shader.

    The message is meant for the person who submitted the job, so it carries the
    compiler's or validator's own text.
    """
