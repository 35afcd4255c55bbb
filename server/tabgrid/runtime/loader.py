"""Find a kernel by name and run one unit of it."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from tabgrid.runtime.array import Array
from tabgrid.runtime.errors import KernelError
from tabgrid.runtime.gpu import Gpu

KERNEL_PACKAGE = "tabgrid.kernels"


def load_kernel(name: str) -> ModuleType:
    """The module ``tabgrid.kernels.<name>``; an unknown name raises KernelError."""
    # Read lazily: the kernels package imports this package, so it may still be loading.
    names: tuple[str, ...] = importlib.import_module(KERNEL_PACKAGE).NAMES
    if name not in names:
        raise KernelError(f"unknown kernel {name!r}; known kernels: {', '.join(names)}")
    return importlib.import_module(f"{KERNEL_PACKAGE}.{name}")


def _check_outputs(kernel: str, outputs: Any) -> dict[str, Array]:
    if not isinstance(outputs, dict):
        raise KernelError(f"kernel {kernel!r} returned {type(outputs).__name__}, not a dict")
    for name, value in outputs.items():
        if not isinstance(name, str) or not isinstance(value, Array):
            raise KernelError(f"kernel {kernel!r} output {name!r} is not a named Array")
    return outputs


async def run_unit(
    gpu: Gpu, kernel: str, params: dict[str, Any], inputs: dict[str, Array]
) -> dict[str, Array]:
    """Validate one unit (merged job and unit params and inputs), run it, check its outputs.

    The Array type checks dtype, shape and byte length when it is built, so a returned
    Array is consistent by construction.
    """
    module = load_kernel(kernel)
    described = {name: (a.dtype, a.shape) for name, a in inputs.items()}
    errors = module.validate_unit(params, described)
    if errors:
        raise KernelError("; ".join(errors))
    return _check_outputs(kernel, await module.run(gpu, params, inputs))
