"""Shared fixtures: databases on both backends, the sqlite default and a real PostgreSQL, empty
or at the newest schema revision."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_URL = os.environ.get("TABGRID_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)


def pg_available() -> bool:
    try:
        with _pg_admin():
            return True
    except Exception:
        return False


def require_pg() -> None:
    """Under CI a PostgreSQL that cannot be reached is a failure, not a skip."""
    if pg_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable (required under CI=true)")
    pytest.skip(f"PostgreSQL at {PG_URL} is not reachable")


def fresh_pg_database() -> Iterator[str]:
    require_pg()
    name = f"tabgrid_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def upgraded(url: str) -> str:
    """The database at `url`, brought to the newest schema revision as an operator does before
    starting coordinators on PostgreSQL (`tabgrid db upgrade`)."""
    from tabgrid.store import upgrade

    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty database on every backend: no tables, no schema revision."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tabgrid.db'}"
    else:
        yield from fresh_pg_database()


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """One test body, run against every backend, on a database at the newest schema revision."""
    return upgraded(empty_db_url)


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    yield from fresh_pg_database()


@pytest.fixture
def pg_url(empty_pg_url: str) -> str:
    """A PostgreSQL database at the newest schema revision."""
    return upgraded(empty_pg_url)


@pytest.fixture
def store(db_url: str):  # type: ignore[no-untyped-def]
    """A Store on each backend (db_url), closed after the test."""
    from tabgrid.store import Store

    s = Store(db_url)
    yield s
    s.close()
