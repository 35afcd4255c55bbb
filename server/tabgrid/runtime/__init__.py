"""Runs one unit: the kernel loader and the GPU facade (stdlib only: it loads in Pyodide).

The wgpu-py backend lives in ``tabgrid.runtime.gpu_native`` and is imported on demand.
"""

from __future__ import annotations

from tabgrid.runtime.array import ITEMSIZE, Array
from tabgrid.runtime.errors import KernelError
from tabgrid.runtime.gpu import Buffer, Gpu
from tabgrid.runtime.loader import load_kernel, run_unit

__all__ = ["ITEMSIZE", "Array", "Buffer", "Gpu", "KernelError", "load_kernel", "run_unit"]
