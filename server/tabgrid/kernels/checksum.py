"""A diagnostic kernel that needs no GPU: the sha256 of a unit's inputs and params.

It measures the dispatch pipeline (leases, blobs, validation) without GPU time. The digest
covers, for each input in name order, its name, dtype, shape and bytes, then the params as
canonical JSON (sorted keys, no spaces).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from tabgrid.kernels.params import Described
from tabgrid.runtime.array import ITEMSIZE, Array
from tabgrid.runtime.gpu import Gpu

NAME = "checksum"
VERSION = "1"


def validate_job(params: dict[str, Any], inputs: Described) -> list[str]:
    """Params that serialise as JSON; inputs of any known dtype."""
    try:
        _canonical(params)
    except (TypeError, ValueError) as e:
        return [f"params must be JSON values: {e}"]
    return validate_unit(params, inputs)


def validate_unit(params: dict[str, Any], inputs: Described) -> list[str]:
    return [
        f"input {n!r} has unknown dtype {d!r}" for n, (d, _) in inputs.items() if d not in ITEMSIZE
    ]


def _canonical(params: dict[str, Any]) -> bytes:
    return json.dumps(params, sort_keys=True, separators=(",", ":")).encode()


def digest(
    params: dict[str, Any], inputs: Iterable[tuple[str, str, tuple[int, ...], bytes]]
) -> bytes:
    """sha256 over (name, dtype, shape, data) of each input, sorted by name, then the params."""
    h = hashlib.sha256()
    for name, dtype, shape, data in sorted(inputs):
        header = json.dumps([name, dtype, list(shape), len(data)], separators=(",", ":"))
        h.update(header.encode())
        h.update(data)
    h.update(_canonical(params))
    return h.digest()


async def run(gpu: Gpu, params: dict[str, Any], inputs: dict[str, Array]) -> dict[str, Array]:
    parts = [(name, a.dtype, a.shape, a.data) for name, a in inputs.items()]
    return {"digest": Array("uint8", (32,), digest(params, parts))}


def reference(params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    parts = []
    for name, value in inputs.items():
        arr = np.ascontiguousarray(value)
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        parts.append((name, str(arr.dtype.name), arr.shape, arr.tobytes()))
    return {"digest": np.frombuffer(digest(params, parts), dtype=np.uint8).copy()}


def flops(params: dict[str, Any], inputs: Described) -> float:
    """No GPU work, so no credit."""
    return 0.0
