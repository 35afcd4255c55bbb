"""Schema revisions (store/schema.py, store/migrations): what `upgrade` makes on SQLite and
PostgreSQL, databases made before revisions, concurrent upgrades, what a coordinator refuses,
and the `tabgrid db` commands."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, Table, inspect, text
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from tabgrid.cli import commands as cli
from tabgrid.store import Store, schema, upgrade
from tabgrid.store.db import make_engine
from tabgrid.store.migrations import __main__ as new_revision_command


@pytest.fixture
def engine(empty_db_url: str) -> Iterator[Engine]:
    e = make_engine(empty_db_url)
    yield e
    e.dispose()


def differences(engine: Engine) -> list[object]:
    """What alembic's autogenerate finds between the database and store/tables.py."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def run(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.begin() as conn:
        result = conn.execute(text(sql))
        return [tuple(row) for row in result] if result.returns_rows else []


def test_upgrade_makes_the_schema_tables_py_declares(engine: Engine) -> None:
    """Also the guard of every later change of tables.py: one without its revision fails here."""
    assert schema.state(engine).describe() == "empty (no tabgrid tables yet)"
    done = schema.upgrade(engine)
    assert (done.before.current, done.after) == (None, schema.head())
    assert differences(engine) == []
    assert schema.state(engine).newest
    if engine.dialect.name == "sqlite":  # alembic does not compare AUTOINCREMENT
        for table in SQLModel.metadata.sorted_tables:
            (ddl,) = run(engine, f"SELECT sql FROM sqlite_master WHERE name = '{table.name}'")[0]
            never_reused = bool(table.kwargs.get("sqlite_autoincrement"))
            assert ("AUTOINCREMENT" in ddl) == never_reused, table.name


