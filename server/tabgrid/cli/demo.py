"""``tabgrid demo``: a coordinator, native workers and the demo jobs on this machine: a matmul,
a mandelbrot and an embedding job (cli/demo_embed.py).

The coordinator runs as a child process (its log goes to a file so the live job lines stay
readable); the workers run in this process. Ctrl-C stops the workers first, then the
coordinator. The data directory keeps the database, the token and the workers' identities,
so running the demo again picks up the same jobs instead of queueing new copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tabgrid import png
from tabgrid.cli.common import DEMO_DATA, TOKEN_FILE, CliError, on_interrupt

OPERATOR_TOKEN_FILE = "operator-token"

if TYPE_CHECKING:
    import numpy as np

    from tabgrid.client.sdk import Client
    from tabgrid.protocol import JobStatus

HOST = "127.0.0.1"
MATMUL_N, MATMUL_TILE = 256, 64
MANDEL_W, MANDEL_H, MANDEL_TILE, MANDEL_ITER = 512, 384, 64, 256
MANDEL_REGION = (-2.2, -1.2, 1.0, 1.2)  # x0, y0, x1, y1: 4:3 like the image
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
POLL_S = 1.0


@dataclass
class DemoJob:
    label: str
    id: int
    about: str
    # Called once when the job is done; returns a sentence about the outcome.
    finish: Callable[[Client], str] | None = None


@dataclass
class Watch:
    hinted: set[int] = field(default_factory=set)
    ended: set[int] = field(default_factory=set)
    unreachable: bool = False


def run_demo(port: int = 8000, data_dir: Path = DEMO_DATA, workers: int = 1) -> int:
    """Run until Ctrl-C; returns the exit status."""
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://{HOST}:{port}"
    coordinator = Coordinator(port, data_dir)
    coordinator.start()
    try:
        coordinator.wait_ready(url)
        token = demo_token(url, coordinator.db, data_dir)
        operator = demo_token(url, coordinator.db, data_dir, "operator")
        from tabgrid.client.sdk import Client

        with Client(url, token) as client:
            jobs = submit_jobs(client, data_dir)
            jobs += submit_embedding(client, url, operator)
            example = write_example(data_dir)
            write_wgsl_example(data_dir)
            print_intro(url, data_dir, coordinator, jobs, example, workers)
            asyncio.run(_live(url, client, jobs, data_dir, workers, coordinator))
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: stop the coordinator at once
    finally:
        coordinator.stop()
    print(f"demo stopped; its data stays in {data_dir}/ for the next run", file=sys.stderr)
    return 0


# ---- the coordinator -------------------------------------------------------------------------


class Coordinator:
    """``tabgrid serve`` as a child process in its own session, so Ctrl-C reaches us first."""

    def __init__(self, port: int, data_dir: Path) -> None:
        from tabgrid.settings import sqlite_url

        self.port = port
        self.data_dir = data_dir
        self.db = sqlite_url(data_dir)
        self.log_path = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tabgrid.cli",
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--data",
            str(self.data_dir),
            "--db",
            self.db,
            # One machine, one address: every worker and tab here connects from 127.0.0.1,
            # so replicas can only be kept apart by worker, not by address.
            "--allow-same-address",
        ]

    def start(self) -> None:
        if not port_free(HOST, self.port):
            raise CliError(
                f"port {self.port} on {HOST} is in use (an earlier demo or another server?). "
                "Stop it, or pick another port with --port"
            )
        with self.log_path.open("ab") as log:
            log.write(f"\n---- demo coordinator, {time.ctime()} ----\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, url: str, timeout: float = START_TIMEOUT_S) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise CliError(f"the coordinator did not answer within {timeout:.0f} s\n{self.tail()}")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise CliError(f"the coordinator stopped (exit {self.proc.returncode})\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        last = text.rstrip().splitlines()[-lines:]
        return f"last lines of {self.log_path}:\n" + "\n".join("  " + line for line in last)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly on SIGINT
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the server will: a port left in TIME_WAIT by a previous run is free to reuse.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# ---- token and jobs --------------------------------------------------------------------------


# What each demo token may do, checked against the coordinator before a saved one is reused.
_TOKEN_CHECKS = {"submitter": "/api/v1/jobs?limit=1", "operator": "/api/v1/tokens"}


def demo_token(url: str, db: str, data_dir: Path, role: str = "submitter") -> str:
    """The saved token of ``role`` when the coordinator still takes it, else a new one."""
    path = data_dir / (TOKEN_FILE if role == "submitter" else OPERATOR_TOKEN_FILE)
    with contextlib.suppress(OSError):
        saved = path.read_text(encoding="utf-8").strip()
        if saved and token_works(url, saved, _TOKEN_CHECKS[role]):
            return saved
    from tabgrid.store import open_store

    store = open_store(db)
    try:
        _, token = store.create_token(role, f"demo {role}")
    finally:
        store.close()
    write_secret(path, token)
    return token


def token_works(url: str, token: str, path: str) -> bool:
    import httpx

    response = httpx.get(url + path, headers={"authorization": f"Bearer {token}"}, timeout=30)
    if response.status_code in (401, 403):
        return False
    response.raise_for_status()
    return True


def write_secret(path: Path, text: str) -> None:
    """Write a file only its owner can read, even if it existed with looser permissions."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.chmod(path, 0o600)
        f.write(text + "\n")


