"""The wgpu-py backend of the GPU facade, used by the native worker."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import wgpu

from tabgrid.runtime.errors import KernelError, ShaderError
from tabgrid.runtime.gpu import Usage
from tabgrid.runtime.resident import DEFAULT_RESIDENT_BYTES, ResidentCache

_STORAGE = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST
_UNIFORM = wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST
_STAGING = wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST
_PIPELINE_CACHE_SIZE = 64


@dataclass(slots=True)
class NativeBuffer:
    raw: Any
    size: int
    device_generation: int
    digest: str = ""  # set on buffers the resident cache holds


def _padded(size: int, usage: Usage) -> int:
    # Copies need 4-byte multiples and a zero-sized buffer cannot be bound; uniform blocks
    # are laid out in 16-byte units.
    unit = 16 if usage == "uniform" else 4
    return max(unit, -(-size // unit) * unit)


class NativeGpu:
    """One wgpu device; pipelines are cached by (sha256 of the shader, entry point).

    Open with ``await NativeGpu.open()``. When the device is lost the next call requests
    a new one; buffers made on the lost device are rejected with a KernelError, and the
    resident buffers (at most ``resident_bytes`` of them unpinned) are uploaded again.
    """

    def __init__(
        self,
        power_preference: str = "high-performance",
        resident_bytes: int = DEFAULT_RESIDENT_BYTES,
    ) -> None:
        self._power_preference = power_preference
        self._device: Any = None
        self._generation = 0
        self._pipelines: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self.residents = ResidentCache(resident_bytes, lambda buf: buf.raw.destroy())
        self.adapter: dict[str, str] = {}

    @classmethod
    async def open(
        cls,
        power_preference: str = "high-performance",
        resident_bytes: int = DEFAULT_RESIDENT_BYTES,
    ) -> NativeGpu:
        """Request an adapter and a device (slow: do it once per process)."""
        gpu = cls(power_preference, resident_bytes)
        await gpu._ensure_device()
        return gpu

    async def _ensure_device(self) -> Any:
        if self._device is None:
            adapter = await wgpu.gpu.request_adapter_async(power_preference=self._power_preference)
            if adapter is None:
                raise KernelError("no WebGPU adapter available")
            info = adapter.info
            self.adapter = {
                "vendor": str(info.get("vendor", "")),
                "architecture": str(info.get("architecture", "")),
                "description": str(info.get("device", "") or info.get("description", "")),
            }
            self._device = await adapter.request_device_async()
            self._generation += 1
            self._pipelines.clear()
            self.residents.clear()
        return self._device

    def lose_device(self) -> None:
        """Destroy the device, as a driver reset would (for tests of recovery)."""
        if self._device is not None:
            self._device.destroy()
            self._device = None

    @contextmanager
    def _errors(self, what: str, error: type[KernelError] = KernelError) -> Iterator[None]:
        """wgpu's errors as KernelError (``error`` where the GPU's verdict is the shader's own);
        a lost device is dropped so the next call gets one, and is never ``error``."""
        try:
            yield
        except (wgpu.GPUError, wgpu.GPUPipelineError, RuntimeError) as e:
            # A failed buffer map is reported as a RuntimeError, not a GPUError.
            if "lost" in str(e).lower():
                self._device = None
                raise KernelError(f"{what}: {e}") from e
            raise error(f"{what}: {e}") from e

    async def upload(self, data: bytes, *, usage: Usage = "storage") -> NativeBuffer:
        await self._ensure_device()
        return self._upload_now(data, usage)

    def _upload_now(self, data: bytes, usage: Usage = "storage") -> NativeBuffer:
        device = self._device
        padded = _padded(len(data), usage)
        flags = _UNIFORM if usage == "uniform" else _STORAGE
        with self._errors("upload"):
            raw = device.create_buffer_with_data(
                data=bytes(data) + bytes(padded - len(data)), usage=flags
            )
        return NativeBuffer(raw, len(data), self._generation)

    async def resident(self, digest: str, data: bytes) -> NativeBuffer:
        await self._ensure_device()
        # No await from here to add(): units in flight together share one upload.
        buf = self.residents.take(digest)
        if buf is not None:
            return buf
        buf = self._upload_now(data)
        if self.residents.fits(len(data)):
            buf.digest = digest
            self.residents.add(digest, buf, len(data))
        return buf

    async def empty(self, size: int) -> NativeBuffer:
        device = await self._ensure_device()
        with self._errors("allocate"):
            raw = device.create_buffer(size=_padded(size, "storage"), usage=_STORAGE)
        return NativeBuffer(raw, size, self._generation)

    def _pipeline(self, device: Any, shader: str, entry: str) -> Any:
        key = (hashlib.sha256(shader.encode()).hexdigest(), entry)
        pipeline = self._pipelines.get(key)
        if pipeline is None:
            with self._errors("shader", ShaderError):
                module = device.create_shader_module(code=shader)
                pipeline = device.create_compute_pipeline(
                    layout="auto", compute={"module": module, "entry_point": entry}
                )
            self._pipelines[key] = pipeline
            if len(self._pipelines) > _PIPELINE_CACHE_SIZE:
                self._pipelines.popitem(last=False)
        else:
            self._pipelines.move_to_end(key)
        return pipeline

    def _check_current(self, bufs: Iterable[NativeBuffer]) -> None:
        for buf in bufs:
            if buf.device_generation != self._generation:
                raise KernelError("buffer belongs to a GPU device that was lost")

    async def dispatch(
        self,
        shader: str,
        entry: str,
        bindings: dict[int, NativeBuffer],
        workgroups: tuple[int, int, int],
    ) -> None:
        device = await self._ensure_device()
        self._check_current(bindings.values())
        pipeline = self._pipeline(device, shader, entry)
        entries = [
            {"binding": n, "resource": {"buffer": b.raw, "offset": 0, "size": b.raw.size}}
            for n, b in sorted(bindings.items())
        ]
        with self._errors("dispatch"):
            group = device.create_bind_group(
                layout=pipeline.get_bind_group_layout(0), entries=entries
            )
            encoder = device.create_command_encoder()
            compute = encoder.begin_compute_pass()
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, group)
            compute.dispatch_workgroups(*workgroups)
            compute.end()
            device.queue.submit([encoder.finish()])

    async def read(self, buf: NativeBuffer) -> bytes:
        device = await self._ensure_device()
        self._check_current((buf,))
        with self._errors("read"):
            staging = device.create_buffer(size=buf.raw.size, usage=_STAGING)
            try:
                encoder = device.create_command_encoder()
                encoder.copy_buffer_to_buffer(buf.raw, 0, staging, 0, buf.raw.size)
                device.queue.submit([encoder.finish()])
                await staging.map_async(wgpu.MapMode.READ)
                data = bytes(staging.read_mapped(0, buf.raw.size, copy=False)[: buf.size])
                staging.unmap()
            finally:
                staging.destroy()
        return data

    def release(self, *bufs: NativeBuffer) -> None:
        for buf in bufs:
            if not (buf.digest and self.residents.give_back(buf.digest, buf)):
                buf.raw.destroy()
