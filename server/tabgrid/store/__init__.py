"""The database: tables, and the only modules that issue queries."""

from __future__ import annotations

import time

from tabgrid.store.db import Db, create_schema, make_engine


class Store(Db):
    """A database handle with its schema ensured."""

    def __init__(self, url: str) -> None:
        super().__init__(make_engine(url))
        create_schema(self.engine)

    def create_token(
        self, role: str, name: str = "", expires_at: float | None = None
    ) -> tuple[int, str]:
        from tabgrid.store import tokens

        return self.tx(tokens.create, role, name, time.time(), expires_at)


def open_store(url: str) -> Store:
    return Store(url)


def issue_token(url: str, role: str, name: str = "") -> str:
    """Creates a token in the database at `url` and returns its secret (shown only once)."""
    store = Store(url)
    try:
        return store.create_token(role, name)[1]
    finally:
        store.close()


__all__ = ["Db", "Store", "issue_token", "open_store"]
