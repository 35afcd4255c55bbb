"""Serving the contribute page: security headers, caching, and a clear page when unbuilt."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from tabgrid.api.static import CSP, IMMUTABLE
from tabgrid.app import create_app
from tabgrid.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]


def _client(tmp_path: Path, web_dir: Path) -> TestClient:
    data = tmp_path / "data"
    settings = Settings(db=f"sqlite:///{data}/t.db", data_dir=data, web_dir=web_dir)
    return TestClient(create_app(settings))


@pytest.fixture
def built(tmp_path: Path) -> Path:
    web = tmp_path / "dist"
    (web / "static" / "pyodide" / "1.0").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>contribute</title>")
    (web / "static" / "worker-ABC123.js").write_text("self.onmessage = () => {};")
    (web / "static" / "pyodide" / "1.0" / "pyodide.mjs").write_text("export {};")
    (web / "static" / "pyodide" / "1.0" / "pyodide.asm.wasm").write_bytes(b"\0asm\1\0\0\0")
    return web


def test_contribute_page_is_revalidated_and_locked_to_its_origin(
    tmp_path: Path, built: Path
) -> None:
    with _client(tmp_path, built) as client:
        page = client.get("/")
    assert page.status_code == 200 and "contribute" in page.text
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["content-security-policy"] == CSP
    assert "default-src 'self'" in CSP and "'wasm-unsafe-eval'" in CSP
    assert "unsafe-inline" not in CSP and "http" not in CSP
    assert page.headers["x-content-type-options"] == "nosniff"


def test_static_files_are_immutable_with_exact_types(tmp_path: Path, built: Path) -> None:
    with _client(tmp_path, built) as client:
        worker = client.get("/static/worker-ABC123.js")
        module = client.get("/static/pyodide/1.0/pyodide.mjs")
        wasm = client.get("/static/pyodide/1.0/pyodide.asm.wasm")
        missing = client.get("/static/nothing.js")
    for response in (worker, module, wasm):
        assert response.status_code == 200
        assert response.headers["cache-control"] == IMMUTABLE
        assert response.headers["content-security-policy"] == CSP
    assert module.headers["content-type"].startswith("text/javascript")
    assert wasm.headers["content-type"] == "application/wasm"
    assert missing.status_code == 404


def test_unbuilt_page_says_how_to_build_it(tmp_path: Path) -> None:
    with _client(tmp_path, tmp_path / "nowhere") as client:
        page = client.get("/")
        api = client.get("/healthz")
    assert page.status_code == 503 and "./dev bundle" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert api.status_code == 200 and api.headers["content-security-policy"] == CSP


def test_runtime_wheel_holds_the_stdlib_runtime_and_kernels(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "worker_js"))
    try:
        import runtime_wheel
    finally:
        sys.path.pop(0)
    first = runtime_wheel.build(ROOT / "server", "0.1.0", tmp_path / "a")
    again = runtime_wheel.build(ROOT / "server", "0.1.0", tmp_path / "b")
    assert first.name == again.name and first.read_bytes() == again.read_bytes()
    with zipfile.ZipFile(first) as wheel:
        names = set(wheel.namelist())
        record = wheel.read(next(n for n in names if n.endswith("RECORD"))).decode()
    assert "tabgrid/runtime/gpu_js.py" in names and "tabgrid/kernels/matmul.wgsl" in names
    assert "tabgrid/runtime/gpu_native.py" not in names  # wgpu-py is not in the browser
    assert not any(n.startswith(("tabgrid/store", "tabgrid/app")) for n in names)
    assert all(name in record for name in names)
