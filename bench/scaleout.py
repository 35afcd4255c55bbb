"""Scale-out: validated units/s and CPU per unit with 1, 2 and 3 coordinator processes sharing
one PostgreSQL, the same workers and job, beside one coordinator on SQLite, all in one run.

The workers are spread over the coordinators round robin and connect to them directly (a load
balancer's own CPU would count against the same two cores). For each configuration it prints
the rate, the coordinators' CPU per validated unit (user + system from the kernel's rusage of
each process, summed) and PostgreSQL's (its server processes', read the same way), from which
what N processes would give on N cores follows: a configuration is bound by whichever of
coordinators or database runs out of cores first.

    ./dev bench scaleout [--workers 6] [--units 20000] [--concurrency 64] [--pg URL]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "server"), str(ROOT)]

from bench.dispatch import cpu_seconds, wait_done  # noqa: E402
from tests.integration.harness import Coordinator, WorkerProcess, _env  # noqa: E402

from tabgrid.client.sdk import Client  # noqa: E402
from tabgrid.store import issue_token  # noqa: E402

PG = os.environ.get("TABGRID_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Figures:
    name: str
    units_s: float
    coordinator_us: float  # CPU per validated unit, all coordinator processes
    database_us: float | None  # PostgreSQL's server processes; None for SQLite (in-process)


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL server process on this machine, from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if "(postgres)" in text:
            total += cpu_seconds(int(stat.parent.name))
    return total


def fresh_database(admin_url: str) -> str:
    import psycopg

    name = f"tabgrid_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def upgrade(db: str) -> None:
    """A PostgreSQL coordinator starts only on a schema at the newest revision."""
    cli = [sys.executable, "-m", "tabgrid.cli", "db", "upgrade", "--db", db]
    subprocess.run(cli, env=_env(), check=True, capture_output=True)


def measure(name: str, db: str, coordinators: int, args: argparse.Namespace) -> Figures:
    tmp = Path(tempfile.mkdtemp(prefix="scaleout-"))
    upgrade(db)
    token = issue_token(db, "submitter", "bench")
    coords = []
    for i in range(coordinators):
        (tmp / f"c{i}").mkdir()
        coords.append(Coordinator(db, tmp / f"c{i}", "--allow-same-address").start())
    workers = [
        WorkerProcess(
            coords[i % coordinators].url, tmp / f"worker{i}.log", concurrency=args.concurrency
        )
        for i in range(args.workers)
    ]
    on_pg = db.startswith("postgres")
    try:
        with Client(coords[0].url, token) as client:
            policy = {"quorum": 2}
            warm = client.submit(
                "checksum", [{"params": {"i": i}} for i in range(300)], policy=policy
            )
            wait_done(client, warm.id, 180)  # every worker connected and warm
            pids = [c.proc.pid for c in coords if c.proc is not None]
            cpu0 = sum(cpu_seconds(p) for p in pids)
            db0 = postgres_cpu() if on_pg else 0.0
            t0 = time.time()
            job = client.submit(
                "checksum", [{"params": {"i": i}} for i in range(args.units)], policy=policy
            )
            t1 = wait_done(client, job.id, 900)
            cpu1 = sum(cpu_seconds(p) for p in pids)
            db1 = postgres_cpu() if on_pg else 0.0
    finally:
        for w in workers:
            w.stop()
        for c in coords:
            c.stop()
    return Figures(
        name,
        args.units / (t1 - t0),
        (cpu1 - cpu0) / args.units * 1e6,
        (db1 - db0) / args.units * 1e6 if on_pg else None,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--units", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--pg", default=PG, help="an admin URL: each run gets a fresh database")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        rows.append(measure("SQLite, 1 coordinator", f"sqlite:///{d}/tabgrid.db", 1, args))
    for n in (1, 2, 3):
        url = fresh_database(args.pg)
        try:
            rows.append(measure(f"PostgreSQL, {n} coordinator(s)", url, n, args))
        finally:
            drop_database(args.pg, url)
    cores = os.cpu_count()
    print(f"{args.workers} native workers x {args.concurrency} in flight, checksum, quorum 2,")
    print(f"{args.units} units a run; this machine has {cores} cores")
    print(f"{'configuration':<28} {'units/s':>9} {'coord. CPU/unit':>16} {'PG CPU/unit':>12}")
    for r in rows:
        pg = f"{r.database_us:,.0f} us" if r.database_us is not None else "-"
        print(f"{r.name:<28} {r.units_s:>9,.0f} {r.coordinator_us:>13,.0f} us {pg:>12}")


if __name__ == "__main__":
    main()
