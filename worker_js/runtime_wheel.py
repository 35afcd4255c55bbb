"""Builds the ``tabgrid-runtime`` wheel: the stdlib-only part of tabgrid that runs in Pyodide.

The browser needs only ``tabgrid.runtime`` and ``tabgrid.kernels``; the full ``tabgrid``
distribution depends on a server stack Pyodide cannot load. A wheel is a zip with three
metadata files, so it is written here directly: reproducible (fixed timestamps, sorted
entries) and with no network, which ``python -m build`` would need for its isolated
build environment.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

NAME = "tabgrid-runtime"
PACKAGES = ("tabgrid/runtime", "tabgrid/kernels")
SUFFIXES = (".py", ".wgsl")
# The wgpu-py backend is for native workers; the browser uses gpu_js.
EXCLUDE = frozenset({"tabgrid/runtime/gpu_native.py"})
EPOCH = (1980, 1, 1, 0, 0, 0)


def sources(server: Path) -> list[tuple[str, bytes]]:
    """(path inside the wheel, bytes) of every shipped file, sorted."""
    files = []
    for package in PACKAGES:
        for path in sorted((server / package).rglob("*")):
            name = path.relative_to(server).as_posix()
            if path.suffix in SUFFIXES and "__pycache__" not in path.parts and name not in EXCLUDE:
                files.append((name, path.read_bytes()))
    return files


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build(server: Path, base_version: str, out_dir: Path) -> Path:
    """Write the wheel into ``out_dir``; its local version is a hash of its contents."""
    files = sources(server)
    content = hashlib.sha256()
    for name, data in files:
        content.update(name.encode() + b"\0" + data + b"\0")
    version = f"{base_version}+{content.hexdigest()[:12]}"
    dist_info = f"tabgrid_runtime-{version}.dist-info"
    metadata = (
        "Metadata-Version: 2.1\n"
        f"Name: {NAME}\n"
        f"Version: {version}\n"
        "Summary: tabgrid's kernel runtime (stdlib only), for Pyodide and native workers\n"
        "Requires-Python: >=3.12\n"
    ).encode()
    wheel = b"Wheel-Version: 1.0\nGenerator: tabgrid\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files += [(f"{dist_info}/METADATA", metadata), (f"{dist_info}/WHEEL", wheel)]
    record_name = f"{dist_info}/RECORD"
    record = "\n".join([*(_record_line(n, d) for n, d in files), f"{record_name},,"]) + "\n"
    files.append((record_name, record.encode()))

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"tabgrid_runtime-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return path


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
