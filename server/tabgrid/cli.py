"""The ``tabgrid`` command: serve, worker, submit, jobs, results, token, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from tabgrid.client import Client
    from tabgrid.protocol import JobStatus
    from tabgrid.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"
DEMO_DATA = Path("tabgrid-demo")
TOKEN_FILE = "demo-token"
JOB_KEYS = frozenset({"kernel", "name", "params", "policy", "inputs", "units"})
UNIT_KEYS = frozenset({"params", "inputs"})


class CliError(Exception):
    """A problem the person can fix; printed without a traceback."""


# ---- job files -------------------------------------------------------------------------------


class JobFileError(CliError):
    """Everything wrong with one job file, listed at once."""

    def __init__(self, path: Path, errors: Sequence[str]) -> None:
        self.path = path
        self.errors = list(errors)
        lines = [f"{path}: {error}" for error in self.errors]
        super().__init__("\n".join(lines))


@dataclass
class JobFile:
    """A job file with its .npy inputs loaded, ready for ``Client.submit``."""

    kernel: str
    units: list[dict[str, Any]]
    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)


def load_job_file(path: Path) -> JobFile:
    """Read a JSON job file; .npy paths in it are relative to the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"job file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read job file {path}: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise JobFileError(path, [f"not valid JSON at {where}: {exc.msg}"]) from None
    return _JobFileReader(path).read(doc)


