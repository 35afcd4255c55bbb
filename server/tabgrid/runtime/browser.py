"""What the browser worker calls: run one unit on the tab's GPU, with JS values in and out.

Only importable inside Pyodide. Inputs arrive as a JS array of ``{name, dtype, shape,
data: Uint8Array, digest}`` (the digest of a verified blob, so kernels can keep it resident
on the GPU) and outputs leave in the same shape, so bytes are copied once each
way and nothing else is converted. Every failure is returned as ``{error}``: a kernel
that fails must become an error result, never an exception that kills the tab.
"""

from __future__ import annotations

import json
import time
from typing import Any

from js import Uint8Array  # type: ignore

from tabgrid.runtime.array import Array
from tabgrid.runtime.errors import error_kind
from tabgrid.runtime.gpu_js import JsGpu, js_object
from tabgrid.runtime.loader import run_unit

MAX_ERROR_CHARS = 4000

gpu = JsGpu()


async def adapter() -> Any:
    """The adapter's vendor, architecture and description (requests the device)."""
    await gpu.ensure_device()
    return js_object(gpu.adapter)


def _inputs(items: Any) -> dict[str, Array]:
    return {
        str(item.name): Array(
            str(item.dtype),
            tuple(item.shape.to_py()),
            item.data.to_bytes(),
            str(getattr(item, "digest", None) or ""),
        )
        for item in items
    }


def _outputs(outputs: dict[str, Array]) -> Any:
    items = []
    for name, array in outputs.items():
        data = Uint8Array.new(len(array.data))
        data.assign(array.data)
        items.append({"name": name, "dtype": array.dtype, "shape": list(array.shape), "data": data})
    return items


async def run(kernel: str, params_json: str, inputs: Any) -> Any:
    """``{outputs, ms}`` or ``{error, kind?, ms}``; ms is the time spent in the kernel, kind
    is runtime.errors.DETERMINISTIC for a shader that failed to compile or validate."""
    start = time.perf_counter()
    try:
        params = json.loads(params_json)
        outputs = await run_unit(gpu, kernel, params, _inputs(inputs))
        result: dict[str, Any] = {"outputs": _outputs(outputs)}
    except Exception as e:  # noqa: BLE001 - any failure is the unit's error result
        text = f"{type(e).__name__}: {e}"
        if len(text) > MAX_ERROR_CHARS:
            text = text[: MAX_ERROR_CHARS - 3] + "..."
        result = {"error": text}
        if error_kind(e):
            result["kind"] = error_kind(e)
    finally:
        gpu.reset()
    result["ms"] = (time.perf_counter() - start) * 1000
    return js_object(result)


async def lose_device() -> None:
    """Open the device if there is none yet, then destroy it, as a driver reset would."""
    await gpu.ensure_device()
    gpu.lose_device()
