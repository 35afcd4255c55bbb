"""The native worker: one process that speaks the websocket protocol and runs kernels through
wgpu-py."""

from tabgrid.worker.session import Worker

__all__ = ["Worker"]
