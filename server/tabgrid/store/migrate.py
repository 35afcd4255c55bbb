"""Columns added after a table first shipped, added to databases made before them.

``create_all`` makes missing tables but never alters an existing one; each entry here is an
additive, defaulted column, so an older database keeps working after an upgrade.
"""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("workers", "ban_reason", "VARCHAR"),
    ("workers", "draining", "BOOLEAN NOT NULL DEFAULT FALSE"),
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
