"""Builds the ``tabgrid-runtime`` wheel: the stdlib-only part of tabgrid that runs in Pyodide.

    python worker_js/runtime_wheel.py SERVER_DIR BASE_VERSION OUT_DIR

The browser needs only ``tabgrid.runtime`` and ``tabgrid.kernels``; the full ``tabgrid``
distribution depends on a server stack Pyodide cannot load. The wheel's project is
``worker_js/tabgrid-runtime/pyproject.toml`` (hatchling). Its sources live in server/tabgrid,
so ``build`` copies the files it ships (``sources``) beside that pyproject in a scratch folder
and runs ``python -m build --wheel --no-isolation`` there: the build backend writes the
wheel, its metadata and RECORD; no isolated build environment, which would need the network.

Reproducible: SOURCE_DATE_EPOCH is fixed (hatchling then stamps every entry with it and
normalizes permissions), so the same sources give the same bytes wherever they are built.
The local version is a hash of the shipped files, so Pyodide's lock file (which names the
wheel and its sha256) changes whenever they do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NAME = "tabgrid-runtime"
PROJECT = Path(__file__).resolve().parent / "tabgrid-runtime" / "pyproject.toml"
PACKAGES = ("tabgrid/runtime", "tabgrid/kernels")  # with their subpackages
SUFFIXES = (".py", ".wgsl")
# The wgpu-py backend is for native workers; the browser uses gpu_js.
EXCLUDE = frozenset({"tabgrid/runtime/gpu_native.py"})
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip entry can carry


def sources(server: Path) -> list[tuple[str, bytes]]:
    """(path inside the wheel, bytes) of every shipped file, sorted."""
    files = []
    for package in PACKAGES:
        for path in sorted((server / package).rglob("*")):
            name = path.relative_to(server).as_posix()
            if path.suffix in SUFFIXES and "__pycache__" not in path.parts and name not in EXCLUDE:
                files.append((name, path.read_bytes()))
    return files


def version(base_version: str, files: list[tuple[str, bytes]]) -> str:
    """``base_version`` with a local part that is a hash of the shipped files."""
    content = hashlib.sha256()
    for name, data in files:
        content.update(name.encode() + b"\0" + data + b"\0")
    return f"{base_version}+{content.hexdigest()[:12]}"


def build(server: Path, base_version: str, out_dir: Path, python: str = sys.executable) -> Path:
    """Write the wheel into ``out_dir`` and return its path; ``python`` runs the build."""
    files = sources(server)
    full_version = version(base_version, files)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tabgrid-runtime-") as tmp:
        project, built = Path(tmp) / "project", Path(tmp) / "wheel"
        project.mkdir()
        shutil.copyfile(PROJECT, project / "pyproject.toml")
        for name, data in files:
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            (project / name).write_bytes(data)
        env = {
            **os.environ,
            "TABGRID_RUNTIME_VERSION": full_version,
            "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
        }
        cmd = [python, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(built)]
        run = subprocess.run(
            [*cmd, str(project)], env=env, capture_output=True, text=True, check=False
        )
        if run.returncode != 0:
            raise SystemExit(
                f"building the {NAME} wheel failed ({' '.join(cmd)}):\n{run.stdout}{run.stderr}"
                "\nIt needs `build` and `hatchling` in that Python: pip install -e '.[dev]'."
            )
        (wheel,) = built.glob("*.whl")
        return Path(shutil.move(wheel, out_dir / wheel.name))


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
