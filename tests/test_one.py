"""sql.One, a statement run on the driver's own cursor: the same rows as SQLAlchemy returns,
its types' processing included, on both backends; listeners still see it; what it cannot
compile once is refused when it is first run. And sql.Many, rows written by the driver's
executemany: each value in its own column, processed as its type asks."""

from __future__ import annotations

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    select,
    update,
)

from tabgrid.store.db import normalize_url
from tabgrid.store.sql import Many, One, in_ids

meta = MetaData()
T = Table(
    "one_probe",
    meta,
    Column("id", Integer, primary_key=True),
    Column("name", String, nullable=False),
    Column("flag", Boolean, nullable=False),
    Column("at", Float),
)
ROWS = [{"id": i, "name": f"w{i}", "flag": i % 3 == 0, "at": i / 4} for i in range(1, 51)]

BY_IDS = select(T.c.id, T.c.name, T.c.flag, T.c.at).where(in_ids(T.c.id)).order_by(T.c.id)
# A literal in the statement ("renamed") and a bound value; RETURNING a boolean.
RENAME = (
    update(T)
    .where(in_ids(T.c.id), T.c.at >= bindparam("least", type_=Float))
    .values(name="renamed")
    .returning(T.c.id, T.c.flag)
)


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    engine = create_engine(normalize_url(db_url))
    with engine.begin() as conn:
        meta.create_all(conn)
        conn.execute(T.insert(), ROWS)
    yield engine
    with engine.begin() as conn:
        meta.drop_all(conn)
    engine.dispose()


def test_one_returns_what_sqlalchemy_returns(engine) -> None:  # type: ignore[no-untyped-def]
    one = One(BY_IDS)
    with engine.begin() as conn:
        for ids in ([], [7], [9, 3, 3, 999], list(range(1, 51))):
            want = [tuple(r) for r in conn.execute(BY_IDS, {"ids": ids})]
            got = one.all(conn, {"ids": ids})
            assert got == want, ids
            assert all(type(r[2]) is bool for r in got), "booleans come back as booleans"


def test_one_writes_in_the_callers_transaction(engine) -> None:  # type: ignore[no-untyped-def]
    rename = One(RENAME)
    with engine.connect() as conn:
        with conn.begin() as tx:
            got = sorted(rename.all(conn, {"ids": [2, 3, 4, 40], "least": 0.8}))
            assert got == [(4, False), (40, False)], "id 2 and 3 are below 'least'; 3 is kept"
            assert conn.execute(select(T.c.name).where(T.c.id == 4)).scalar_one() == "renamed"
            tx.rollback()
        assert conn.execute(select(T.c.name).where(T.c.id == 4)).scalar_one() == "w4"


def test_outside_a_transaction_one_writes_in_the_one_sqlalchemy_begins(engine) -> None:  # type: ignore[no-untyped-def]
    rename = One(RENAME)
    with engine.connect() as conn:
        assert not conn.in_transaction()
        assert rename.all(conn, {"ids": [6], "least": 0.0}) == [(6, True)]
        assert conn.in_transaction(), "SQLAlchemy began it, as for any statement"
        conn.rollback()
        assert conn.execute(select(T.c.name).where(T.c.id == 6)).scalar_one() == "w6"


def test_listeners_see_what_one_runs(engine) -> None:  # type: ignore[no-untyped-def]
    seen: list[str] = []
    one = One(BY_IDS)
    event.listen(engine, "before_cursor_execute", lambda c, cur, sql, *a: seen.append(sql))
    with engine.begin() as conn:
        assert [r[0] for r in one.all(conn, {"ids": [5, 6]})] == [5, 6]
    assert any("one_probe" in s for s in seen), seen


def test_an_expanding_in_is_refused(engine) -> None:  # type: ignore[no-untyped-def]
    one = One(select(T.c.id).where(T.c.name.in_(["w1", "w2"])))
    with engine.begin() as conn, pytest.raises(ValueError, match="expanding IN"):
        one.all(conn)
    limited = One(select(T.c.id).limit(bindparam("n", type_=Integer, literal_execute=True)))
    with engine.begin() as conn, pytest.raises(ValueError, match="literal_execute"):
        limited.all(conn, {"n": 3})


def test_many_writes_each_value_into_its_column(engine) -> None:  # type: ignore[no-untyped-def]
    # Keys in another order than the statement's columns; two of them processed (Float,
    # Boolean), one not; and a column the rows do not name keeps its value.
    many = Many(
        update(T)
        .where(T.c.id == bindparam("b_id"))
        .values(at=bindparam("at", type_=Float), name=bindparam("name"), flag=bindparam("flag"))
    )
    rows = [
        {"flag": True, "name": "seven", "b_id": 7, "at": 2},
        {"name": "eight", "at": None, "b_id": 8, "flag": False},
    ]
    with engine.begin() as conn:
        many.run(conn, rows)
        many.run(conn, [])
        got = conn.execute(BY_IDS, {"ids": [7, 8, 9]}).all()
    assert [tuple(r) for r in got] == [
        (7, "seven", True, 2.0),
        (8, "eight", False, None),
        (9, "w9", True, 9 / 4),
    ]
    assert type(got[0][3]) is float
