"""Builds all of web/dist/: the contribute page, the console, the Web Worker, Pyodide, the wheel.

    python worker_js/build_web.py [--force] [--check]      (./dev bundle runs it)

Its inputs: web/contribute/ (the contribute page), web/console/ (the operator console),
web/shared.css (the rules both pages share), worker_js/src/ (the Web Worker, and
page-messages.js, which the contribute page imports too), the npm packages of
worker_js/package.json (esbuild, Pyodide, uPlot) and, for the runtime wheel
(runtime_wheel.py), tabgrid/runtime and tabgrid/kernels. esbuild bundles the three entry
scripts and the two stylesheets; each page's template gets their served names.

Every file under web/dist/static/ has a content-hashed or versioned name, so the server
can send it with an immutable cache header; only web/dist/index.html and console.html name
them. The build is skipped when a hash of its inputs matches the one recorded by the last
build.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import runtime_wheel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WEB = ROOT / "web"
DIST = WEB / "dist"
SERVER = ROOT / "server"
STAMP = DIST / ".inputs"
PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip")
RUNTIME_VERSION = "0.1.0"
WORKER_ENTRY = HERE / "src" / "worker.js"
# Each built page (web/dist/NAME): its template under web/ and the entry points it names.
PAGES = {
    "index.html": ("contribute/index.html", ("contribute/page.js", "contribute/page.css")),
    "console.html": ("console/console.html", ("console/console.js", "console/console.css")),
}
PAGE_ENTRIES = tuple(WEB / entry for _, entries in PAGES.values() for entry in entries)


def say(text: str) -> None:
    print(f"bundle: {text}", file=sys.stderr, flush=True)


def _inputs() -> list[Path]:
    files = [HERE / "package.json", HERE / "package-lock.json", HERE / "build_web.py"]
    files += [HERE / "runtime_wheel.py", runtime_wheel.PROJECT]
    files += sorted((HERE / "src").rglob("*"))
    files += [p for p in sorted(WEB.rglob("*")) if not _built(p)]
    files += [p for p in sorted((SERVER / "tabgrid").rglob("*")) if p.parent.name != "__pycache__"]
    return [p for p in files if p.is_file() and _shipped(p)]


def _built(path: Path) -> bool:
    """Under web/dist, or under the .dist-* folder a build is writing."""
    top = path.relative_to(WEB).parts[0]
    return top == DIST.name or top.startswith(".dist-")


def _shipped(path: Path) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    if rel.startswith("server/"):
        return any(rel.startswith(f"server/{pkg}/") for pkg in runtime_wheel.PACKAGES)
    return True


def inputs_hash() -> str:
    digest = hashlib.sha256()
    for path in _inputs():
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _npm_ci() -> None:
    # node_modules is current when npm's own record of it matches the lock file.
    marker = HERE / "node_modules" / ".package-lock.json"
    lock = HERE / "package-lock.json"
    if marker.is_file() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    say("installing npm packages (pyodide, esbuild) from package-lock.json")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)


def _kernel_names() -> list[str]:
    """The built-in kernels, read from the package without importing it."""
    tree = ast.parse((SERVER / "tabgrid" / "kernels" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "NAMES" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise SystemExit("bundle: NAMES not found in tabgrid/kernels/__init__.py")


def _esbuild(out: Path) -> dict[str, str]:
    """Bundle the Web Worker and the pages' scripts and styles; returns entry name -> served path.

    Entry names are file names (worker.js, page.js, page.css, console.js, console.css): the
    output is flat, web/dist/static/NAME-HASH.EXT.
    """
    meta = out / "meta.json"
    cmd = [
        str(HERE / "node_modules" / ".bin" / "esbuild"),
        str(WORKER_ENTRY),
        *(str(entry) for entry in PAGE_ENTRIES),
        "--bundle",
        "--format=esm",
        "--target=es2022",
        "--minify",
        "--sourcemap=linked",
        "--entry-names=[name]-[hash]",
        f"--outdir={out / 'static'}",
        f"--metafile={meta}",
        "--log-level=warning",
        f"--define:KERNELS={json.dumps(_kernel_names())}",
    ]
    # The pages import npm packages by bare name; they live in worker_js/node_modules.
    env = {**os.environ, "NODE_PATH": str(HERE / "node_modules")}
    subprocess.run(cmd, check=True, env=env)
    names: dict[str, str] = {}
    for output, info in json.loads(meta.read_text())["outputs"].items():
        entry = info.get("entryPoint")
        if entry:
            names[Path(entry).name] = "/static/" + Path(output).name
    meta.unlink()
    return names


def _pyodide(out: Path, python: str) -> tuple[str, str]:
    """Copy Pyodide and a lock file that includes the runtime wheel; returns their URLs."""
    package = HERE / "node_modules" / "pyodide"
    version = json.loads((package / "package.json").read_text())["version"]
    target = out / "static" / "pyodide" / version
    target.mkdir(parents=True)
    for name in PYODIDE_FILES:
        shutil.copy2(package / name, target / name)
    wheel = runtime_wheel.build(SERVER, RUNTIME_VERSION, target, python)
    lock = target / "tabgrid-lock.json"
    cmd = [python, "-m", "pyodide_cli", "lockfile", "add-wheels"]
    cmd += ["--input", str(package / "pyodide-lock.json"), "--output", str(lock), str(wheel)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    data = lock.read_bytes()
    hashed = target / f"tabgrid-lock-{hashlib.sha256(data).hexdigest()[:12]}.json"
    lock.rename(hashed)
    base = f"/static/pyodide/{version}/"
    return base, base + hashed.name


def _pages(out: Path, names: dict[str, str], pyodide_index: str, pyodide_lock: str) -> None:
    """Each page template with its placeholders (%PAGE_JS%, %CONSOLE_CSS%, ...) filled in."""
    values = {f"%{Path(e).stem.upper()}_{Path(e).suffix[1:].upper()}%": names[e] for e in names}
    values |= {"%PYODIDE_INDEX%": pyodide_index, "%PYODIDE_LOCK%": pyodide_lock}
    for page, (template, _) in PAGES.items():
        html = (WEB / template).read_text(encoding="utf-8")
        for key, value in values.items():
            html = html.replace(key, value)
        (out / page).write_text(html, encoding="utf-8")
    (out / "manifest.json").write_text(
        json.dumps({**names, "pyodide_index": pyodide_index, "pyodide_lock": pyodide_lock})
    )


def build(python: str) -> None:
    _npm_ci()
    with tempfile.TemporaryDirectory(dir=WEB, prefix=".dist-") as tmp:
        out = Path(tmp) / "dist"
        out.mkdir()
        names = _esbuild(out)
        index, lock = _pyodide(out, python)
        _pages(out, names, index, lock)
        (out / ".inputs").write_text(inputs_hash() + "\n")
        # Swap in whole, so a server never sees a half-built directory for long.
        old = Path(tmp) / "old"
        if DIST.exists():
            DIST.rename(old)
        out.rename(DIST)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="build even when up to date")
    parser.add_argument("--check", action="store_true", help="exit 1 when a build is needed")
    args = parser.parse_args()
    current = STAMP.is_file() and STAMP.read_text().strip() == inputs_hash()
    if args.check:
        return 0 if current else 1
    if current and not args.force:
        return 0
    say("building web/dist (the pages, the Web Worker, Pyodide and the runtime wheel)")
    build(os.environ.get("TABGRID_BUNDLE_PYTHON", sys.executable))
    say(f"built {DIST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