def submit_jobs(client: Client, data_dir: Path) -> list[DemoJob]:
    return [submit_matmul(client), submit_mandelbrot(client, data_dir)]


def submit_embedding(client: Client, url: str, operator: str) -> list[DemoJob]:
    """The embedding job, or none (saying why) when MiniLM cannot be registered."""
    from tabgrid.cli import demo_embed

    try:
        problem = demo_embed.ensure_model(url, operator)
    except Exception as exc:  # the demo goes on with its other jobs
        problem = f"importing {demo_embed.MODEL} failed: {exc}"
    if problem:
        print(f"no embedding job: {problem}", file=sys.stderr)
        return []
    job_id, finish = demo_embed.submit(client)
    about = (
        f"{len(demo_embed.TEXTS)} short texts and a query with {demo_embed.MODEL}, quorum 2; "
        "at the end, a semantic search over them"
    )
    return [DemoJob("embeddings", job_id, about, finish)]


def submit_matmul(client: Client) -> DemoJob:
    import numpy as np

    from tabgrid.client.tiling import matmul_units

    # A fixed seed gives the same blobs on every run, so the idempotency key stays truthful.
    rng = np.random.default_rng(20240)
    a = rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32)
    b = rng.standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32)
    units, assemble = matmul_units(a, b, MATMUL_TILE)
    n, t = MATMUL_N, MATMUL_TILE
    status = client.submit(
        "matmul",
        units,
        # One result is enough when the Freivalds check passes; replicas that do come later
        # may differ in the last bits on another GPU, hence allclose.
        policy={"quorum": 1, "compare": "allclose", "rtol": 1e-4, "atol": 1e-4},
        name=f"demo: matmul {n}x{n} @ {n}x{n}",
        idempotency_key=f"demo-matmul-{n}-{t}",
    )

    def finish(client: Client) -> str:
        c = assemble(client.results(status.id))
        expected = a.astype(np.float64) @ b.astype(np.float64)
        worst = float(np.max(np.abs(c - expected)))
        return (
            f"C = A @ B assembled from {len(units)} tiles; largest difference to numpy {worst:.1e}"
        )

    about = (
        f"{len(units)} tiles of {t}x{t}, quorum 1: a tile is accepted on one result "
        "once the Freivalds check passes"
    )
    return DemoJob("matmul", status.id, about, finish)


def submit_mandelbrot(client: Client, data_dir: Path) -> DemoJob:
    from tabgrid.client.tiling import assemble_mandelbrot, mandelbrot_units

    w, h, t = MANDEL_W, MANDEL_H, MANDEL_TILE
    units = mandelbrot_units(*MANDEL_REGION, w, h, t, MANDEL_ITER)
    status = client.submit(
        "mandelbrot",
        units,
        policy={"quorum": 2, "compare": "kernel"},
        name=f"demo: mandelbrot {w}x{h}",
        idempotency_key=f"demo-mandelbrot-{w}x{h}-{t}-{MANDEL_ITER}",
    )

    def finish(client: Client) -> str:
        image = assemble_mandelbrot(client.results(status.id), w, h, t)
        path = data_dir / "mandelbrot.png"
        path.write_bytes(png.encode(shade(image, MANDEL_ITER), level=9))
        return f"image saved to {path}"

    about = (
        f"{len(units)} tiles of {t}x{t}, quorum 2: each tile needs two agreeing results "
        "from two different workers"
    )
    return DemoJob("mandelbrot", status.id, about, finish)


