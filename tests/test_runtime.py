"""The runtime: Array, the kernel loader, run_unit and the wgpu-py backend on a real device."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from typing import Any

import pytest

from gpu_fixture import run, shared_gpu
from tabgrid import kernels
from tabgrid.runtime import Array, KernelError, load_kernel, run_unit

DOUBLE = """
@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&y)) {
        y[id.x] = x[id.x] * 2u;
    }
}
"""


@pytest.fixture
def gpu() -> Any:
    return shared_gpu()


# ---- Array ----------------------------------------------------------------------------------


def test_array_checks_its_length() -> None:
    assert Array("float32", (2, 3), bytes(24)).size == 6
    with pytest.raises(ValueError, match="needs 24 bytes, got 20"):
        Array("float32", (2, 3), bytes(20))


def test_array_rejects_unknown_dtype_and_negative_shape() -> None:
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        Array("float16", (1,), bytes(2))
    with pytest.raises(ValueError, match="non-negative"):
        Array("uint8", (-1,), b"")


# ---- stdlib only ----------------------------------------------------------------------------

STDLIB_ONLY = """
import asyncio, sys
sys.modules["numpy"] = None
sys.modules["wgpu"] = None
{first}
import tabgrid.kernels as k
from tabgrid.runtime import Array, run_unit
for name in k.NAMES:
    assert k.get(name).NAME == name
out = asyncio.run(run_unit(None, "checksum", {{"a": 1}}, {{"x": Array("uint8", (3,), b"abc")}}))
assert out["digest"].shape == (32,)
try:
    import tabgrid.runtime.gpu_native
except ImportError:
    print("native backend needs wgpu")
