"""The ``tabgrid`` command: serve, worker, submit, jobs, results, token, demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from tabgrid.client.sdk import Client
    from tabgrid.protocol import JobStatus
    from tabgrid.settings import Settings

from tabgrid.cli.common import (
    DEFAULT_URL,
    DEMO_DATA,
    CliError,
    add_client_options,
    describe_error,
    on_interrupt,
    open_client,
)
from tabgrid.cli.jobfile import load_job_file

# ---- commands --------------------------------------------------------------------------------


def settings_from_args(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> Settings:
    """Settings from TABGRID_* variables, then the command line; --data alone moves the db too."""
    from tabgrid.settings import from_env, sqlite_url

    overrides: dict[str, object] = {}
    if args.data is not None:
        overrides["data_dir"] = args.data
        if args.db is None and "TABGRID_DB" not in env:
            overrides["db"] = sqlite_url(args.data)
    if args.db is not None:
        overrides["db"] = args.db
    for name in ("host", "port"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    if getattr(args, "allow_same_address", False):
        overrides["distinct_addresses"] = False
    return from_env(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from tabgrid import app

    # app.serve logs why when the distinct-address rule is off.
    settings = settings_from_args(args)
    app.serve(settings)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from tabgrid.worker.session import run_worker

    async def main() -> None:
        stop = asyncio.Event()
        on_interrupt(stop, "stopping the worker (Ctrl-C again to quit at once)")
        await run_worker(
            args.url,
            concurrency=args.concurrency,
            name=args.name,
            state_file=args.state,
            stop=stop,
        )

    asyncio.run(main())
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    job_file = load_job_file(args.file)
    with open_client(args) as client:
        status = client.submit(
            job_file.kernel,
            job_file.units,
            params=job_file.params,
            inputs=job_file.inputs,
            policy=job_file.policy,
            name=job_file.name,
        )
        print(status.id, flush=True)
        if not args.wait:
            return 0
        return _wait(client, status.id, progress=not args.no_progress)


def _wait(client: Client, job_id: int, *, progress: bool) -> int:
    try:
        status = client.wait(job_id, progress=progress)
    except KeyboardInterrupt:
        print(f"\njob {job_id} keeps running; see it with: tabgrid jobs", file=sys.stderr)
        return 130
    if status.state == "done":
        return 0
    counts = status.counts
    print(
        f"job {job_id} {status.state}: {counts.done} done, {counts.failed} failed, "
        f"{counts.cancelled} cancelled of {status.units}",
        file=sys.stderr,
    )
    return 1


def cmd_jobs(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        jobs = client.jobs()
    print(format_jobs(jobs))
    return 0


def format_jobs(jobs: Sequence[JobStatus]) -> str:
    """A plain table, one job a row."""
    from tabgrid.client.progress import format_duration, format_rate

    if not jobs:
        return "no jobs"
    header = ("ID", "NAME", "KERNEL", "STATE", "DONE/TOTAL", "RATE", "ETA")
    rows = [header]
    for job in jobs:
        eta = "-" if job.state in ("done", "failed", "cancelled") else format_duration(job.eta_s)
        done = f"{job.counts.done}/{job.units}"
        rows.append(
            (str(job.id), job.name, job.kernel, job.state, done, format_rate(job.rate), eta)
        )
    return _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def cmd_results(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        results = client.results(args.job)
    units, files = write_results(results, args.output)
    print(f"wrote {files} files for {units} validated units to {args.output}")
    return 0


def write_results(results: Mapping[int, Mapping[str, np.ndarray]], out: Path) -> tuple[int, int]:
    """DIR/<index>_<output>.npy for each unit; returns (units, files)."""
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    files = 0
    for index in sorted(results):
        for name, array in results[index].items():
            np.save(out / f"{index}_{name}.npy", array, allow_pickle=False)
            files += 1
    return len(results), files


def cmd_token_create(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        token_id, token = store.create_token(args.role, args.name)
    finally:
        store.close()
    label = f"{args.role}, {args.name}" if args.name else args.role
    print(f"token {token_id} ({label}):", file=sys.stderr, flush=True)
    print(token, flush=True)
    print("It is shown only this once; keep it somewhere safe.", file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from tabgrid.store import tokens

    store = _open_store(args)
    try:
        rows = store.tx(tokens.list_all)
    finally:
        store.close()
    print(format_tokens(rows))
    return 0


def format_tokens(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no tokens"
    table = [("ID", "ROLE", "NAME", "CREATED", "REVOKED")]
    for row in rows:
        table.append(
            (
                str(row["id"]),
                row["role"],
                row["name"],
                _when(row["created_at"]),
                _when(row["revoked_at"]) if row["revoked_at"] else "-",
            )
        )
    return _table(table)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _open_store(args: argparse.Namespace) -> Any:
    from tabgrid.store import open_store

    return open_store(settings_from_args(args).db)


def cmd_demo(args: argparse.Namespace) -> int:
    from tabgrid.cli.demo import run_demo

    return run_demo(port=args.port, data_dir=args.data, workers=args.workers)


# ---- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tabgrid", description="Volunteer GPU compute: coordinator, workers, jobs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub)
    _worker_parser(sub)
    _submit_parser(sub)
    _jobs_parser(sub)
    _results_parser(sub)
    _token_parser(sub)
    _demo_parser(sub)
    return parser


Subparsers = Any  # argparse's _SubParsersAction is private


def _command(sub: Subparsers, name: str, run: Callable[..., int], help: str) -> Any:
    parser = sub.add_parser(name, help=help, description=help)
    parser.set_defaults(run=run)
    return parser


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", help="database URL: sqlite:///PATH or postgresql://... (default: $TABGRID_DB)"
    )
    parser.add_argument(
        "--data", type=Path, help="data directory: blobs, SQLite file (default: $TABGRID_DATA)"
    )


def _serve_parser(sub: Subparsers) -> None:
    p = _command(sub, "serve", cmd_serve, "run the coordinator")
    _store_options(p)
    p.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default: 8000)")
    p.add_argument(
        "--allow-same-address",
        action="store_true",
        help="let replicas of a unit go to different workers behind one client address "
        "(needed on one machine)",
    )


def _worker_parser(sub: Subparsers) -> None:
    p = _command(sub, "worker", cmd_worker, "compute units on this machine's GPU (wgpu)")
    p.add_argument(
        "--url",
        default=os.environ.get("TABGRID_URL", DEFAULT_URL),
        help="coordinator URL (default: $TABGRID_URL or %(default)s)",
    )
    p.add_argument("--concurrency", type=int, default=2, help="units in flight (default: 2)")
    p.add_argument("--name", default="", help="a name the operator sees")
    p.add_argument("--state", type=Path, help="file keeping this worker's identity across restarts")


def _submit_parser(sub: Subparsers) -> None:
    p = _command(sub, "submit", cmd_submit, "submit a job described by a JSON file")
    p.add_argument("file", type=Path, help="job file (JSON; .npy paths relative to it)")
    add_client_options(p)
    p.add_argument("--wait", action="store_true", help="wait until the job ends")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while waiting")


def _jobs_parser(sub: Subparsers) -> None:
    add_client_options(_command(sub, "jobs", cmd_jobs, "list your jobs"))


def _results_parser(sub: Subparsers) -> None:
    p = _command(sub, "results", cmd_results, "save a job's validated results as .npy files")
    p.add_argument("job", type=int, help="job id")
    p.add_argument("-o", "--output", type=Path, required=True, help="directory to write to")
    add_client_options(p)


def _token_parser(sub: Subparsers) -> None:
    p = sub.add_parser("token", help="API tokens (directly in the database)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = _command(actions, "create", cmd_token_create, "create a token and print it once")
    create.add_argument("--role", choices=("submitter", "operator"), required=True)
    create.add_argument("--name", default="", help="who or what the token is for")
    _store_options(create)
    _store_options(_command(actions, "list", cmd_token_list, "list tokens (not their secrets)"))


def _demo_parser(sub: Subparsers) -> None:
    p = _command(sub, "demo", cmd_demo, "a coordinator, native workers and demo jobs, locally")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--data", type=Path, default=DEMO_DATA, help="data directory (%(default)s)")
    p.add_argument(
        "--workers", type=int, default=1, help="native workers to start (default: %(default)s)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _is_client_error(exc):
            raise
        print(f"error: {describe_error(exc, getattr(args, 'url', ''))}", file=sys.stderr)
        return 1


def _is_client_error(exc: Exception) -> bool:
    """The SDK's own errors and failures to reach the coordinator are the person's to fix."""
    import httpx

    try:
        from tabgrid.client.sdk import TabgridError
    except ImportError:
        return isinstance(exc, httpx.TransportError)
    return isinstance(exc, TabgridError | httpx.TransportError)