def write_example(data_dir: Path) -> Path:
    """A small job file with its .npy inputs, for trying ``tabgrid submit``."""
    import json

    import numpy as np

    folder = data_dir / "example"
    path = folder / "job.json"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    a = rng.standard_normal((128, 64), dtype=np.float32)
    np.save(folder / "a0.npy", a[:64])
    np.save(folder / "a1.npy", a[64:])
    np.save(folder / "b.npy", rng.standard_normal((64, 64), dtype=np.float32))
    job = {
        "kernel": "matmul",
        "name": "example: two row blocks of A @ B",
        "policy": {"quorum": 1, "compare": "allclose", "rtol": 1e-4, "atol": 1e-4},
        "inputs": {"b": "b.npy"},
        "units": [{"inputs": {"a": "a0.npy"}}, {"inputs": {"a": "a1.npy"}}],
    }
    path.write_text(json.dumps(job, indent=2) + "\n", encoding="utf-8")
    return path


# docs/examples/reduce_sum.wgsl (tests/test_kernel_guide.py checks that they agree)
REDUCE_SUM_WGSL = """\
// Sum of a float32 array, as one partial sum per workgroup.
// Each workgroup of 256 invocations loads 512 elements (two each), then halves the number
// of live values every step (a tree) until one is left, which it writes to partial[group].
// The host adds the partial sums (in float64) for the total.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;

const WG: u32 = 256u;
var<workgroup> scratch: array<f32, 256>;

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(workgroup_id) group: vec3<u32>,
) {
    let n = arrayLength(&x);
    let i = group.x * (2u * WG) + local.x;
    var value = 0.0;
    if (i < n) {
        value = x[i];
    }
    if (i + WG < n) {
        value = value + x[i + WG];
    }
    scratch[local.x] = value;
    workgroupBarrier();
    for (var live = WG / 2u; live > 0u; live = live / 2u) {
        if (local.x < live) {
            scratch[local.x] = scratch[local.x] + scratch[local.x + live];
        }
        workgroupBarrier();
    }
    if (local.x == 0u) {
        partial[group.x] = scratch[0];
    }
}
"""


def write_wgsl_example(data_dir: Path) -> Path:
    """A job file for the researcher's own shader: the sum of docs/kernels.md, two units.

    The shader sits beside it as sum.wgsl, named by ``"shader": "sum.wgsl"``.
    """
    import json

    import numpy as np

    folder = data_dir / "example"
    path = folder / "sum.json"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sum.wgsl").write_text(REDUCE_SUM_WGSL, encoding="utf-8")
    rng = np.random.default_rng(11)
    for i in range(2):
        np.save(folder / f"x{i}.npy", rng.standard_normal(65536, dtype=np.float32))
    size = "ceil(len(x) / 512)"
    job = {
        "kernel": "wgsl",
        "name": "example: your own WGSL shader, a sum of 2 x 65536 floats",
        "params": {
            "shader": "sum.wgsl",
            "manifest": {
                "entry": "main",
                "bindings": [
                    {"binding": 0, "input": "x"},
                    {
                        "binding": 1,
                        "output": "partial",
                        "type": "f32",
                        "length": size,
                        "written_by": "workgroup",
                    },
                ],
                "workgroups": [size, 1, 1],
            },
        },
        "policy": {"quorum": 2, "compare": "allclose", "rtol": 1e-5, "atol": 1e-5},
        "units": [{"inputs": {"x": f"x{i}.npy"}} for i in range(2)],
    }
    path.write_text(json.dumps(job, indent=2) + "\n", encoding="utf-8")
    return path


# ---- pictures --------------------------------------------------------------------------------


