"""The browser worker's start-up time and per-unit overhead, all measured in one run.

1. Start to first result through the real product: a coordinator (`tabgrid serve`), the
   contribute page in Chromium with a persistent profile, a small matmul job waiting. Cold is
   the first visit with an empty profile (Start pressed); warm are later visits of the same
   profile, where the remembered consent starts the page by itself. The figure is the page's
   #first-result[data-ms]: ms from the Web Worker's start to its first result sent.
2. A bare `loadPyodide()` in a Web Worker of the same browser and profile (e2e/harness), cold
   and warm, interleaved with the visits above; then "warm start minus bare load".
3. One 64x64 matmul unit, per-unit ms: browser.run as the worker calls it (Python driving
   WebGPU through Pyodide) against the same shader driven from plain JS, alternating in one
   worker; then their ratio. Over --max-ratio (or with --profile), where Python's time goes.

    ./dev bench browser [--warm 5] [--units 200] [--profile] [--json]

With --json the table goes to stderr and a JSON object of every figure to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
from playwright.sync_api import BrowserContext, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "server"), str(ROOT)]

from tests.integration.harness import Coordinator, _env, free_port  # noqa: E402

from tabgrid.client.sdk import Client  # noqa: E402
from tabgrid.client.tiling import matmul_units  # noqa: E402
from tabgrid.store import issue_token  # noqa: E402

CHROMIUM = os.environ.get("TABGRID_CHROMIUM", "/usr/bin/chromium")
# The same flags as the e2e tests: no calls to Google's hosts, WebGPU on SwiftShader.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-unsafe-webgpu",
    "--enable-features=Vulkan",
    "--use-vulkan=swiftshader",
    "--use-webgpu-adapter=swiftshader",
    "--enable-unsafe-swiftshader",
]
TILE = 64  # the side of a matmul unit, here and in the job the visits get
JOB_TILES = 8  # an 8x8 grid of units: 64 units, more than one visit computes
START_TARGET_S = 1.5  # warm start minus bare load, at most
RATIO_TARGET = 1.2  # Python-driven over plain JS per unit, at most
VISIT_TIMEOUT_S = 300


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


# ---- the product: coordinator and contribute page ---------------------------------------------


class Product:
    """A coordinator in its own process and a submitter that keeps a matmul job waiting."""

    def __init__(self, tmp: Path) -> None:
        data = tmp / "coordinator"
        data.mkdir()
        db = f"sqlite:///{data / 'tabgrid.db'}"
        token = issue_token(db, "submitter", "bench")
        self.coordinator = Coordinator(db, data, "--allow-same-address").start()
        self.client = Client(self.coordinator.url, token)
        self.job: int | None = None
        self.rng = np.random.default_rng(0)

    @property
    def url(self) -> str:
        return self.coordinator.url

    def put_work(self) -> None:
        """A fresh job of 64 small units, quorum 1 (matmul has a verifier), replacing the last."""
        if self.job is not None:
            self.client.cancel(self.job)
        side = TILE * JOB_TILES
        a = self.rng.standard_normal((side, TILE), dtype=np.float32)
        b = self.rng.standard_normal((TILE, side), dtype=np.float32)
        units, _ = matmul_units(a, b, TILE)
        self.job = self.client.submit("matmul", units, policy={"quorum": 1}, name="bench").id

    def close(self) -> None:
        self.client.close()
        self.coordinator.stop()


def visit_product(context: BrowserContext, url: str) -> dict[str, Any]:
    """Opens the contribute page; presses Start unless it starts by itself; reads data-ms."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(url + "/")
        timeout = VISIT_TIMEOUT_S * 1000
        # The page probes the GPU, then either starts by itself (consent remembered) or
        # enables Start; whichever comes first.
        started = "#status-box:not([data-state='idle'])"
        page.locator(f"#start:not([hidden]):enabled, {started}").first.wait_for(timeout=timeout)
        auto = page.locator(started).count() > 0
        if not auto:
            page.locator("#start").click()
        done = "#first-result[data-ms], #status-box[data-state='error']"
        page.locator(done).first.wait_for(state="attached", timeout=timeout)
        ms = page.locator("#first-result").get_attribute("data-ms")
        if ms is None:
            raise RuntimeError(f"the page failed: {page.locator('#status').inner_text()} {errors}")
        return {"ms": float(ms), "auto_started": auto}
    finally:
        page.close()


