"""Built-in kernels: each is ``<name>.py`` (the driver) with ``<name>.wgsl`` beside it, or a
subpackage ``<name>/`` holding its driver and shaders.

Stdlib only at import: the kernels load inside Pyodide, where there is no numpy.
"""

from __future__ import annotations

from importlib import resources
from types import ModuleType

NAMES = ("matmul", "mandelbrot", "wgsl", "checksum", "embed")


def get(name: str) -> ModuleType:
    """The kernel module called ``name``; an unknown name raises KernelError."""
    from tabgrid.runtime.loader import load_kernel

    return load_kernel(name)


def shader_source(filename: str) -> str:
    """A shader shipped in this package, read through importlib so it works from a wheel."""
    return resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
