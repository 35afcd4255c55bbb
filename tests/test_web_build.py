"""Building web/dist: the runtime wheel, the build's inputs, the page <-> Web Worker messages."""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from tabgrid import protocol

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "server"


def _worker_js(name: str) -> ModuleType:
    sys.path.insert(0, str(ROOT / "worker_js"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


@pytest.fixture(scope="module")
def runtime_wheel() -> ModuleType:
    return _worker_js("runtime_wheel")


@pytest.fixture(scope="module")
def built_wheel(runtime_wheel: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree's sources (each build takes about half a second)."""
    return runtime_wheel.build(SERVER, "0.1.0", tmp_path_factory.mktemp("wheel"))


def _copy_packages(server: Path, to: Path) -> Path:
    for package in ("tabgrid/runtime", "tabgrid/kernels"):
        shutil.copytree(
            server / package, to / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return to


def _entries(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_the_runtime_wheel_is_the_same_bytes_from_a_copy_with_other_times_and_modes(
    tmp_path: Path, runtime_wheel: ModuleType, built_wheel: Path
) -> None:
    copy = _copy_packages(SERVER, tmp_path / "copy")
    for i, path in enumerate(sorted(p for p in copy.rglob("*") if p.is_file())):
        os.utime(path, (1_900_000_000 + i, 1_900_000_000 + i))
        path.chmod(0o600 if i % 2 else 0o755)
    again = runtime_wheel.build(copy, "0.1.0", tmp_path / "again")
    assert again.name == built_wheel.name and again.read_bytes() == built_wheel.read_bytes()
    with zipfile.ZipFile(again) as zf:
        # SOURCE_DATE_EPOCH (1980-01-01) on every entry, not the files' times.
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_the_runtime_wheel_ships_exactly_its_sources_with_a_true_record(
    runtime_wheel: ModuleType, built_wheel: Path
) -> None:
    wheel = built_wheel
    entries = _entries(wheel)
    version = runtime_wheel.version("0.1.0", runtime_wheel.sources(SERVER))
    dist_info = f"tabgrid_runtime-{version}.dist-info"
    assert wheel.name == f"tabgrid_runtime-{version}-py3-none-any.whl"
    payload = {n: d for n, d in entries.items() if not n.startswith(dist_info + "/")}
    assert payload == dict(runtime_wheel.sources(SERVER))
    assert set(entries) - set(payload) == {
        f"{dist_info}/{n}" for n in ("METADATA", "WHEEL", "RECORD")
    }
    metadata = entries[f"{dist_info}/METADATA"].decode()
    assert "Name: tabgrid-runtime\n" in metadata and f"Version: {version}\n" in metadata
    assert "Requires-Dist" not in metadata  # stdlib only: Pyodide installs nothing else
    assert "Tag: py3-none-any" in entries[f"{dist_info}/WHEEL"].decode()
    record = {}
    for line in entries[f"{dist_info}/RECORD"].decode().splitlines():
        name, digest, size = line.rsplit(",", 2)
        record[name] = (digest, size)
    for name, data in entries.items():
        if name == f"{dist_info}/RECORD":
            assert record[name] == ("", "")
            continue
        sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert record[name] == (f"sha256={sha}", str(len(data))), name


def test_the_runtime_wheel_takes_subpackages_and_its_version_follows_the_contents(
    tmp_path: Path, runtime_wheel: ModuleType
) -> None:
    server = tmp_path / "server"
    files = {
        "tabgrid/runtime/__init__.py": "",
        "tabgrid/runtime/gpu_native.py": "import wgpu\n",
        "tabgrid/runtime/__pycache__/gpu.cpython-312.pyc": "",
        "tabgrid/kernels/__init__.py": "NAMES = ()\n",
        "tabgrid/kernels/notes.md": "not shipped\n",
        "tabgrid/kernels/wgsl/__init__.py": "",
        "tabgrid/kernels/wgsl/add.wgsl": "// add\n",
        "tabgrid/store/jobs.py": "import sqlmodel\n",
    }
    for name, text in files.items():
        (server / name).parent.mkdir(parents=True, exist_ok=True)
        (server / name).write_text(text)
    first = runtime_wheel.build(server, "0.1.0", tmp_path / "a")
    payload = {n for n in _entries(first) if ".dist-info/" not in n}
    assert payload == {
        "tabgrid/runtime/__init__.py",
        "tabgrid/kernels/__init__.py",
        "tabgrid/kernels/wgsl/__init__.py",
        "tabgrid/kernels/wgsl/add.wgsl",
    }
    (server / "tabgrid/kernels/wgsl/add.wgsl").write_text("// add, faster\n")
    second = runtime_wheel.build(server, "0.1.0", tmp_path / "b")
    assert first.name != second.name  # a new version, so a new lock file for Pyodide
    assert second.name.startswith(
        f"tabgrid_runtime-{runtime_wheel.version('0.1.0', runtime_wheel.sources(server))}-"
    )
    # What the wheel does not ship does not move its version.
    (server / "tabgrid/kernels/notes.md").write_text("still not shipped\n")
    (server / "tabgrid/runtime/gpu_native.py").write_text("import wgpu  # changed\n")
    assert second.name.startswith(
        f"tabgrid_runtime-{runtime_wheel.version('0.1.0', runtime_wheel.sources(server))}-"
    )


def test_the_build_hashes_every_part_of_the_pages_and_the_worker_but_not_its_output() -> None:
    build_web = _worker_js("build_web")
    inputs = {p.relative_to(ROOT).as_posix() for p in build_web._inputs()}
    for name in (
        "web/contribute/index.html",
        "web/contribute/page.js",
        "web/contribute/page.css",
        "web/console/console.html",
        "web/console/console.js",
        "web/console/api.js",
        "web/shared.css",
        "worker_js/src/worker.js",
        "worker_js/src/page-messages.js",
        "worker_js/build_web.py",
        "worker_js/runtime_wheel.py",
        "worker_js/tabgrid-runtime/pyproject.toml",
        "worker_js/package-lock.json",
        "server/tabgrid/kernels/matmul.wgsl",
        "server/tabgrid/runtime/gpu_js.py",
    ):
        assert name in inputs, name
    assert not any(n.startswith(("web/dist/", "web/.dist-")) for n in inputs)
    assert not any(n.startswith("server/tabgrid/store/") or "__pycache__" in n for n in inputs)
    for page, (template, entries) in build_web.PAGES.items():
        assert (build_web.WEB / template).is_file(), page
        assert all((build_web.WEB / entry).is_file() for entry in entries), page


def _message_types(source: str, name: str) -> set[str]:
    block = re.search(rf"export const {name} = Object\.freeze\(\{{(.*?)\}}\);", source, re.S)
    assert block, f"{name} not found in page-messages.js"
    return set(re.findall(r"^\s*[A-Z_]+: '([a-z-]+)',$", block.group(1), re.M))


def test_page_and_worker_messages_share_no_name_with_the_websocket_protocol() -> None:
    source = (ROOT / "worker_js" / "src" / "page-messages.js").read_text()
    to_worker = _message_types(source, "ToWorker")
    to_page = _message_types(source, "ToPage")
    assert to_worker == {"start", "pause", "resume", "cap", "stop", "lose-device"}
    assert to_page == {"state", "adapter", "identity", "figures", "tile", "work", "log"}
    tags = {
        cls.__struct_config__.tag
        for cls in vars(protocol).values()
        if isinstance(cls, type) and issubclass(cls, msgspec.Struct)
    } - {None}
    assert {"hello", "welcome", "stats", "result", "bye"} <= tags
    assert not (to_worker | to_page) & tags