# ---- the harness: bare Pyodide and the matmul comparison ----------------------------------------


@contextmanager
def harness_server() -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, str(ROOT / "e2e" / "harness_server.py"), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/harness/manifest.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the harness server did not come up")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def harness_calls(context: BrowserContext, url: str, calls: list[dict[str, Any]]) -> list[Any]:
    """Makes the calls in a fresh harness page (a fresh worker), under the real CSP."""
    page: Page = context.new_page()
    try:
        page.goto(f"{url}/harness/harness.html?calls={quote(json.dumps(calls))}")
        result = page.locator("#result")
        page.locator("#result[data-value], #result[data-error], #ready[data-error]").first.wait_for(
            state="attached", timeout=VISIT_TIMEOUT_S * 1000
        )
        value = result.get_attribute("data-value")
        if value is None:
            error = result.get_attribute("data-error")
            error = error or page.locator("#ready").get_attribute("data-error")
            raise RuntimeError(f"harness: {error}")
        return json.loads(value)
    finally:
        page.close()


# Run inside Pyodide (harness 'python' command) around a bench-matmul, so that the units are
# called from JS exactly as in the measurement: the install wraps each step of browser.run in a
# timer (JsGpu.read split into its own steps), the collect puts everything back and reports the
# mean ms per unit of each step. The waits are the two awaits of JS promises; the rest runs
# Python on the worker's thread.
PROFILE_INSTALL = r"""
import asyncio, time
from tabgrid.kernels import matmul as _matmul
from tabgrid.runtime import browser as _browser, gpu_js as _gpu_js

_spans = {}
_saved = []

def _note(name, t0):
    _spans[name] = _spans.get(name, 0.0) + (time.perf_counter() - t0) * 1000

def _timed(owner, attr, name):
    original = getattr(owner, attr)
    _saved.append((owner, attr, original))
    if asyncio.iscoroutinefunction(original):
        async def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                _note(name, t0)
    else:
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                _note(name, t0)
    setattr(owner, attr, wrapper)

_timed(_browser, "run", "browser.run, whole")
_timed(_browser, "run_unit", "run_unit, whole")
_timed(_browser, "_inputs", "browser._inputs (JS inputs to Arrays)")
_timed(_browser, "_outputs", "browser._outputs (Arrays to Uint8Arrays)")
_timed(_browser, "js_object", "browser.js_object (the result to JS)")
_timed(_matmul, "validate_unit", "matmul.validate_unit")
for _attr in ("upload", "empty", "dispatch", "release"):
    _timed(_gpu_js.JsGpu, _attr, f"JsGpu.{_attr}")
_timed(_gpu_js.JsGpu, "read", "JsGpu.read (submit, WAIT for the GPU, bytes out)")
"""

PROFILE_COLLECT = r"""
for _owner, _attr, _original in reversed(_saved):
    setattr(_owner, _attr, _original)
_saved.clear()
_units = {units}
{{name: total / _units for name, total in _spans.items()}}
"""


# ---- the run ------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    product = Product(tmp)
    try:
        with harness_server() as harness, sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(tmp / "profile"), executable_path=CHROMIUM, args=CHROMIUM_FLAGS
            )
            try:
                return measure_in(context, product, harness, args)
            finally:
                context.close()
    finally:
        product.close()


