"""The GPU facade every kernel drives; a backend implements it over WebGPU.

All methods that touch the device are async so that the browser backend can await the
JavaScript promises of ``navigator.gpu``. Shader compile and validation errors surface as
``KernelError`` carrying the compiler's message.
"""

from __future__ import annotations

from typing import Literal, Protocol

Usage = Literal["storage", "uniform"]

# WebGPU's default limits: a unit that fits them runs on any conforming adapter, which is
# what a volunteer fleet needs, so kernels validate against these rather than the local GPU.
MAX_WORKGROUPS_PER_DIMENSION = 65535
MAX_STORAGE_BUFFER_BINDING_SIZE = 134_217_728
MAX_UNIFORM_BUFFER_BINDING_SIZE = 65536
MAX_STORAGE_BUFFERS_PER_STAGE = 8
MAX_INVOCATIONS_PER_WORKGROUP = 256


class Buffer(Protocol):
    """A device buffer; ``size`` is the number of bytes the caller asked for."""

    size: int


class Gpu(Protocol):
    adapter: dict[str, str]

    async def upload(self, data: bytes, *, usage: Usage = "storage") -> Buffer:
        """A buffer holding ``data``: read-only storage, or a uniform block."""
        ...

    async def resident(self, digest: str, data: bytes) -> Buffer:
        """A read-only storage buffer holding ``data``, kept on the device under ``digest``
        (the sha256 of ``data``, as ``Array.digest`` gives it) across units and jobs, so
        that the same bytes go up once per device. Release it like any other buffer: that
        unpins it, and the backend frees it when its byte bound or a lost device says so."""
        ...

    async def empty(self, size: int) -> Buffer:
        """A zeroed read_write storage buffer of ``size`` bytes."""
        ...

    async def dispatch(
        self,
        shader: str,
        entry: str,
        bindings: dict[int, Buffer],
        workgroups: tuple[int, int, int],
    ) -> None:
        """Run ``entry`` of ``shader`` with ``bindings`` in group 0."""
        ...

    async def read(self, buf: Buffer) -> bytes:
        """The first ``buf.size`` bytes of ``buf``, after all submitted work."""
        ...

    def release(self, *bufs: Buffer) -> None:
        """Free device memory now rather than at garbage collection (a resident buffer is
        only unpinned)."""
        ...
