"""Dispatch throughput: one coordinator, N native workers, a trivial kernel, quorum 2.

Prints validated units per second and, measured in the same run, the round trips per second of
a bare websocket echo between the same number of client processes and a server doing nothing
else (bench/echo.py, same Starlette/uvicorn stack and websocket settings), in two forms: a plain
echo (each client sends, waits for the reply, sends again) and a pipelined one (each client
keeps as many messages in flight as a worker keeps units). Then the ratio to each, and the
coordinator process's CPU time per validated unit (user + system, from the kernel's rusage of
it), which holds on a noisy machine where wall-clock rates drift.

    ./dev bench dispatch [--workers 4] [--units 20000] [--concurrency 64] [--profile FILE]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "server"), str(ROOT)]

from tests.integration.harness import Coordinator, WorkerProcess, _env, free_port  # noqa: E402

from tabgrid.client.sdk import Client  # noqa: E402
from tabgrid.store import issue_token  # noqa: E402


def wait_done(client: Client, job: int, timeout: float) -> float:
    """The job's finish time (the coordinator's clock, this machine's): polled at a progress
    bar's pace, so that status queries are not what is measured."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = client.job(job)
        if st.state != "running":
            assert st.state == "done" and st.finished_at is not None, st
            return st.finished_at
        time.sleep(0.5)
    raise TimeoutError(f"job {job} not done: {client.job(job)}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used: the kernel's rusage of it, as /proc shows it."""
    return sum(cpu_split(pid))


def cpu_split(pid: int, thread: int | None = None) -> tuple[float, float]:
    """User and system CPU seconds the process (or one of its threads) has used."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


@dataclass(frozen=True)
class Figures:
    units_s: float
    user: float  # the coordinator's CPU seconds per validated unit
    system: float
    loop: float  # of which its main thread's (the event loop; the rest is the database thread)
    workers: float  # the worker processes' CPU seconds per validated unit, all together
    ticks: int  # scheduler ticks during the job
    busy: float  # share of the job's wall time the scheduler spent in ticks


def tick_totals(url: str, token: str) -> tuple[float, float]:
    """The coordinator's tick count and seconds so far, from its /metrics, as an operator
    would read them."""
    r = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=10)
    r.raise_for_status()
    for family in text_string_to_metric_families(r.text):
        if family.name == "tabgrid_tick_duration_seconds":
            got = {s.name: s.value for s in family.samples}
            return got["tabgrid_tick_duration_seconds_count"], got[
                "tabgrid_tick_duration_seconds_sum"
            ]
    raise RuntimeError("the coordinator's /metrics has no tabgrid_tick_duration_seconds")


def dispatch_rate(
    tmp: Path, workers: int, units: int, concurrency: int, profile: Path | None = None
) -> Figures:
    """Validated units/s, and the coordinator's CPU seconds per validated unit, of one job.
    With ``profile``, py-spy samples the coordinator during the job into that file (collapsed
    stacks) and the heaviest functions are printed."""
    db = f"sqlite:///{tmp / 'tabgrid.db'}"
    token = issue_token(db, "submitter", "bench")
    operator = issue_token(db, "operator", "bench")
    coord = Coordinator(db, tmp, "--allow-same-address").start()
    procs = [
        WorkerProcess(coord.url, tmp / f"worker{i}.log", concurrency=concurrency)
        for i in range(workers)
    ]
    try:
        with Client(coord.url, token) as client:
            policy = {"quorum": 2}
            warm = client.submit(
                "checksum", [{"params": {"i": i}} for i in range(200)], policy=policy
            )
            wait_done(client, warm.id, 120)  # every worker connected and warm
            job = [{"params": {"i": i}} for i in range(units)]
            assert coord.proc is not None
            spy = profile and py_spy(coord.proc.pid, profile)
            pid = coord.proc.pid
            others = [w.proc.pid for w in procs]
            n0, s0 = tick_totals(coord.url, operator)
            work0 = sum(cpu_seconds(w) for w in others)
            cpu0, loop0, t0 = cpu_split(pid), sum(cpu_split(pid, pid)), time.time()
            st = client.submit("checksum", job, policy=policy)
            t1 = wait_done(client, st.id, 600)
            cpu1, loop1 = cpu_split(pid), sum(cpu_split(pid, pid))
            work1 = sum(cpu_seconds(w) for w in others)
            n1, s1 = tick_totals(coord.url, operator)
            if spy and profile:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
                print_profile(profile)
            user, system = ((b - a) / units for a, b in zip(cpu0, cpu1, strict=True))
            return Figures(
                units / (t1 - t0),
                user,
                system,
                (loop1 - loop0) / units,
                (work1 - work0) / units,
                int(n1 - n0),
                (s1 - s0) / (t1 - t0),
            )
    finally:
        for p in procs:
            p.stop()
        coord.stop()


def py_spy(pid: int, out: Path) -> subprocess.Popen:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise SystemExit("--profile wants py-spy, a dev dependency: any ./dev command installs it")
    cmd = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "200"]
    return subprocess.Popen([*cmd, "--output", str(out), "--nonblocking"])


def print_profile(path: Path, top: int = 25) -> None:
    """Share of samples per function, by self time and with what it calls."""
    own: Counter[str] = Counter()
    within: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1] for f in stack.split(";")]
        total += int(n)
        own[frames[-1]] += int(n)
        for f in set(frames):
            within[f] += int(n)
    for title, counts in (("self", own), ("inclusive", within)):
        print(f"profile, {title} ({total} samples):")
        for name, n in counts.most_common(top):
            print(f"  {100 * n / total:5.1f}%  {name}")


def echo_rate(clients: int, seconds: float, window: int) -> float:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "echo.py"), "serve", str(port)], env=_env()
    )
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        url = f"ws://127.0.0.1:{port}/echo"
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "echo.py"),
            "client",
            url,
            str(seconds),
            str(window),
        ]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, env=_env()) for _ in range(clients)]
        total = sum(int(p.communicate()[0]) for p in procs)
        return total / seconds
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--units", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--echo-seconds", type=float, default=5.0)
    ap.add_argument("--profile", type=Path, help="py-spy's collapsed stacks of the coordinator")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        got = dispatch_rate(Path(d), args.workers, args.units, args.concurrency, args.profile)
    plain = echo_rate(args.workers, args.echo_seconds, 1)
    piped = echo_rate(args.workers, args.echo_seconds, args.concurrency)
    print(f"workers: {args.workers} processes, {args.concurrency} units in flight each")
    units_s, cpu_unit = got.units_s, got.user + got.system
    print(f"validated units/s (quorum 2, {args.units} units): {units_s:,.0f}")
    print(
        f"coordinator CPU per validated unit (rusage): {cpu_unit * 1e6:,.0f} us "
        f"({got.user * 1e6:,.0f} user, {got.system * 1e6:,.0f} system; "
        f"{got.loop * 1e6:,.0f} in the event loop's thread, the rest in the database's)"
    )
    print(
        f"workers' CPU per validated unit: {got.workers * 1e6:,.0f} us, all {args.workers} "
        f"together; with the coordinator's, {(cpu_unit + got.workers) * units_s:.2f} cores busy"
    )
    print(
        f"scheduler: {got.ticks:,} ticks, {2 * args.units / max(got.ticks, 1):,.0f} results "
        f"a tick, in ticks {got.busy:.0%} of the job's wall time (tabgrid_tick_duration_seconds)"
    )
    print(f"plain websocket echo (1 in flight per client):  {plain:,.0f} round trips/s")
    print(f"pipelined echo ({args.concurrency} in flight per client):  {piped:,.0f} round trips/s")
    print(f"ratio to plain echo: {units_s / plain:.2f}; to pipelined echo: {units_s / piped:.2f}")
    met = {True: "met", False: "NOT met"}
    print(
        f"targets: <= 100 us of coordinator CPU per validated unit: {met[cpu_unit <= 100e-6]}; "
        f">= 0.25 of the pipelined echo: {met[units_s / piped >= 0.25]}; "
        f">= 5,000 validated units/s: {met[units_s >= 5000]}"
    )


if __name__ == "__main__":
    main()
