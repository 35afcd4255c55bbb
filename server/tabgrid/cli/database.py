"""``tabgrid db upgrade`` and ``tabgrid db current``: the database's schema revision."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabgrid.cli.common import CliError, settings_from_args, store_options

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tabgrid.store.schema import SchemaState


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from tabgrid.store import schema

    with _engine(args, create=True) as (engine, where):
        try:
            done = schema.upgrade(engine)
        except schema.SchemaError as e:
            raise CliError(str(e)) from None
    if done.before.newest:
        print(f"{where}: already {done.before.describe()}; nothing to do")
        return 0
    if done.before.legacy:
        print(f"{where}: {done.before.describe()}; brought up to revision {schema.FIRST}:")
        for change in done.legacy_changes or ["nothing was missing"]:
            print(f"  {change}")
    print(f"{where}: upgraded from {_was(done.before)} to revision {done.after} (the newest)")
    return 0


def _was(before: SchemaState) -> str:
    if before.legacy:
        return "before revisions"
    return "empty" if before.current is None else f"revision {before.current}"


def cmd_db_current(args: argparse.Namespace) -> int:
    """Exit status 0 when the database is at the newest revision, 1 otherwise."""
    from tabgrid.store import schema

    with _engine(args, create=False) as (engine, where):
        now = schema.state(engine)
    print(f"{where}: {now.describe()}")
    if now.newest:
        return 0
    if now.known:
        print(f"upgrade it with: tabgrid db upgrade --db {where}", file=sys.stderr)
    return 1


@contextmanager
def _engine(args: argparse.Namespace, *, create: bool) -> Iterator[tuple[Engine, str]]:
    """The engine of the database the options name, and how to name it to a person."""
    from sqlalchemy.exc import OperationalError

    from tabgrid.store import schema
    from tabgrid.store.db import make_engine

    url = settings_from_args(args).db
    if url.startswith("sqlite:///") and not create:
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            raise CliError(
                f"there is no database at {path}: pass the --data (or --db) the coordinator "
                "runs with; `tabgrid serve` and `tabgrid db upgrade` make it"
            )
    try:
        engine = make_engine(url)
    except ValueError as e:
        raise CliError(str(e)) from None
    where = url if engine.dialect.name == "sqlite" else schema.shown_url(engine)
    try:
        yield engine, where
    except OperationalError as e:
        # The driver's own words (refused, no such database, bad password), not the statement.
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise CliError(f"cannot use the database {where}: {reason}") from None
    finally:
        engine.dispose()


Subparsers = Any  # argparse's _SubParsersAction is private


def add_parsers(sub: Subparsers) -> None:
    p = sub.add_parser(
        "db",
        help="the database's schema: upgrade it, or see its revision",
        description="The schema's revisions. SQLite is upgraded whenever a coordinator or a "
        "command opens it; a coordinator on PostgreSQL only starts on a database at the newest "
        "revision, so run `tabgrid db upgrade --db postgresql://...` once after installing a "
        "new tabgrid, before starting the coordinators.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    commands: list[tuple[str, Callable[[argparse.Namespace], int], str]] = [
        ("upgrade", cmd_db_upgrade, "bring the database to the newest revision (safe to rerun)"),
        ("current", cmd_db_current, "its revision, and whether that is the newest (exit 1: not)"),
    ]
    for name, run, about in commands:
        action = actions.add_parser(name, help=about, description=about)
        action.set_defaults(run=run)
        store_options(action)
