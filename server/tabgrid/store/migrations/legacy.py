"""Databases made before schema revisions were recorded, brought up to the first revision.

Those were made by SQLModel's ``create_all`` of some earlier tables.py, which makes missing
tables but never alters an existing one. So this step adds the columns added since a table
first shipped (ADDED_COLUMNS), the tables and indexes added since, and on SQLite rebuilds the
tables whose ids were not AUTOINCREMENT. It works against the first revision's tables, never
today's tables.py (later revisions change that); store/schema.py then stamps the first revision
and upgrades on from there.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic.operations import MigrateOperation, Operations
from alembic.operations.ops import CreateIndexOp, CreateTableOp
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Index, MetaData, Table, inspect, text

ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("workers", "ban_reason", "VARCHAR"),
    ("workers", "draining", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("tokens", "expires_at", "FLOAT"),
    ("units", "accepted_by", "VARCHAR"),
    ("units", "credibility", "FLOAT"),
    ("units", "revision", "INTEGER NOT NULL DEFAULT 0"),
    ("replicas", "spot_check", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("workers", "checks_passed", "INTEGER NOT NULL DEFAULT 0"),
    ("workers", "checks_failed", "INTEGER NOT NULL DEFAULT 0"),
)


def bring_up(conn: Connection, first_revision: Callable[[], None]) -> list[str]:
    """Makes a pre-revision database what the first revision makes; returns what it changed.

    ``first_revision`` is that revision's ``upgrade``: its tables are read from it, not run.
    """
    schema = first_schema(first_revision)
    existing = set(inspect(conn).get_table_names())
    changes = [f"created table {t.name}" for t in schema.sorted_tables if t.name not in existing]
    schema.create_all(conn)
    changes += [f"added column {c}" for c in add_missing_columns(conn)]
    changes += [f"rebuilt {t} with ids never reused" for t in never_reuse_ids(conn, schema)]
    changes += [f"created index {i}" for i in add_missing_indexes(conn, schema)]
    return changes


def first_schema(first_revision: Callable[[], None]) -> MetaData:
    """The tables and indexes a revision of only create_table and create_index calls makes,
    read from its operations without running them."""
    asked: list[MigrateOperation] = []
    with Operations.context(MigrationContext.configure(dialect_name="sqlite")) as operations:
        operations.invoke = asked.append  # type: ignore[method-assign]
        first_revision()
    metadata = MetaData()
    for operation in asked:
        if isinstance(operation, CreateTableOp):
            operation.to_table().to_metadata(metadata)
        elif isinstance(operation, CreateIndexOp):
            table = metadata.tables[operation.table_name]
            columns = [table.c[str(name)] for name in operation.columns]
            Index(operation.index_name, *columns, unique=bool(operation.unique), **operation.kw)
        else:
            raise TypeError(f"the first revision only creates tables and indexes: {operation!r}")
    return metadata


def add_missing_columns(conn: Connection) -> list[str]:
    """Adds what ADDED_COLUMNS lists and the database lacks; returns 'table.column' added.
    Runs under the migration lock (store/schema.py): no other process adds them meanwhile."""
    inspector = inspect(conn)
    added = []
    for table, column, ddl in ADDED_COLUMNS:
        present = {c["name"] for c in inspector.get_columns(table)}
        if column not in present:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
            added.append(f"{table}.{column}")
    return added


def add_missing_indexes(conn: Connection, schema: MetaData) -> list[str]:
    """create_all made an existing table's indexes only with the table: adds the later ones."""
    inspector = inspect(conn)
    made = []
    for table in schema.sorted_tables:
        present = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            if index.name not in present:
                index.create(conn)
                made.append(str(index.name))
    return made


def never_reuse_ids(conn: Connection, schema: MetaData) -> list[str]:
    """Rebuilds SQLite tables made before their ids were AUTOINCREMENT; returns their names.

    SQLite cannot alter a table's key, so each is copied into a new table of the first
    revision's definition. Without AUTOINCREMENT, deleting the newest job let the next job take
    its id, and workers that cached the old job by id computed the wrong one.
    """
    if conn.dialect.name != "sqlite":
        return []  # PostgreSQL's sequences never hand an id out twice
    rebuilt = []
    # Renaming must not rewrite other tables' references to the renamed one.
    conn.exec_driver_sql("PRAGMA legacy_alter_table=ON")
    for table in schema.sorted_tables:
        if not table.kwargs.get("sqlite_autoincrement"):
            continue
        ddl = conn.execute(
            text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :n"),
            {"n": table.name},
        ).scalar()
        if ddl is None or "AUTOINCREMENT" in ddl.upper():
            continue
        _copy_into_new(conn, table)
        rebuilt.append(table.name)
    conn.exec_driver_sql("PRAGMA legacy_alter_table=OFF")
    return rebuilt


_INDEXES = text(  # those made by CREATE INDEX; SQLite's own go with their table
    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t AND sql IS NOT NULL"
)


def _copy_into_new(conn: Connection, table: Table) -> None:
    old = f"{table.name}__before_autoincrement"
    indexes = conn.execute(_INDEXES, {"t": table.name}).scalars()
    for name in list(indexes):
        conn.exec_driver_sql(f'DROP INDEX "{name}"')
    conn.exec_driver_sql(f'ALTER TABLE "{table.name}" RENAME TO "{old}"')
    table.create(conn)
    present = {row[1] for row in conn.exec_driver_sql(f'PRAGMA table_info("{old}")')}
    cols = ", ".join(f'"{c.name}"' for c in table.columns if c.name in present)
    conn.exec_driver_sql(f'INSERT INTO "{table.name}" ({cols}) SELECT {cols} FROM "{old}"')
    conn.exec_driver_sql(f'DROP TABLE "{old}"')