def shade(iters: np.ndarray, max_iter: int) -> np.ndarray:
    """Escape counts as 8-bit grey: points in the set black, fast escapes dark."""
    import numpy as np

    level = np.log1p(iters.astype(np.float64)) / np.log1p(max_iter)
    grey = (255 * level).astype(np.uint8)
    grey[iters >= max_iter] = 0
    return grey


# ---- what the person sees --------------------------------------------------------------------


def cli_prefix() -> str:
    # ./dev sets this so the printed commands are the ones the person has been typing.
    return os.environ.get("TABGRID_CLI", "tabgrid")


def data_option(data_dir: Path) -> str:
    return "" if data_dir == DEMO_DATA else f" --data {data_dir}"


def worker_command(url: str) -> str:
    return f"{cli_prefix()} worker --url {url}"


def print_intro(
    url: str,
    data_dir: Path,
    coordinator: Coordinator,
    jobs: list[DemoJob],
    example: Path,
    workers: int,
) -> None:
    tg, data = cli_prefix(), data_option(data_dir)
    out = [
        "",
        "tabgrid demo",
        f"  contribute      {url}/   in a browser with WebGPU: press Start",
        f"  console         {url}/console   sign in with the token in "
        f"{data_dir / OPERATOR_TOKEN_FILE}",
        f"  data            {data_dir}/   (database, blobs, {TOKEN_FILE}, logs)",
        f"  coordinator log {coordinator.log_path}",
        "  note            replicas of a unit must come from different workers, but not from",
        "                  different addresses: one machine, one address (127.0.0.1)",
        "",
        "jobs",
        *(_job_line(job) for job in jobs),
        "",
        f"  add a worker    {worker_command(url)}",
        f"  submit a job    {tg} submit {example} --url {url}{data} --wait",
        f"  your own shader {tg} submit {example.parent / 'sum.json'} --url {url}{data} --wait",
        "                  (a WGSL sum, quorum 2: needs two workers; see docs/kernels.md)",
        f"  list jobs       {tg} jobs --url {url}{data}",
        f"  fetch results   {tg} results {jobs[0].id} -o results/ --url {url}{data}",
        "",
    ]
    if workers:
        plural = "s" if workers > 1 else ""
        out.append(f"{workers} native worker{plural} starting (wgpu); Ctrl-C stops the demo.")
    else:
        out.append("no worker started (--workers 0): add one with the command above.")
    print("\n".join(out), flush=True)


def _job_line(job: DemoJob) -> str:
    return textwrap.fill(
        job.about,
        width=96,
        initial_indent=f"  {job.id:<4} {job.label:<11} ",
        subsequent_indent=" " * 19,
    )