"""


@pytest.mark.parametrize("first", ["import tabgrid.runtime", "import tabgrid.kernels"])
def test_runtime_and_kernels_import_without_numpy_or_wgpu(first: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", STDLIB_ONLY.format(first=first)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "native backend needs wgpu" in done.stdout


# ---- loader ---------------------------------------------------------------------------------


def test_load_kernel_finds_builtins() -> None:
    for name in kernels.NAMES:
        module = load_kernel(name)
        assert name == module.NAME
        assert kernels.get(name) is module


@pytest.mark.parametrize("name", ["nope", "expr", "wgsl_plan", "../matmul", ""])
def test_load_kernel_rejects_unknown_names(name: str) -> None:
    with pytest.raises(KernelError, match="unknown kernel") as info:
        load_kernel(name)
    assert "matmul" in str(info.value)  # the message lists what exists


def test_run_unit_reports_validation_errors() -> None:
    inputs = {
        "a": Array("float32", (2, 3), bytes(24)),
        "b": Array("float32", (4, 2), bytes(32)),
    }
    with pytest.raises(KernelError, match="a's columns must equal b's rows"):
        run(run_unit(None, "matmul", {}, inputs))  # type: ignore[arg-type]


def _fake_kernel(monkeypatch: pytest.MonkeyPatch, outputs: Any) -> None:
    async def fake_run(gpu: Any, params: Any, inputs: Any) -> Any:
        return outputs

    module = types.ModuleType("tabgrid.kernels.fake")
    module.validate_unit = lambda params, inputs: []  # type: ignore[attr-defined]
    module.run = fake_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tabgrid.kernels.fake", module)
    monkeypatch.setattr(kernels, "NAMES", (*kernels.NAMES, "fake"))


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ([1, 2], "returned list, not a dict"),
        ({"y": b"raw"}, "output 'y' is not a named Array"),
        ({3: Array("uint8", (1,), b"x")}, "output 3 is not a named Array"),
    ],
)
def test_run_unit_checks_what_a_kernel_returns(
    monkeypatch: pytest.MonkeyPatch, outputs: Any, message: str
) -> None:
    _fake_kernel(monkeypatch, outputs)
    with pytest.raises(KernelError, match=message):
        run(run_unit(None, "fake", {}, {}))  # type: ignore[arg-type]


# ---- the wgpu-py backend --------------------------------------------------------------------


def test_adapter_is_described(gpu: Any) -> None:
    assert set(gpu.adapter) == {"vendor", "architecture", "description"}
    assert gpu.adapter["vendor"] or gpu.adapter["description"]


@pytest.mark.parametrize("size", [1, 5, 16, 1001])
def test_upload_read_round_trip_of_any_size(gpu: Any, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))

    async def go() -> tuple[bytes, bytes]:
        buf, zeros = await gpu.upload(data), await gpu.empty(size)
        try:
            return await gpu.read(buf), await gpu.read(zeros)
        finally:
            gpu.release(buf, zeros)

    back, zeroed = run(go())
    assert back == data
    assert zeroed == bytes(size)


def test_dispatch_runs_a_shader_and_reuses_its_pipeline(gpu: Any) -> None:
    values = list(range(100))
    data = b"".join(v.to_bytes(4, "little") for v in values)

    async def go() -> bytes:
        x, y = await gpu.upload(data), await gpu.empty(len(data))
        try:
            await gpu.dispatch(DOUBLE, "main", {0: x, 1: y}, (2, 1, 1))
            await gpu.dispatch(DOUBLE, "main", {0: x, 1: y}, (2, 1, 1))
            return await gpu.read(y)
        finally:
            gpu.release(x, y)

    before = len(gpu._pipelines)
    out = run(go())
    assert [int.from_bytes(out[i : i + 4], "little") for i in range(0, len(out), 4)] == [
        2 * v for v in values
    ]
    assert len(gpu._pipelines) - before <= 1  # the second dispatch hit the cache


def _dispatch(gpu: Any, shader: str, entry: str = "main", bindings: int = 2) -> None:
    async def go() -> None:
        bufs = [await gpu.empty(16) for _ in range(bindings)]
        try:
            await gpu.dispatch(shader, entry, dict(enumerate(bufs)), (1, 1, 1))
        finally:
            gpu.release(*bufs)

    run(go())


def test_compile_error_carries_the_compilers_message(gpu: Any) -> None:
    broken = DOUBLE.replace("y[id.x] = x[id.x] * 2u;", "y[id.x] = x[id.x] * ;")
    with pytest.raises(KernelError) as info:
        _dispatch(gpu, broken)
    message = str(info.value)
    assert "expected expression" in message
    assert "y[id.x] = x[id.x] * ;" in message  # the compiler quotes the line


def test_unknown_entry_point_is_a_kernel_error(gpu: Any) -> None:
    with pytest.raises(KernelError, match="entry point 'nope'"):
        _dispatch(gpu, DOUBLE, entry="nope")


def test_bindings_that_do_not_match_the_layout_are_a_kernel_error(gpu: Any) -> None:
    with pytest.raises(KernelError, match="bind group"):
        _dispatch(gpu, DOUBLE, bindings=3)


def test_uniform_buffer_cannot_stand_in_for_storage(gpu: Any) -> None:
    async def go() -> None:
        x = await gpu.upload(bytes(16), usage="uniform")
        y = await gpu.empty(16)
        try:
            await gpu.dispatch(DOUBLE, "main", {0: x, 1: y}, (1, 1, 1))
        finally:
            gpu.release(x, y)

    with pytest.raises(KernelError, match="STORAGE"):
        run(go())


def test_a_lost_device_is_replaced_on_the_next_call() -> None:
    from tabgrid.runtime.gpu_native import NativeGpu

    async def go() -> None:
        gpu = await NativeGpu.open()
        old = await gpu.upload(b"abcd")
        gpu._device.destroy()  # what a driver reset or a removed GPU looks like
        with pytest.raises(KernelError, match="lost"):
            await gpu.upload(b"efgh")
        fresh = await gpu.upload(b"ijkl")
        assert await gpu.read(fresh) == b"ijkl"
        with pytest.raises(KernelError, match="device that was lost"):
            await gpu.read(old)

    run(go())
