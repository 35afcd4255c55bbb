"""The database: tables, and the only modules that issue queries."""

from __future__ import annotations

import time

from tabgrid.store import schema
from tabgrid.store.db import Db, make_engine


class Store(Db):
    """A database handle at the newest schema revision: opening a SQLite file upgrades it; a
    PostgreSQL database must have been upgraded (schema.SchemaError says with what)."""

    def __init__(self, url: str) -> None:
        engine = make_engine(url)
        try:
            schema.prepare(engine)
        except BaseException:
            engine.dispose()
            raise
        super().__init__(engine)

    def create_token(
        self, role: str, name: str = "", expires_at: float | None = None
    ) -> tuple[int, str]:
        from tabgrid.store import tokens

        return self.tx(tokens.create, role, name, time.time(), expires_at)


def upgrade(url: str) -> schema.Upgrade:
    """Brings the database at `url` to the newest schema revision (``tabgrid db upgrade``)."""
    engine = make_engine(url)
    try:
        return schema.upgrade(engine)
    finally:
        engine.dispose()


def open_store(url: str) -> Store:
    return Store(url)


def issue_token(url: str, role: str, name: str = "") -> str:
    """Creates a token in the database at `url` and returns its secret (shown only once)."""
    store = Store(url)
    try:
        return store.create_token(role, name)[1]
    finally:
        store.close()


__all__ = ["Db", "Store", "issue_token", "open_store", "upgrade"]
