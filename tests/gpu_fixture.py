"""One NativeGpu for the whole test session, and conversions between Array and numpy.

Requesting a device takes seconds on a software rasteriser, so every test module that
needs a GPU shares this one: define ``gpu`` in the module as ``return shared_gpu()``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Coroutine
from typing import Any

import numpy as np

from tabgrid.runtime.array import Array


@functools.cache
def shared_gpu() -> Any:
    from tabgrid.runtime.gpu_native import NativeGpu

    return asyncio.run(NativeGpu.open())


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def to_array(value: np.ndarray) -> Array:
    value = np.ascontiguousarray(value)
    value = value.astype(value.dtype.newbyteorder("<"), copy=False)
    return Array(value.dtype.name, tuple(int(n) for n in value.shape), value.tobytes())


def to_numpy(array: Array) -> np.ndarray:
    return np.frombuffer(array.data, dtype=np.dtype(array.dtype).newbyteorder("<")).reshape(
        array.shape
    )


def arrays(**values: np.ndarray) -> dict[str, Array]:
    return {name: to_array(v) for name, v in values.items()}
