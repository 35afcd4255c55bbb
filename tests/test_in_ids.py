"""sql.in_ids, a list of ids bound as one parameter (JSON text on SQLite, an array on
PostgreSQL), matches the rows a plain IN does, with one SQL text whatever the list's length."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, event, select

from tabgrid.store.sql import in_ids

ROWS = 2000
LISTS = [
    [],
    [7],
    list(range(1, 2001, 2)),  # 1000 ids
    [5, 5, 3, 99999, -1],  # repeats, and ids no row has
]


def test_in_ids_matches_a_plain_in(db_url: str) -> None:
    meta = MetaData()
    t = Table(
        "in_ids_probe",
        meta,
        Column("id", Integer, primary_key=True),
        Column("name", String, nullable=False),
    )
    engine = create_engine(db_url)
    sent: set[str] = set()
    event.listen(engine, "before_cursor_execute", lambda c, cur, sql, *a: sent.add(sql))
    try:
        with engine.begin() as conn:
            meta.create_all(conn)
            conn.execute(t.insert(), [{"id": i, "name": f"w{i}"} for i in range(1, ROWS + 1)])
            by_id = select(t.c.id).where(in_ids(t.c.id)).order_by(t.c.id)
            by_name = select(t.c.id).where(in_ids(t.c.name, "names")).order_by(t.c.id)
            plain = [select(t.c.id).where(t.c.id.in_(ids)).order_by(t.c.id) for ids in LISTS]
            wants = [list(conn.execute(q)) for q in plain]
            sent.clear()
            for ids, want in zip(LISTS, wants, strict=True):
                assert list(conn.execute(by_id, {"ids": ids})) == want, ids
                names = [f"w{i}" for i in ids]
                assert list(conn.execute(by_name, {"names": names})) == want, ids
            # One text each, whatever the length: SQLAlchemy and the driver keep it.
            assert len(sent) == 2, sent
            changed = conn.execute(
                t.update().where(in_ids(t.c.id)).values(name="x"), {"ids": LISTS[2]}
            )
            assert changed.rowcount == 1000
            meta.drop_all(conn)
    finally:
        engine.dispose()