class Display:
    """One line per job, redrawn in place on a terminal, printed on change otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty()
        self.drawn = 0
        self.last: list[str] = []
        self.printed: dict[int, tuple[object, float]] = {}

    def show(self, jobs: list[DemoJob], statuses: list[JobStatus]) -> None:
        from tabgrid.client.progress import render

        width = max(shutil.get_terminal_size((100, 24)).columns - 1, 40)
        lines = [
            f"{job.label:<11} {render(status, width - 12)}"
            for job, status in zip(jobs, statuses, strict=True)
        ]
        if self.tty:
            self._redraw(lines)
        else:
            self._print_changes(statuses, lines)

    def note(self, text: str) -> None:
        if self.tty and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        self.drawn = 0

    def _redraw(self, lines: list[str]) -> None:
        if self.drawn and lines == self.last:
            return
        self.last = lines
        up = f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""
        self.stream.write(up + "".join(line + "\n" for line in lines))
        self.stream.flush()
        self.drawn = len(lines)

    def _print_changes(self, statuses: list[JobStatus], lines: list[str]) -> None:
        now = time.monotonic()
        for status, line in zip(statuses, lines, strict=True):
            key = (status.state, status.counts.done, status.counts.validating)
            last = self.printed.get(status.id)
            if last is None or (last[0] != key and now - last[1] >= 5) or last[0][0] != key[0]:
                self.stream.write(line + "\n")
                self.printed[status.id] = (key, now)
        self.stream.flush()


def waiting_hint(job: DemoJob, status: JobStatus, url: str) -> str | None:
    """Plain words for tiles that only another worker can finish, or None."""
    counts = status.counts
    if not counts.validating or counts.pending or counts.running:
        return None
    quorum = status.policy.quorum
    wanted = "a second result" if quorum == 2 else "more results"
    n = counts.validating
    tiles, wait = ("tile", "waits") if n == 1 else ("tiles", "wait")
    return (
        f"{n} {tiles} of job {job.id} ({job.label}) {wait} for {wanted} from a different worker "
        f"(quorum {quorum}): start another worker with: {worker_command(url)}"
    )


# ---- the live part ---------------------------------------------------------------------------


async def _live(
    url: str,
    client: Client,
    jobs: list[DemoJob],
    data_dir: Path,
    workers: int,
    coordinator: Coordinator,
) -> None:
    stop = asyncio.Event()
    on_interrupt(stop, "stopping the demo: workers first, then the coordinator")
    display = Display()
    tasks = [_start_worker(url, n, data_dir, stop, display) for n in range(1, workers + 1)]
    try:
        await _watch(url, client, jobs, display, stop, coordinator)
    finally:
        stop.set()
        display.end()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


def _start_worker(
    url: str, n: int, data_dir: Path, stop: asyncio.Event, display: Display
) -> asyncio.Task[None]:
    from tabgrid.worker.session import run_worker

    name = f"demo-{n}"
    log_path = data_dir / "workers.log"
    log_file = log_path.open("a", encoding="utf-8")

    def log(*parts: object) -> None:
        stamp = time.strftime("%H:%M:%S")
        log_file.write(f"{stamp} {name}: {' '.join(str(p) for p in parts)}\n")
        log_file.flush()

    async def run() -> None:
        try:
            await run_worker(
                url,
                name=name,
                # The identity file makes a restarted demo worker the same worker, so it cannot
                # give the second result for a tile it computed before.
                state_file=data_dir / f"worker-{n}.json",
                stop=stop,
                log=log,
            )
        except Exception as exc:
            log(f"stopped: {exc!r}")
            display.note(f"worker {name} stopped: {exc!r} (see {log_path})")
        finally:
            log_file.close()

    return asyncio.create_task(run(), name=name)


async def _watch(
    url: str,
    client: Client,
    jobs: list[DemoJob],
    display: Display,
    stop: asyncio.Event,
    coordinator: Coordinator,
) -> None:
    seen = Watch()
    while not stop.is_set():
        coordinator.check_alive()
        statuses = await _statuses(client, jobs, display, seen)
        if statuses is not None:
            display.show(jobs, statuses)
            for job, status in zip(jobs, statuses, strict=True):
                await _react(url, client, job, status, display, seen)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_S)


async def _statuses(
    client: Client, jobs: list[DemoJob], display: Display, seen: Watch
) -> list[JobStatus] | None:
    import httpx

    try:
        statuses = [await asyncio.to_thread(client.job, job.id) for job in jobs]
    except httpx.TransportError as exc:
        if not seen.unreachable:
            display.note(f"the coordinator does not answer ({exc}); retrying")
        seen.unreachable = True
        return None
    seen.unreachable = False
    return statuses


async def _react(
    url: str, client: Client, job: DemoJob, status: JobStatus, display: Display, seen: Watch
) -> None:
    hint = waiting_hint(job, status, url)
    if hint and job.id not in seen.hinted:
        seen.hinted.add(job.id)
        display.note(hint)
    if status.state in ("done", "failed", "cancelled") and job.id not in seen.ended:
        seen.ended.add(job.id)
        display.note(await _outcome(client, job, status))


async def _outcome(client: Client, job: DemoJob, status: JobStatus) -> str:
    head = f"job {job.id} ({job.label}) {status.state}"
    if status.state == "done" and job.finish is not None:
        try:
            return f"{head}: {await asyncio.to_thread(job.finish, client)}"
        except Exception as exc:
            return f"{head}, but its results could not be put together: {exc}"
    if status.state == "failed":
        reason = await asyncio.to_thread(_first_failure, client, job.id)
        return f"{head}: {status.counts.failed} tiles failed{reason}"
    return head


def _first_failure(client: Client, job_id: int) -> str:
    for unit in client.units(job_id, state="failed"):
        if unit.error:
            return f"; the first, tile {unit.index}: {unit.error}"
    return ""
