"""The browser backend of the GPU facade: Python in Pyodide drives ``navigator.gpu``.

Only importable inside Pyodide. Crossing the JS FFI costs more than most WebGPU calls it
makes, so the hot path avoids converting Python structures and round trips:

- pipelines, their bind group layouts and bind group descriptors are cached (keyed by the
  shader text itself: Python caches a string's hash, a sha256 per dispatch costs more);
- buffer descriptors that never change are converted once, and bytes move with one
  ``assign``/``to_bytes`` copy into mapped ranges;
- dispatches and the read that follows share one command encoder and one submit, given a
  JS array (a Python list would be converted on every call);
- one validation error scope covers a unit's encoding and submit, and is awaited after
  the read's map, so a unit waits for the GPU once.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from js import Array, GPUBufferUsage, GPUMapMode, Object, Uint8Array, navigator  # type: ignore
from pyodide.ffi import JsException, jsnull, to_js  # type: ignore

from tabgrid.runtime.errors import KernelError, ShaderError
from tabgrid.runtime.gpu import Usage
from tabgrid.runtime.resident import DEFAULT_RESIDENT_BYTES, ResidentCache

_STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST
_UNIFORM = GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST
_STAGING = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST
_PIPELINE_CACHE_SIZE = 64


def _absent(value: Any) -> bool:
    # WebGPU answers "nothing" with JS null, which Pyodide maps to jsnull, not None.
    return value is None or value is jsnull


def js_object(value: dict[str, Any]) -> Any:
    """A plain JS object (not a Map) from a dict; JS proxies inside pass through."""
    return to_js(value, dict_converter=Object.fromEntries)


@dataclass(slots=True)
class JsBuffer:
    raw: Any
    size: int
    device_generation: int
    digest: str = ""  # set on buffers the resident cache holds


@dataclass(slots=True)
class _Pipeline:
    raw: Any
    layout: Any
    # Bind group descriptors by binding numbers; only their buffers change per dispatch.
    groups: dict[tuple[int, ...], Any]


def _padded(size: int, usage: Usage) -> int:
    unit = 16 if usage == "uniform" else 4
    return max(unit, -(-size // unit) * unit)


class JsGpu:
    """One WebGPU device of the tab; a lost device is replaced on the next call, and the
    resident buffers (at most ``resident_bytes`` of them unpinned) are uploaded again."""

    def __init__(
        self,
        power_preference: str = "high-performance",
        resident_bytes: int = DEFAULT_RESIDENT_BYTES,
    ) -> None:
        self._options = js_object({"powerPreference": power_preference})
        self._device: Any = None
        self._generation = 0
        self._pipelines: OrderedDict[tuple[str, str], _Pipeline] = OrderedDict()
        self._encoder: Any = None  # commands not submitted yet, inside an error scope
        self._buffer_descriptors: dict[tuple[int, int, bool], Any] = {}
        self.residents = ResidentCache(resident_bytes, lambda buf: buf.raw.destroy())
        self.adapter: dict[str, str] = {}
        self.lost_reason = ""

    async def ensure_device(self) -> Any:
        if self._device is not None:
            return self._device
        if _absent(getattr(navigator, "gpu", None)):
            raise KernelError("this browser has no WebGPU (navigator.gpu is missing)")
        adapter = await navigator.gpu.requestAdapter(self._options)
        if _absent(adapter):
            raise KernelError("WebGPU found no adapter")
        info = adapter.info
        self.adapter = {
            "vendor": str(info.vendor or ""),
            "architecture": str(info.architecture or ""),
            "description": str(info.description or ""),
        }
        device = await adapter.requestDevice()
        self._device = device
        self._generation += 1
        self._pipelines.clear()
        self._buffer_descriptors.clear()
        self.residents.clear()
        self._encoder = None
        asyncio.ensure_future(self._watch(device, self._generation))
        return device

    async def _watch(self, device: Any, generation: int) -> None:
        info = await device.lost
        if generation == self._generation:
            self.lost_reason = str(info.message or info.reason or "lost")
            self._device = None

    def lose_device(self) -> None:
        """Destroy the device, as a driver reset would (for tests of recovery)."""
        if self._device is not None:
            self._device.destroy()

    def _check_current(self, *bufs: JsBuffer) -> None:
        for buf in bufs:
            if buf.device_generation != self._generation or self._device is None:
                why = f" ({self.lost_reason})" if self.lost_reason else ""
                raise KernelError(f"buffer belongs to a GPU device that was lost{why}")

    def _descriptor(self, size: int, flags: int, mapped: bool) -> Any:
        key = (size, flags, mapped)
        desc = self._buffer_descriptors.get(key)
        if desc is None:
            desc = js_object({"size": size, "usage": flags, "mappedAtCreation": mapped})
            if len(self._buffer_descriptors) < 256:
                self._buffer_descriptors[key] = desc
        return desc

    async def upload(self, data: bytes, *, usage: Usage = "storage") -> JsBuffer:
        return self._upload_now(await self.ensure_device(), data, usage)

    async def resident(self, digest: str, data: bytes) -> JsBuffer:
        device = await self.ensure_device()
        # No await from here to add(): units in flight together share one upload.
        buf = self.residents.take(digest)
        if buf is not None:
            return buf
        buf = self._upload_now(device, data, "storage")
        if self.residents.fits(len(data)):
            buf.digest = digest
            self.residents.add(digest, buf, len(data))
        return buf

    def _upload_now(self, device: Any, data: bytes, usage: Usage) -> JsBuffer:
        flags = _UNIFORM if usage == "uniform" else _STORAGE
        raw = device.createBuffer(self._descriptor(_padded(len(data), usage), flags, True))
        if data:
            Uint8Array.new(raw.getMappedRange(), 0, len(data)).assign(data)
        raw.unmap()
        return JsBuffer(raw, len(data), self._generation)

    async def empty(self, size: int) -> JsBuffer:
        device = await self.ensure_device()
        raw = device.createBuffer(self._descriptor(_padded(size, "storage"), _STORAGE, False))
        return JsBuffer(raw, size, self._generation)

    async def _pipeline(self, device: Any, shader: str, entry: str) -> _Pipeline:
        key = (shader, entry)
        pipeline = self._pipelines.get(key)
        if pipeline is not None:
            self._pipelines.move_to_end(key)
            return pipeline
        device.pushErrorScope("validation")
        module = device.createShaderModule(js_object({"code": shader}))
        info = await module.getCompilationInfo()
        errors = [
            f"line {m.lineNum}:{m.linePos}: {m.message}" for m in info.messages if m.type == "error"
        ]
        desc = js_object({"layout": "auto", "compute": {"module": module, "entryPoint": entry}})
        raw = device.createComputePipeline(desc)
        scope = await device.popErrorScope()
        if errors or not _absent(scope):
            detail = "; ".join(errors) or str(scope.message)
            raise ShaderError(f"shader: {detail}")
        pipeline = _Pipeline(raw, raw.getBindGroupLayout(0), {})
        self._pipelines[key] = pipeline
        if len(self._pipelines) > _PIPELINE_CACHE_SIZE:
            self._pipelines.popitem(last=False)
        return pipeline

    async def dispatch(
        self,
        shader: str,
        entry: str,
        bindings: dict[int, JsBuffer],
        workgroups: tuple[int, int, int],
    ) -> None:
        device = await self.ensure_device()
        self._check_current(*bindings.values())
        pipeline = await self._pipeline(device, shader, entry)
        numbers = tuple(sorted(bindings))
        desc = pipeline.groups.get(numbers)
        if desc is None:
            entries = [{"binding": n, "resource": {"buffer": None}} for n in numbers]
            desc = pipeline.groups[numbers] = js_object(
                {"layout": pipeline.layout, "entries": entries}
            )
        for entry_desc, n in zip(desc.entries, numbers, strict=True):
            entry_desc.resource.buffer = bindings[n].raw
        encoder = self._open_encoder(device)
        group = device.createBindGroup(desc)
        compute = encoder.beginComputePass()
        compute.setPipeline(pipeline.raw)
        compute.setBindGroup(0, group)
        compute.dispatchWorkgroups(*workgroups)
        compute.end()

    def reset(self) -> None:
        """Drops commands a failed unit encoded but never read, so the next unit starts clean."""
        if self._encoder is not None and self._device is not None:
            self._device.popErrorScope()
        self._encoder = None

    def _open_encoder(self, device: Any) -> Any:
        if self._encoder is None:
            device.pushErrorScope("validation")
            self._encoder = device.createCommandEncoder()
        return self._encoder

    async def read(self, buf: JsBuffer) -> bytes:
        device = await self.ensure_device()
        self._check_current(buf)
        staging = device.createBuffer(self._descriptor(buf.raw.size, _STAGING, False))
        try:
            encoder = self._open_encoder(device)
            self._encoder = None
            encoder.copyBufferToBuffer(buf.raw, 0, staging, 0, buf.raw.size)
            device.queue.submit(Array.of(encoder.finish()))
            scope = device.popErrorScope()
            try:
                await staging.mapAsync(GPUMapMode.READ)
            except JsException as e:
                await self._raise_scope(scope)
                raise KernelError(f"read: {e}") from None
            await self._raise_scope(scope)
            data = Uint8Array.new(staging.getMappedRange(), 0, buf.size).to_bytes()
            staging.unmap()
            return data
        finally:
            staging.destroy()

    @staticmethod
    async def _raise_scope(scope: Any) -> None:
        error = await scope
        if not _absent(error):
            raise KernelError(f"dispatch: {error.message}")

    def release(self, *bufs: JsBuffer) -> None:
        for buf in bufs:
            if not (buf.digest and self.residents.give_back(buf.digest, buf)):
                buf.raw.destroy()