class _JobFileReader:
    """Checks the document's shape and loads arrays, collecting every mistake."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent
        self.errors: list[str] = []
        self._arrays: dict[Path, np.ndarray] = {}

    def read(self, doc: object) -> JobFile:
        if not isinstance(doc, dict):
            raise JobFileError(self.path, [f"expected a JSON object, got {_kind(doc)}"])
        self._unknown_keys(doc, JOB_KEYS, "the job")
        kernel = doc.get("kernel")
        if not isinstance(kernel, str) or not kernel:
            self.errors.append('"kernel" is required: the name of a kernel, e.g. "matmul"')
        name = doc.get("name", "")
        if not isinstance(name, str):
            self.errors.append(f'"name" must be a string, got {_kind(name)}')
        params = self._object(doc.get("params", {}), '"params"')
        policy = self._policy(doc.get("policy", {}))
        inputs = self._inputs(doc.get("inputs", {}), '"inputs"')
        units = self._units(doc.get("units"))
        if self.errors:
            raise JobFileError(self.path, self.errors)
        return JobFile(
            kernel=str(kernel),
            units=units,
            name=str(name),
            params=params,
            policy=policy,
            inputs=inputs,
        )

    def _unknown_keys(self, obj: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
        for key in sorted(set(obj) - allowed):
            expected = ", ".join(sorted(allowed))
            self.errors.append(f"unknown key {key!r} in {where} (expected: {expected})")

    def _object(self, value: object, where: str) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        self.errors.append(f"{where} must be an object, got {_kind(value)}")
        return {}

    def _policy(self, value: object) -> dict[str, Any]:
        import msgspec

        from tabgrid.protocol import Policy

        policy = self._object(value, '"policy"')
        try:
            msgspec.convert(policy, Policy)
        except msgspec.ValidationError as exc:
            self.errors.append(f'"policy": {exc}')
        return policy

    def _units(self, value: object) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not value:
            self.errors.append('"units" is required: a non-empty list of {"params", "inputs"}')
            return []
        units = []
        for index, unit in enumerate(value):
            where = f"unit {index}"
            if not isinstance(unit, dict):
                self.errors.append(f"{where} must be an object, got {_kind(unit)}")
                continue
            self._unknown_keys(unit, UNIT_KEYS, where)
            params = self._object(unit.get("params", {}), f'"params" of {where}')
            inputs = self._inputs(unit.get("inputs", {}), f'"inputs" of {where}')
            units.append({"params": params, "inputs": inputs})
        return units

    def _inputs(self, value: object, where: str) -> dict[str, np.ndarray]:
        arrays = {}
        for name, ref in self._object(value, where).items():
            if not isinstance(ref, str) or not ref:
                self.errors.append(f"{where}: {name!r} must be the path of a .npy file")
                continue
            array = self._array(ref, f"input {name!r} ({where})")
            if array is not None:
                arrays[name] = array
        return arrays

    def _array(self, ref: str, what: str) -> np.ndarray | None:
        path = (self.base / ref).resolve()
        if path not in self._arrays:
            array = self._load(path, ref, what)
            if array is None:
                return None
            self._arrays[path] = array
        return self._arrays[path]

    def _load(self, path: Path, ref: str, what: str) -> np.ndarray | None:
        import numpy as np

        from tabgrid.protocol import DType

        if not path.is_file():
            self.errors.append(f"{what}: file not found: {ref} (looked for {path})")
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            self.errors.append(f"{what}: {ref} is not a .npy array: {exc}")
            return None
        if not isinstance(array, np.ndarray):
            self.errors.append(f"{what}: {ref} holds several arrays; save one array per .npy")
            return None
        allowed = DType.__args__
        if array.dtype.name not in allowed:
            names = ", ".join(allowed)
            self.errors.append(f"{what}: {ref} has dtype {array.dtype.name}; use one of {names}")
            return None
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "null"
    return names.get(type(value), f"a {type(value).__name__}")


# ---- talking to a coordinator ----------------------------------------------------------------


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("TABGRID_URL", DEFAULT_URL),
        help="coordinator URL (default: $TABGRID_URL or %(default)s)",
    )
    parser.add_argument(
        "--token", help=f"API token (default: $TABGRID_TOKEN, else DATA/{TOKEN_FILE})"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEMO_DATA,
        help=f"where the demo keeps {TOKEN_FILE} (default: %(default)s)",
    )


def find_token(explicit: str | None, data_dir: Path, env: Mapping[str, str] = os.environ) -> str:
    """--token, then $TABGRID_TOKEN, then the token the demo saved."""
    if explicit:
        return explicit
    if env.get("TABGRID_TOKEN"):
        return env["TABGRID_TOKEN"]
    path = data_dir / TOKEN_FILE
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        token = ""
    if token:
        return token
    raise CliError(
        f"no API token: pass --token, set TABGRID_TOKEN, or run the demo, which saves one to "
        f"{path} (none found there). An operator makes tokens with: tabgrid token create"
    )


def open_client(args: argparse.Namespace) -> Client:
    from tabgrid.client import Client

    return Client(args.url, find_token(args.token, args.data))


def describe_error(exc: BaseException, url: str = "") -> str:
    """A coordinator's problem document (title, detail, each error), or what went wrong."""
    import httpx

    if isinstance(exc, httpx.TransportError):
        where = f" at {url}" if url else ""
        return (
            f"cannot reach the coordinator{where}: {exc or type(exc).__name__}. "
            "Is it running? Start one with: tabgrid serve (or ./dev demo)"
        )
    title = getattr(exc, "title", None)
    if title is None:
        return str(exc) or type(exc).__name__
    status = getattr(exc, "status", None)
    lines = [f"{title} (HTTP {status})" if status else str(title)]
    if getattr(exc, "detail", ""):
        lines.append(f"  {exc.detail}")  # type: ignore[attr-defined]
    lines.extend(f"  - {error}" for error in getattr(exc, "errors", None) or [])
    return "\n".join(lines)


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
    from tabgrid.worker import run_worker

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


def on_interrupt(stop: asyncio.Event, message: str) -> None:
    """First Ctrl-C (or SIGTERM) asks to stop; a second one interrupts as usual."""
    loop = asyncio.get_running_loop()

    def first(signum: int) -> None:
        print(f"\n{message}", file=sys.stderr, flush=True)
        stop.set()
        loop.remove_signal_handler(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        # Without loop signal handlers (Windows) Ctrl-C raises KeyboardInterrupt instead.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, first, signum)


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
    from tabgrid.progress import format_duration, format_rate

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
    from tabgrid.demo import run_demo

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
        from tabgrid.client import TabgridError
    except ImportError:
        return isinstance(exc, httpx.TransportError)
    return isinstance(exc, TabgridError | httpx.TransportError)


if __name__ == "__main__":
    # Run the importable module, not this __main__ copy, so that its exception classes are the
    # ones the demo raises.
    from tabgrid.cli import main as _main

    sys.exit(_main())
