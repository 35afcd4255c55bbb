"""Alembic's environment: runs the revisions on the connection tabgrid hands over.

There is no alembic.ini: store/schema.py builds the Config in code and passes a connection,
already inside the transaction that holds the migration lock, as ``attributes["connection"]``.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from tabgrid.store import tables  # noqa: F401  (registers the tables, for autogenerate)


def render_item(kind: str, obj: Any, _context: AutogenContext) -> str | bool:
    """tables.py's str columns are sqlmodel's AutoString, a VARCHAR: revisions say sa.String()
    and need no sqlmodel import."""
    if kind == "type" and isinstance(obj, AutoString):
        return "sa.String()"
    return False


connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "tabgrid's migrations run on a connection from tabgrid.store.schema: "
        "use `tabgrid db upgrade`, not the alembic command"
    )
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    compare_type=True,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
