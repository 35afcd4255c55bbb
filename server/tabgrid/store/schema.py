"""The schema's revision: upgrading a database to the newest one, and telling where it is.

The revisions are alembic's, in store/migrations (its docstring says how to add one). SQLite,
the embedded default, is upgraded by whoever opens it. A coordinator on PostgreSQL only checks
(``require_newest``): coordinators starting together must not race on DDL, and a fleet's
schema changes when its operator says so, with ``tabgrid db upgrade``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, inspect, text

from tabgrid.store.db import BEGIN_IMMEDIATE
from tabgrid.store.migrations import legacy

log = logging.getLogger("tabgrid.store")

MIGRATIONS = Path(__file__).parent / "migrations"
FIRST = "0001"
# pg_advisory_xact_lock's key ("tabgrid" in ASCII): upgrades of one database run one at a time.
_PG_LOCK = 0x7461_6267_7269_6400


class SchemaError(Exception):
    """The database's schema is not one this tabgrid runs on; the message says what to do."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands against this tabgrid's revisions."""

    current: str | None  # the recorded revision; None when there is none
    head: str
    legacy: bool = False  # tabgrid's tables are there, made before revisions were recorded
    known: bool = True  # False: a newer tabgrid upgraded it

    @property
    def newest(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        if self.newest:
            return f"at revision {self.current} (the newest)"
        if self.legacy:
            return "made before schema revisions were recorded (no alembic_version table)"
        if self.current is None:
            return "empty (no tabgrid tables yet)"
        if not self.known:
            return f"at revision {self.current}, which this tabgrid does not know (a newer one)"
        return f"at revision {self.current}; the newest is {self.head}"


@dataclass(frozen=True)
class Upgrade:
    """What an upgrade found, the revision it left, and what the legacy step changed."""

    before: SchemaState
    after: str
    legacy_changes: list[str] = field(default_factory=list)


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def head() -> str:
    revision = _scripts().get_current_head()
    assert revision is not None, "store/migrations/versions holds no revision"
    return revision


def revisions() -> list[str]:
    """Every revision, oldest first."""
    return [script.revision for script in _scripts().walk_revisions()][::-1]


@functools.cache
def _first_tables() -> frozenset[str]:
    return frozenset(legacy.first_schema(_first_revision()).tables)


def _first_revision() -> Callable[[], None]:
    script = _scripts().get_revision(FIRST)
    assert script is not None
    return script.module.upgrade


def _known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def _state(conn: Connection) -> SchemaState:
    current = MigrationContext.configure(conn).get_current_revision()
    if current is not None:
        return SchemaState(current, head(), known=_known(current))
    tables = set(inspect(conn).get_table_names())
    return SchemaState(None, head(), legacy=bool(tables & _first_tables()))


def state(engine: Engine) -> SchemaState:
    with engine.connect() as conn:
        return _state(conn)


def upgrade(engine: Engine) -> Upgrade:
    """Brings the database to the newest revision, in one transaction. Safe to run from several
    processes at once: the first takes a lock, the others wait and then find nothing to do."""
    with engine.connect() as conn:
        conn.execution_options(**BEGIN_IMMEDIATE)  # SQLite: the write lock from the start
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
            before = _state(conn)
            if not before.known:
                raise SchemaError(
                    f"the database {shown_url(engine)} is {before.describe()}: {_NEWER}"
                )
            config = config_for(conn)
            changes = []
            if before.legacy:
                changes = legacy.bring_up(conn, _first_revision())
                command.stamp(config, FIRST)
            command.upgrade(config, "head")
            after = MigrationContext.configure(conn).get_current_revision()
    assert after is not None
    return Upgrade(before, after, changes)


_NEWER = "run it with the tabgrid that upgraded it, or a newer one"


def config_for(conn: Connection) -> Config:
    """alembic's configuration, made in code: the package's revisions, this connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def shown_url(engine: Engine) -> str:
    """The database's URL as a person passes it to --db, without its password."""
    url = engine.url.set(drivername=engine.url.get_backend_name())
    return url.render_as_string(hide_password=True)


def require_newest(engine: Engine) -> None:
    """Raises SchemaError, saying what to run, unless the database is at the newest revision."""
    now = state(engine)
    if now.newest:
        return
    where = shown_url(engine)
    if not now.known:
        raise SchemaError(f"the database {where} is {now.describe()}: {_NEWER}")
    raise SchemaError(
        f"the database {where} is {now.describe()}; on PostgreSQL neither a coordinator nor a "
        f"command changes the schema by itself. Upgrade it once, before starting the "
        f"coordinators: tabgrid db upgrade --db {where}"
    )


def prepare(engine: Engine) -> None:
    """What opening a database does to its schema: SQLite is upgraded, PostgreSQL checked."""
    if engine.dialect.name == "sqlite":
        if not state(engine).newest:
            done = upgrade(engine)
            if not done.before.newest:
                log.info(
                    "schema upgraded: the database was %s, now at revision %s",
                    done.before.describe(),
                    done.after,
                )
        return
    require_newest(engine)