def measure_in(
    context: BrowserContext, product: Product, harness: str, args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {"browser": context.browser.version if context.browser else ""}
    if not args.skip_start:
        measure_start(context, product, harness, args, out)
    return measure_matmul(context, harness, args, out)


def measure_start(
    context: BrowserContext,
    product: Product,
    harness: str,
    args: argparse.Namespace,
    out: dict[str, Any],
) -> None:
    def start_visit(label: str) -> dict[str, Any]:
        product.put_work()
        visit = visit_product(context, product.url)
        how = "started by itself" if visit["auto_started"] else "Start pressed"
        say(f"{label} start to first result: {visit['ms']:.0f} ms ({how})")
        return visit

    def bare_visit(label: str) -> float:
        (value,) = harness_calls(context, harness, [{"cmd": "bare"}])
        say(f"{label} bare loadPyodide: {value['ms']:.0f} ms")
        return value["ms"]

    say("cold visits (empty profile)")
    cold_start = start_visit("cold")
    cold_bare = bare_visit("cold")
    warm_start: list[dict[str, Any]] = []
    warm_bare: list[float] = []
    for i in range(args.warm):
        # Alternate which goes first, so that drift over the run hits both alike.
        if i % 2 == 0:
            warm_start.append(start_visit(f"warm {i + 1}"))
            warm_bare.append(bare_visit(f"warm {i + 1}"))
        else:
            warm_bare.append(bare_visit(f"warm {i + 1}"))
            warm_start.append(start_visit(f"warm {i + 1}"))
    warm_ms = [v["ms"] for v in warm_start]
    out["start"] = {
        "cold_ms": cold_start["ms"],
        "cold_auto_started": cold_start["auto_started"],
        "warm_ms": warm_ms,
        "warm_auto_started": [v["auto_started"] for v in warm_start],
        "warm_median_ms": median(warm_ms),
    }
    out["bare"] = {"cold_ms": cold_bare, "warm_ms": warm_bare, "warm_median_ms": median(warm_bare)}
    # Each warm visit has its bare load next to it in time: the median of the pairs'
    # differences is what a slow spell of the machine disturbs least.
    pairs = [start - bare for start, bare in zip(warm_ms, warm_bare, strict=True)]
    out["warm_start_minus_bare_ms"] = median(pairs)
    out["warm_start_minus_bare_each_ms"] = pairs
    out["warm_medians_difference_ms"] = median(warm_ms) - median(warm_bare)


def measure_matmul(
    context: BrowserContext, harness: str, args: argparse.Namespace, out: dict[str, Any]
) -> dict[str, Any]:
    say(f"matmul {TILE}x{TILE}: Python-driven vs plain JS, {args.units} units each")
    bench = {"cmd": "bench-matmul", "n": TILE, "units": args.units, "detail": True}
    load, adapter, matmul = harness_calls(
        context, harness, [{"cmd": "load"}, {"cmd": "adapter"}, bench]
    )
    out["adapter"] = adapter
    out["load_warm"] = load
    out["matmul"] = matmul
    if args.profile or matmul["ratio"] > args.max_ratio:
        out["profile"] = profile(context, harness, args)
    out["targets"] = {
        "warm_start_minus_bare_ms": START_TARGET_S * 1000,
        "ratio": args.max_ratio,
    }
    return out


def profile(context: BrowserContext, harness: str, args: argparse.Namespace) -> dict[str, Any]:
    """Where a Python-driven unit's time goes."""
    units = args.profile_units
    say(f"profiling: browser.run step by step, {units} units")
    calls = [
        {"cmd": "load"},
        # Warm first (the pipeline is compiled on the first unit), then time every step.
        {"cmd": "bench-matmul", "n": TILE, "units": 10, "warmup": 10},
        {"cmd": "python", "code": PROFILE_INSTALL},
        {"cmd": "bench-matmul", "n": TILE, "units": units, "warmup": 1},
        # warmup 1: one unit before the measured ones, so units + 1 ran with the timers on.
        {"cmd": "python", "code": PROFILE_COLLECT.format(units=units + 1)},
    ]
    _, _, _, timed, spans = harness_calls(context, harness, calls)
    return {"units": units, "matmul": timed, "mean_ms_per_unit": spans}


# ---- the report ---------------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value:,.0f} ms"


def table(r: dict[str, Any]) -> str:
    adapter = r.get("adapter") or {}
    gpu = ", ".join(v for v in adapter.values() if v) or "unknown"
    lines = [f"Chromium {r['browser']}, WebGPU adapter: {gpu}", ""]
    if "start" in r:
        lines += [*start_table(r), ""]
    lines += matmul_table(r)
    if "profile" in r:
        lines += ["", *profile_table(r["profile"])]
    return "\n".join(lines)


def row(label: str, value: str, note: str = "") -> str:
    """One line of the table: the label, the figure right-aligned in one column, a note."""
    return f"{label:<46}{value:>10}{'   ' + note if note else ''}"


def start_table(r: dict[str, Any]) -> list[str]:
    s, b, load = r["start"], r["bare"], r["load_warm"]
    auto = all(s["warm_auto_started"])
    warm_how = "started by itself" if auto else "Start pressed on some"
    extra = r["warm_start_minus_bare_ms"]
    target = r["targets"]["warm_start_minus_bare_ms"]
    each = lambda values: "each: " + ", ".join(ms(v) for v in values)  # noqa: E731
    n_start, n_bare = len(s["warm_ms"]), len(b["warm_ms"])
    verdict = "met" if extra <= target else "NOT met"
    return [
        "start to first result (the page's #first-result: from the worker's start)",
        row("  cold (empty profile, Start pressed)", ms(s["cold_ms"])),
        row(
            f"  warm (median of {n_start}, {warm_how})",
            ms(s["warm_median_ms"]),
            each(s["warm_ms"]),
        ),
        "bare loadPyodide() in a Web Worker (harness, same browser and profile)",
        row("  cold (empty cache)", ms(b["cold_ms"])),
        row(f"  warm (median of {n_bare})", ms(b["warm_median_ms"]), each(b["warm_ms"])),
        row(
            f"warm start minus bare load (median of {n_start} pairs)",
            ms(extra),
            f"target <= {ms(target)}: {verdict}",
        ),
        f"  (each pair: {', '.join(ms(v) for v in r['warm_start_minus_bare_each_ms'])}; "
        f"difference of the medians: {ms(r['warm_medians_difference_ms'])})",
        f"  (for reference, a warm full runtime load in the harness: {ms(load['ms'])} ="
        f" loadPyodide {ms(load['importMs'] + load['pyodideMs'])}"
        f" + tabgrid-runtime {ms(load['packageMs'])} + import {ms(load['moduleMs'])})",
    ]


def matmul_table(r: dict[str, Any]) -> list[str]:
    m = r["matmul"]
    ratio, max_ratio = m["ratio"], r["targets"]["ratio"]
    spread = lambda side: f"p10-p90 {m[side]['p10']:.1f}-{m[side]['p90']:.1f}"  # noqa: E731
    figure = lambda side: f"{m[side]['median']:.2f}"  # noqa: E731
    lines = [
        f"one {m['n']}x{m['n']} matmul unit, ms per unit, median of {m['units']} each, "
        f"alternating rounds of {m['round']} in one worker",
        row("  Python-driven (browser.run)", figure("py"), spread("py")),
        row("    of which inside browser.run", figure("pyInsideMs")),
        row("  plain JS, same shader", figure("js"), spread("js")),
    ]
    if "mirror" in m:
        lines += [
            row(
                "  plain JS making JsGpu's WebGPU calls",
                figure("mirror"),
                f"{m['mirrorRatio']:.2f} x plain JS",
            ),
            row("  an async Python no-op called from JS", figure("pyCall")),
        ]
    verdict = "met" if ratio <= max_ratio else "NOT met"
    lines += [
        row("  ratio Python / JS", f"{ratio:.2f}", f"target <= {max_ratio}: {verdict}"),
        f"  outputs: Python vs JS max |diff| {m['maxAbsDiff']:g}, "
        f"Python vs a CPU product {m['maxRefDiff']:.2g}",
    ]
    return lines


# The profile's steps as they nest; the "rest" rows are what no timer covered.
PROFILE_LAYOUT = [
    (1, "browser._inputs (JS inputs to Arrays)"),
    (1, "run_unit, whole"),
    (2, "matmul.validate_unit"),
    (2, "JsGpu.upload"),
    (2, "JsGpu.empty"),
    (2, "JsGpu.dispatch"),
    (2, "JsGpu.read (submit, WAIT for the GPU, bytes out)"),
    (2, "JsGpu.release"),
    (1, "browser._outputs (Arrays to Uint8Arrays)"),
    (1, "browser.js_object (the result to JS)"),
]


def profile_table(p: dict[str, Any]) -> list[str]:
    spans, m = p["mean_ms_per_unit"], p["matmul"]
    whole = spans["browser.run, whole"]
    level = {1: whole, 2: spans["run_unit, whole"]}
    covered = {1: 0.0, 2: 0.0}
    for depth, name in PROFILE_LAYOUT:
        covered[depth] += spans.get(name, 0.0)
    waits = sum(v for k, v in spans.items() if "WAIT" in k)
    outside = m["py"]["mean"] - m["pyInsideMs"]["mean"]
    line = lambda depth, name, value: row(f"  {'  ' * depth}{name}", f"{value:.2f}")  # noqa: E731
    lines = [
        f"where a Python-driven unit's time goes (mean ms per unit over {p['units']} units, "
        "timers on)",
        line(0, "unit called from JS, whole", m["py"]["mean"]),
        line(1, "crossing into Python and back", outside),
        line(1, "browser.run, whole", whole),
    ]
    for depth, name in PROFILE_LAYOUT:
        lines.append(line(depth + 1, name, spans.get(name, 0.0)))
        if name == "JsGpu.release":
            lines.append(line(depth + 1, "(rest of run_unit)", level[2] - covered[2]))
    lines.append(line(2, "(rest of browser.run)", level[1] - covered[1]))
    lines += [
        line(0, "the same unit from plain JS, whole", m["js"]["mean"]),
        f"  so: {waits:.2f} ms in JsGpu.read (mostly waiting for WebGPU), "
        f"{whole - waits:.2f} ms running Python inside browser.run, "
        f"{outside:.2f} ms getting in and out",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warm", type=int, default=5, help="warm visits of each kind")
    ap.add_argument("--units", type=int, default=200, help="matmul units of each side")
    ap.add_argument("--max-ratio", type=float, default=RATIO_TARGET)
    ap.add_argument("--profile", action="store_true", help="profile even if the ratio is met")
    ap.add_argument("--profile-units", type=int, default=100)
    ap.add_argument("--skip-start", action="store_true", help="only the matmul comparison")
    ap.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing (install Debian's chromium, or set TABGRID_CHROMIUM)")
    # A no-op when web/dist is current; otherwise the run would measure a stale build.
    subprocess.run([sys.executable, str(ROOT / "worker_js" / "build_web.py")], check=True)
    t0, load_before = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tabgrid-bench-browser-") as d:
        result = measure(args, Path(d))
    result["run_s"] = time.monotonic() - t0
    # Other work on the machine moves every figure here: say how busy it was.
    result["machine"] = {
        "cpus": os.cpu_count(),
        "load_average_1min": [load_before, os.getloadavg()[0]],
    }
    before, after = result["machine"]["load_average_1min"]
    text = table(result) + (
        f"\n\n(run took {result['run_s']:.0f} s on {result['machine']['cpus']} CPUs; "
        f"1-minute load average {before:.1f} before, {after:.1f} after)"
    )
    if args.json:
        print(text, file=sys.stderr)
        print(json.dumps(result, indent=2))
    else:
        print(text)


if __name__ == "__main__":
    main()
