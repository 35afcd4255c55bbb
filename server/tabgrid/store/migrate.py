"""Columns added after a table first shipped, added to databases made before them.

``create_all`` makes missing tables but never alters an existing one; each entry here is an
additive, defaulted column, so an older database keeps working after an upgrade.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, MetaData, Table, inspect, text

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


def add_missing_columns(engine: Engine) -> list[str]:
    """Adds what ADDED_COLUMNS lists and the database lacks; returns 'table.column' added."""
    inspector = inspect(engine)
    added = []
    with engine.begin() as conn:
        for table, column, ddl in ADDED_COLUMNS:
            present = {c["name"] for c in inspector.get_columns(table)}
            if column not in present:
                # Another coordinator starting beside this one may add it first (PostgreSQL).
                guard = "IF NOT EXISTS " if engine.dialect.name == "postgresql" else ""
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {guard}{column} {ddl}"))
                added.append(f"{table}.{column}")
    return added


def never_reuse_ids(engine: Engine, metadata: MetaData) -> list[str]:
    """Rebuilds SQLite tables made before their ids were AUTOINCREMENT; returns their names.

    SQLite cannot alter a table's key, so each is copied into a new table of the current
    definition. Without AUTOINCREMENT, deleting the newest job let the next job take its id,
    and workers that cached the old job by id computed the wrong one.
    """
    if engine.dialect.name != "sqlite":
        return []  # PostgreSQL's sequences never hand an id out twice
    rebuilt = []
    with engine.begin() as conn:
        # Renaming must not rewrite other tables' references to the renamed one.
        conn.exec_driver_sql("PRAGMA legacy_alter_table=ON")
        for table in metadata.sorted_tables:
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
