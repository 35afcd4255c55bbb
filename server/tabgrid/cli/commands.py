"""The ``tabgrid`` command: serve, worker, submit, jobs, units, summary, cancel, retry, delete,
results, token, db (cli/database.py), model, models, embed (cli/embeddings.py), demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

if TYPE_CHECKING:
    import numpy as np

    from tabgrid.client.sdk import Client
    from tabgrid.protocol import JobStatus, JobSummary, UnitInfo

from tabgrid.cli import database, embeddings
from tabgrid.cli.common import (
    DEFAULT_URL,
    DEMO_DATA,
    CliError,
    add_client_options,
    describe_error,
    on_interrupt,
    open_client,
    settings_from_args,
    store_options,
)
from tabgrid.cli.jobfile import load_job_file

# ---- commands --------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from tabgrid import app
    from tabgrid.store.schema import SchemaError

    # app.serve logs why when the distinct-address rule is off.
    settings = settings_from_args(args)
    try:
        app.serve(settings)  # SQLite is upgraded on opening; PostgreSQL must be at the newest
    except SchemaError as e:
        raise CliError(str(e)) from None
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
    from tabgrid.client.sdk import JobFailed, JobStalled

    try:
        status = client.wait(job_id, progress=progress, check=True)
    except KeyboardInterrupt:
        print(f"\njob {job_id} keeps running; see it with: tabgrid jobs", file=sys.stderr)
        return 130
    except JobStalled as e:
        print(f"{e}\nthe job keeps its place; wait again once it can progress", file=sys.stderr)
        return 1
    except TimeoutError as e:
        print(str(e), file=sys.stderr)
        return 1
    except JobFailed as e:
        print(str(e), file=sys.stderr)
        return 1
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
        if args.job is not None:
            status, summary = client.job(args.job), client.summary(args.job)
            print(format_jobs([status]))
            print(format_summary(summary))
            return 0
        jobs = client.jobs()
    print(format_jobs(jobs))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        summary = client.summary(args.job)
    print(format_summary(summary))
    return 0


def format_summary(s: JobSummary) -> str:
    """What a job cost, one fact a line."""
    from tabgrid.client.progress import format_duration

    lines = [
        ("job", f"{s.id} ({s.state}, {s.units} units)"),
        ("wall time", format_duration(s.wall_s)),
        ("GPU time", f"{s.compute_s:.3f} s reported by the workers"),
        ("work", f"{s.gflop:.3f} GFLOP in validated units"),
        ("credit", f"{s.credit:.3f} GFLOP granted to the workers"),
        (
            "replicas",
            f"{s.replicas} ({s.replicas_per_unit:.2f} per unit): {s.valid} valid, "
            f"{s.invalid} invalid, {s.errors} errors, from {s.workers} worker(s)",
        ),
    ]
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in lines)


def cmd_units(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        units = list(client.units(args.job, state=args.state))
    print(format_units(units, args.state))
    return 0


def format_units(units: Sequence[UnitInfo], state: str | None = None) -> str:
    """One unit a row; WORKERS lists each replica as worker:state (valid ones agreed)."""
    if not units:
        return f"no {state} units" if state else "no units"
    rows = [("INDEX", "STATE", "REPLICAS", "RESULTS", "WORKERS", "WAITING/ERROR")]
    for u in units:
        workers = ", ".join(f"{w.worker}:{w.state}" for w in u.workers) or "-"
        note = u.error or u.waiting or "-"
        rows.append((str(u.index), u.state, str(u.replicas), str(u.results), workers, note))
    return _table(rows)


def cmd_cancel(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        status = client.cancel(args.job)
    c = status.counts
    print(
        f"job {status.id} {status.state}: {c.done} done, {c.failed} failed, "
        f"{c.cancelled} cancelled of {status.units}"
    )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        client.delete(args.job)
    print(f"job {args.job} deleted, with the blobs no other job uses")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        failed = client.job(args.job).counts.failed
        status = client.retry(args.job)
        print(
            f"job {status.id} {status.state} again: {failed} failed unit(s) back to pending, "
            f"each with a new budget of {status.policy.max_replicas} replicas",
            flush=True,
        )
        if not args.wait:
            return 0
        return _wait(client, status.id, progress=not args.no_progress)


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
        total = client.job(args.job).units if args.concat else len(results)
    out: Path = args.output
    if args.concat:
        arrays = concat_results(results, total)
        if out.suffix == ".npz":
            _savez(out, arrays)
            where = str(out)
        else:
            where = _save_dir(out, {f"{name}.npy": a for name, a in arrays.items()})
        shapes = ", ".join(f"{n} {a.dtype}{list(a.shape)}" for n, a in arrays.items())
        print(f"wrote {len(arrays)} arrays ({shapes}) of {len(results)} units to {where}")
        return 0
    if out.suffix == ".npz":
        flat = {f"{i}/{name}": a for i in sorted(results) for name, a in results[i].items()}
        _savez(out, flat)
        print(f"wrote {len(flat)} arrays for {len(results)} validated units to {out}")
        return 0
    units, files = write_results(results, out)
    print(f"wrote {files} files for {units} validated units to {out}")
    return 0


def concat_results(
    results: Mapping[int, Mapping[str, np.ndarray]], total: int
) -> dict[str, np.ndarray]:
    """One array per output: the units' arrays joined along their first axis (0-d ones
    stacked), in unit order. Refused unless every unit is validated and the arrays join."""
    import numpy as np

    missing = [i for i in range(total) if i not in results]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise CliError(
            f"--concat needs every unit's result, but {len(missing)} of {total} units are not "
            f"validated (units {shown}); see them with: tabgrid units JOB --state failed. "
            "Without --concat the validated units are written one by one"
        )
    order = sorted(results)
    names = list(results[order[0]]) if order else []
    out: dict[str, np.ndarray] = {}
    for name in names:
        parts = []
        for i in order:
            if name not in results[i]:
                raise CliError(f"--concat: unit {i} has no output {name!r}, unit 0 has")
            parts.append(results[i][name])
        first = parts[0]
        for i, part in zip(order, parts, strict=True):
            if (
                part.dtype != first.dtype
                or part.shape[1:] != first.shape[1:]
                or (part.ndim != first.ndim)
            ):
                raise CliError(
                    f"--concat: output {name!r} does not stack: unit {order[0]} gives "
                    f"{first.dtype}{list(first.shape)}, unit {i} gives "
                    f"{part.dtype}{list(part.shape)} (dtype and every axis but the first "
                    "must match); write the units one by one without --concat"
                )
        out[name] = np.stack(parts) if first.ndim == 0 else np.concatenate(parts)
    return out


def _savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:  # np.savez would append .npz to a name without it
        np.savez(f, **arrays)


def _save_dir(out: Path, files: Mapping[str, np.ndarray]) -> str:
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    for name, array in files.items():
        np.save(out / name, array, allow_pickle=False)
    return str(out)


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


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'30d', '12h', '90m', '45s', '2w' as seconds; argparse shows the ValueError's message."""
    raw = text.strip().lower()
    number, unit = raw[:-1], raw[-1:]
    if unit not in DURATION_UNITS or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: write a whole number and a unit, "
            "s, m, h, d or w (e.g. 30d, 12h)"
        )
    seconds = int(number) * DURATION_UNITS[unit]
    if seconds > 10 * 365 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is more than 10 years; revoke tokens instead")
    return float(seconds)


