"""What the commands and the demo share: defaults, the error a person can fix, the settings
and database options, talking to a coordinator, Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tabgrid.client.sdk import Client
    from tabgrid.settings import Settings


DEFAULT_URL = "http://127.0.0.1:8000"
DEMO_DATA = Path("tabgrid-demo")
TOKEN_FILE = "demo-token"


class CliError(Exception):
    """A problem the person can fix; printed without a traceback."""


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


def store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", help="database URL: sqlite:///PATH or postgresql://... (default: $TABGRID_DB)"
    )
    parser.add_argument(
        "--data", type=Path, help="data directory: blobs, SQLite file (default: $TABGRID_DATA)"
    )


def settings_from_args(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> Settings:
    """Settings from TABGRID_* variables, then the command line; --data alone moves the db too.
    Raises CliError for settings that cannot work together."""
    from tabgrid.settings import Settings, from_env, proxies, sqlite_url

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
        overrides["trust_per_address"] = 0  # one machine's workers are separate witnesses
    if getattr(args, "blobs", None) is not None:
        overrides["blobs"] = args.blobs
    if getattr(args, "trust_proxy", None) is not None:
        overrides["trust_proxy"] = proxies(args.trust_proxy)
    if getattr(args, "sweep_interval", None) is not None:
        overrides["sweep_interval_s"] = args.sweep_interval
        # Each sweep renews this coordinator's row: the others wait ten of them.
        least = Settings.coordinator_ttl_s
        overrides["coordinator_ttl_s"] = max(least, 10 * args.sweep_interval)
    try:
        return from_env(**overrides)
    except ValueError as e:
        raise CliError(str(e)) from None


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
    from tabgrid.client.sdk import Client

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
