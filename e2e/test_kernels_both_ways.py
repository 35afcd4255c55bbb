"""The same kernel, unchanged, on the same inputs: in the tab (Pyodide, navigator.gpu) and in
the native worker's runtime (wgpu-py), outputs compared."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import uvicorn
from playwright.sync_api import Browser, Page

from gpu_fixture import arrays, shared_gpu, to_numpy
from harness_server import HARNESS_PAGE, create_app
from integration.harness import free_port
from saxpy import SAXPY, SAXPY_MANIFEST
from tabgrid.kernels import mandelbrot
from tabgrid.runtime import run_unit


@pytest.fixture(scope="module")
def harness(browser: Browser) -> Iterator[Page]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    context = browser.new_context(bypass_csp=True)  # the test evaluates in the page
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{port}{HARNESS_PAGE}")
    page.locator('#ready[data-ready="1"]').wait_for(state="attached", timeout=60_000)
    page.evaluate("m => window.harness.call(m)", {"cmd": "load"})
    yield page
    context.close()
    server.should_exit = True
    thread.join(10)


def in_tab(page: Page, kernel: str, params: dict, inputs: dict[str, np.ndarray]) -> dict:
    message = {
        "cmd": "run",
        "kernel": kernel,
        "params": params,
        "inputs": [
            {
                "name": name,
                "dtype": a.dtype.name,
                "shape": list(a.shape),
                "data": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode(),
            }
            for name, a in inputs.items()
        ],
    }
    result = page.evaluate("m => window.harness.call(m, {b64: true})", message)
    assert "error" not in result, result["error"]
    return {
        o["name"]: np.frombuffer(base64.b64decode(o["data"]), dtype=o["dtype"]).reshape(o["shape"])
        for o in result["outputs"]
    }


# Playwright's sync API keeps an event loop running in the test's thread, so the native side
# runs in a thread of its own (always the same one: the GPU device stays with it).
_native_thread = ThreadPoolExecutor(1, thread_name_prefix="native-gpu")


def natively(kernel: str, params: dict, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        outputs = asyncio.run(run_unit(shared_gpu(), kernel, params, arrays(**inputs)))
        return {name: to_numpy(a) for name, a in outputs.items()}

    return _native_thread.submit(run).result(timeout=120)


def test_matmul_both_ways(harness: Page) -> None:
    rng = np.random.default_rng(11)
    inputs = {
        "a": rng.standard_normal((48, 80)).astype(np.float32),
        "b": rng.standard_normal((80, 40)).astype(np.float32),
    }
    tab, native = in_tab(harness, "matmul", {}, inputs), natively("matmul", {}, inputs)
    assert tab["c"].shape == native["c"].shape == (48, 40)
    # Two GPUs may round a float32 sum differently, never by more than this.
    np.testing.assert_allclose(tab["c"], native["c"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tab["c"], inputs["a"] @ inputs["b"], rtol=1e-4, atol=1e-4)


def test_mandelbrot_both_ways(harness: Page) -> None:
    params = {"x0": -2.0, "y0": -1.25, "x1": 0.5, "y1": 1.25, "width": 48, "height": 40}
    params["max_iter"] = 200
    tab, native = in_tab(harness, "mandelbrot", params, {}), natively("mandelbrot", params, {})
    assert tab["iters"].dtype == np.uint32 and tab["iters"].shape == (40, 48)
    assert mandelbrot.compare(tab, native)
    assert np.mean(tab["iters"] == native["iters"]) > 0.99


def test_a_submitters_wgsl_kernel_both_ways(harness: Page) -> None:
    x = np.arange(100, dtype=np.float32)
    y = np.linspace(-1, 1, 100, dtype=np.float32)
    params = {"shader": SAXPY, "manifest": SAXPY_MANIFEST, "a": 3.0, "n": 100}
    tab = in_tab(harness, "wgsl", params, {"x": x, "y": y})
    native = natively("wgsl", params, {"x": x, "y": y})
    np.testing.assert_array_equal(tab["out"], native["out"])
    np.testing.assert_array_equal(tab["out"], np.float32(3.0) * x + y)