def cmd_token_create(args: argparse.Namespace) -> int:
    store, where = _open_store(args)
    expires = None if args.expires is None else time.time() + args.expires
    try:
        token_id, token = store.create_token(args.role, args.name, expires)
    finally:
        store.close()
    label = f"{args.role}, {args.name}" if args.name else args.role
    until = f", expires {_when(expires)}" if expires is not None else ""
    print(f"token {token_id} ({label}{until}) in {where}:", file=sys.stderr, flush=True)
    print(token, flush=True)
    print("It is shown only this once; keep it somewhere safe.", file=sys.stderr)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from tabgrid.store import tokens

    store, where = _open_store(args)
    try:
        revoked = store.tx(tokens.revoke, args.id, time.time())
    finally:
        store.close()
    if not revoked:
        raise CliError(
            f"token {args.id} does not exist in {where} or is already revoked "
            "(see them with: tabgrid token list)"
        )
    print(f"token {args.id} revoked in {where}; its open streams end within seconds")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from tabgrid.store import tokens

    store, _ = _open_store(args)
    try:
        rows = store.tx(tokens.list_all)
    finally:
        store.close()
    print(format_tokens(rows))
    return 0


def format_tokens(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no tokens"
    now = time.time()
    table = [("ID", "ROLE", "NAME", "CREATED", "REVOKED", "EXPIRES")]
    for row in rows:
        expires = row.get("expires_at")
        if expires is None:
            until = "never"
        else:
            until = _when(expires) + (" (expired)" if expires <= now else "")
        table.append(
            (
                str(row["id"]),
                row["role"],
                row["name"],
                _when(row["created_at"]),
                _when(row["revoked_at"]) if row["revoked_at"] else "-",
                until,
            )
        )
    return _table(table)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _open_store(args: argparse.Namespace) -> tuple[Any, str]:
    """The database the token commands work in, and where that is in words.

    A coordinator reads tokens only from its own database, so a SQLite file that does not
    exist yet (a --data no coordinator uses) is named on stderr before it is created.
    """
    from tabgrid.store import open_store
    from tabgrid.store.schema import SchemaError

    url = settings_from_args(args).db
    where = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url.split("@")[-1]
    if url.startswith("sqlite:///") and not Path(where).exists():
        print(
            f"note: there was no database at {where}; creating it. A coordinator only accepts "
            "tokens from its own database: pass the --data (or --db) it runs with (beside "
            f"./dev demo: --data {DEMO_DATA})",
            file=sys.stderr,
        )
    try:
        return open_store(url), where
    except SchemaError as e:
        raise CliError(str(e)) from None


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
    _job_parsers(sub)
    _results_parser(sub)
    _token_parser(sub)
    database.add_parsers(sub)
    embeddings.add_parsers(sub)
    _demo_parser(sub)
    return parser


Subparsers = Any  # argparse's _SubParsersAction is private


def _command(sub: Subparsers, name: str, run: Callable[..., int], help: str) -> Any:
    parser = sub.add_parser(name, help=help, description=help)
    parser.set_defaults(run=run)
    return parser


def _serve_parser(sub: Subparsers) -> None:
    p = _command(sub, "serve", cmd_serve, "run the coordinator")
    store_options(p)
    p.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default: 8000)")
    p.add_argument(
        "--allow-same-address",
        action="store_true",
        help="let replicas of a unit go to different workers behind one client address "
        "(needed on one machine)",
    )
    p.add_argument(
        "--blobs",
        choices=["files", "db"],
        help="where blobs are kept: files under --data (one host) or db, in the PostgreSQL "
        "database, for coordinators on several hosts (default: $TABGRID_BLOBS or files)",
    )
    p.add_argument(
        "--trust-proxy",
        metavar="ADDRS",
        help="comma-separated addresses or networks of reverse proxies whose X-Forwarded-For "
        "names the client (default: $TABGRID_TRUST_PROXY or none: the connection's address)",
    )
    p.add_argument(
        "--sweep-interval",
        type=float,
        metavar="SECONDS",
        help="how often leases past their deadline are released and idle workers retried "
        "(default: 1)",
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
    p = _command(sub, "jobs", cmd_jobs, "list your jobs, or show one with its summary")
    p.add_argument("job", type=int, nargs="?", help="one job's status and summary")
    add_client_options(p)


def _job_parsers(sub: Subparsers) -> None:
    from tabgrid.protocol import UnitState

    units = _command(sub, "units", cmd_units, "a job's units: state, replicas, workers, errors")
    units.add_argument("job", type=int, help="job id")
    units.add_argument("--state", choices=get_args(UnitState), help="only units in this state")
    add_client_options(units)
    for name, run, about in (
        ("summary", cmd_summary, "what a job cost: wall time, GFLOP, credit, replicas"),
        ("cancel", cmd_cancel, "cancel a job's open units"),
        ("delete", cmd_delete, "delete a job and free the blobs nothing else uses"),
    ):
        p = _command(sub, name, run, about)
        p.add_argument("job", type=int, help="job id")
        add_client_options(p)
    retry = _command(
        sub, "retry", cmd_retry, "put an ended job's failed units back to pending, anew"
    )
    retry.add_argument("job", type=int, help="job id")
    retry.add_argument("--wait", action="store_true", help="wait until the job ends again")
    retry.add_argument("--no-progress", action="store_true", help="no progress bar while waiting")
    add_client_options(retry)


def _results_parser(sub: Subparsers) -> None:
    p = _command(sub, "results", cmd_results, "save a job's validated results (.npy or .npz)")
    p.add_argument("job", type=int, help="job id")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="a directory (DIR/<unit>_<output>.npy) or a FILE.npz (keys <unit>/<output>)",
    )
    p.add_argument(
        "--concat",
        action="store_true",
        help="one array per output, the units' joined along the first axis in unit order "
        "(.npz keys <output>, or DIR/<output>.npy)",
    )
    add_client_options(p)


def _token_parser(sub: Subparsers) -> None:
    p = sub.add_parser("token", help="API tokens (directly in the database)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = _command(actions, "create", cmd_token_create, "create a token and print it once")
    create.add_argument("--role", choices=("submitter", "operator"), required=True)
    create.add_argument("--name", default="", help="who or what the token is for")
    create.add_argument(
        "--expires",
        type=parse_duration,
        metavar="DURATION",
        help="stop working after this long: 30d, 12h, 90m, 2w (default: until revoked)",
    )
    store_options(create)
    store_options(_command(actions, "list", cmd_token_list, "list tokens (not their secrets)"))
    revoke = _command(actions, "revoke", cmd_token_revoke, "revoke a token by its id")
    revoke.add_argument("id", type=int, help="the token's id (see: tabgrid token list)")
    store_options(revoke)


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