def test_the_revisions_go_up_one_at_a_time_and_down_to_nothing(engine: Engine) -> None:
    revisions = schema.revisions()
    assert revisions[0] == schema.FIRST and revisions[-1] == schema.head()
    with engine.begin() as conn:
        for revision in revisions:
            command.upgrade(schema.config_for(conn), revision)
    assert differences(engine) == []
    with engine.begin() as conn:
        command.downgrade(schema.config_for(conn), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert schema.upgrade(engine).after == schema.head()
    assert differences(engine) == []


def make_the_old_way(engine: Engine) -> None:
    """A database as create_all of an older tables.py left it: a few columns (ADDED_COLUMNS)
    and a table and an index not there yet, and rows in it."""
    SQLModel.metadata.create_all(engine)
    with engine.begin() as conn:
        for table, column in (("workers", "draining"), ("tokens", "expires_at")):
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        conn.execute(text("ALTER TABLE units DROP COLUMN revision"))
        conn.execute(text("DROP TABLE disagreements"))
        conn.execute(text("DROP INDEX replicas_leased_deadline"))
        # What revisions after the first added: no database made before revisions had it.
        conn.execute(text("DROP TABLE coordinators"))
        conn.execute(text("DROP TABLE blob_parts"))
        conn.execute(text("DROP TABLE blob_bodies"))
        conn.execute(text("ALTER TABLE replicas DROP COLUMN coordinator"))
        conn.execute(
            text(
                "INSERT INTO tokens (name, role, hash, created_at) "
                "VALUES ('old', 'operator', 'h', 1.0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO workers (id, secret_hash, kind, name, adapter, client_addr, "
                "created_at, last_seen, results, valid, invalid, errors, consecutive_valid, "
                "checks_passed, checks_failed, credit, banned) VALUES ('w1', 's', 'native', "
                "'box', '{}', '', 1.0, 2.0, 5, 4, 1, 0, 4, 0, 0, 1.5, FALSE)"
            )
        )


def test_a_database_made_before_revisions_is_brought_up_and_keeps_its_rows(
    engine: Engine,
) -> None:
    make_the_old_way(engine)
    assert schema.state(engine).legacy
    done = schema.upgrade(engine)
    assert done.before.legacy and done.after == schema.head()
    assert set(done.legacy_changes) == {
        "created table disagreements",
        "added column workers.draining",
        "added column tokens.expires_at",
        "added column units.revision",
        "created index replicas_leased_deadline",
    }
    assert differences(engine) == []
    assert run(engine, "SELECT version_num FROM alembic_version") == [(schema.head(),)]
    assert run(engine, "SELECT name, role, expires_at FROM tokens") == [("old", "operator", None)]
    assert run(engine, "SELECT id, results, credit, draining FROM workers") == [
        ("w1", 5, 1.5, False)
    ]
    assert schema.upgrade(engine).legacy_changes == []  # stamped: never again


def test_an_old_sqlite_database_is_upgraded_when_opened(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    try:
        make_the_old_way(engine)
        Store(url).close()
        assert schema.state(engine).newest
        assert differences(engine) == []
    finally:
        engine.dispose()


def test_processes_upgrading_one_database_at_once_take_turns(empty_db_url: str) -> None:
    """Without the lock (BEGIN IMMEDIATE, pg_advisory_xact_lock) the later ones fail: their
    transaction read the database before the first one changed it."""
    n = 4
    barrier = threading.Barrier(n)
    outcomes: list[object] = []

    def one() -> None:
        engine = make_engine(empty_db_url)
        try:
            barrier.wait()
            outcomes.append(schema.upgrade(engine))
        except Exception as e:
            outcomes.append(e)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    failures = [o for o in outcomes if not isinstance(o, schema.Upgrade)]
    assert failures == [] and len(outcomes) == n
    firsts = [o for o in outcomes if isinstance(o, schema.Upgrade) and o.before.current is None]
    assert len(firsts) == 1, "exactly one process made the tables"


def test_a_coordinator_on_postgresql_does_not_migrate_and_says_what_to_run(
    empty_pg_url: str,
) -> None:
    with_password = empty_pg_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    assert with_password != empty_pg_url
    shown = with_password.replace(":s3cret@", ":***@")
    with pytest.raises(schema.SchemaError) as refused:
        Store(with_password)
    message = str(refused.value)
    assert "s3cret" not in message
    assert "empty (no tabgrid tables yet)" in message
    assert message.endswith(f"tabgrid db upgrade --db {shown}")
    engine = make_engine(empty_pg_url)
    try:
        assert inspect(engine).get_table_names() == [], "the coordinator changed the schema"
    finally:
        engine.dispose()
    upgrade(empty_pg_url)
    Store(with_password).close()


def test_a_database_a_newer_tabgrid_upgraded_is_refused(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        run(engine, "UPDATE alembic_version SET version_num = '9999'")
        with pytest.raises(schema.SchemaError, match="at revision 9999, which this tabgrid"):
            Store(db_url)
        with pytest.raises(schema.SchemaError, match="run it with the tabgrid that upgraded it"):
            schema.upgrade(engine)
    finally:
        engine.dispose()


def test_db_commands_upgrade_and_tell_the_revision(
    engine: Engine, empty_db_url: str, capsys
) -> None:  # type: ignore[no-untyped-def]
    db = ["--db", empty_db_url]  # `engine` made the SQLite file: an empty database
    assert cli.main(["db", "current", *db]) == 1
    out, err = capsys.readouterr()
    assert "empty (no tabgrid tables yet)" in out
    assert "upgrade it with: tabgrid db upgrade --db " in err
    assert cli.main(["db", "upgrade", *db]) == 0
    head = schema.head()
    assert f"upgraded from empty to revision {head} (the newest)" in capsys.readouterr().out
    assert cli.main(["db", "upgrade", *db]) == 0
    assert f"already at revision {head} (the newest); nothing to do" in capsys.readouterr().out
    assert cli.main(["db", "current", *db]) == 0
    assert capsys.readouterr().out.strip().endswith(f"at revision {head} (the newest)")


def test_db_upgrade_lists_what_it_did_to_a_database_made_before_revisions(
    tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'tabgrid.db'}"
    engine = make_engine(url)
    try:
        make_the_old_way(engine)
    finally:
        engine.dispose()
    assert cli.main(["db", "upgrade", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "made before schema revisions were recorded" in out
    assert "  added column workers.draining\n" in out
    assert f"upgraded from before revisions to revision {schema.head()}" in out


def test_db_current_names_a_missing_sqlite_file_without_making_it(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli.main(["db", "current", "--data", str(tmp_path / "none")]) == 1
    assert "there is no database at" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_db_upgrade_says_when_postgresql_cannot_be_reached(capsys) -> None:  # type: ignore[no-untyped-def]
    url = "postgresql://tabgrid:s3cret@127.0.0.1:1/nowhere"
    assert cli.main(["db", "upgrade", "--db", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot use the database postgresql://tabgrid:***@127.0.0.1:1/")
    assert "s3cret" not in err


def test_a_new_revision_is_numbered_after_the_newest_and_holds_the_change(
    tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """`python -m tabgrid.store.migrations MESSAGE`, on a copy of the revisions, after a table
    was added to the metadata as tables.py would."""
    copy = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(schema, "MIGRATIONS", copy)
    schema._scripts.cache_clear()
    added = Table("scratch_notes", SQLModel.metadata, Column("note", AutoString(), nullable=False))
    try:
        head = schema.head()
        script = new_revision_command.new_revision("add scratch notes")
    finally:
        SQLModel.metadata.remove(added)
        schema._scripts.cache_clear()
    path = Path(script.path)
    assert path == copy / "versions" / f"{int(head) + 1:04d}_add_scratch_notes.py"
    source = path.read_text(encoding="utf-8")
    assert f"down_revision = {head!r}" in source
    assert "op.create_table('scratch_notes'," in source
    assert "sa.Column('note', sa.String(), nullable=False)" in source  # not sqlmodel's type
    assert "sqlmodel" not in source
