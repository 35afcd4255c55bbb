"""The statements SQLModel's expression language does not state plainly, named in one place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import Boolean, Connection, Dialect, Float, Table, Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator, TypeEngine

Rows = Sequence[dict[str, Any]]


class Many:
    """An INSERT or UPDATE compiled once per dialect and driver (and set of keys), run as the
    driver's own executemany. SQLAlchemy processes every row's parameters in Python, which
    costs more than the write. Column defaults computed in Python are not applied: a statement
    that needs one fails here."""

    def __init__(self, stmt: UpdateBase) -> None:
        self.stmt = stmt
        self._forms: dict[tuple, tuple[str, Callable[[dict], Any]]] = {}

    def run(self, conn: Connection, rows: Rows) -> None:
        if not rows:
            return
        dialect = conn.dialect
        key = (dialect.name, dialect.driver, *rows[0])
        form = self._forms.get(key)
        if form is None:
            form = self._forms[key] = self._compile(dialect, list(rows[0]))
        sql, shape = form
        conn.exec_driver_sql(sql, [shape(r) for r in rows])

    def _compile(self, dialect: Dialect, keys: list[str]) -> tuple[str, Callable[[dict], Any]]:
        compiled = self.stmt.compile(dialect=dialect, column_keys=keys)
        unknown = [n for n, b in compiled.binds.items() if n not in keys and b.required]
        if unknown:
            raise ValueError(f"no value for bind parameter(s) {unknown} of {compiled.string}")
        return compiled.string, _binder(compiled, dialect)


def _binder(compiled: SQLCompiler, dialect: Dialect) -> Callable[[dict[str, Any]], Any]:
    """How a dict of values becomes the driver's parameters for a statement compiled once: the
    values the statement fixes filled in, each type's bind processor applied (as SQLAlchemy
    would: in_ids' lists, booleans on SQLite), in the driver's paramstyle."""
    binds = compiled.binds
    if any(b.expanding or b.literal_execute for b in binds.values()):
        raise ValueError(
            "a value rendered into the SQL (an expanding IN, literal_execute) cannot be "
            f"compiled once: {compiled.string}"
        )
    fixed = {n: b.effective_value for n, b in binds.items() if not b.required}
    process = {
        n: p
        for n, b in binds.items()
        if (p := b.type.dialect_impl(dialect).bind_processor(dialect)) is not None
    }

    def values(given: dict[str, Any]) -> dict[str, Any]:
        out = fixed | given if fixed else given
        if process:
            out = {n: process[n](v) if n in process else v for n, v in out.items()}
        return out

    plain = not fixed and not process
    if not compiled.positional:  # named: the driver takes the dict
        return dict if plain else values
    names = list(compiled.positiontup or [])
    if len(names) == 1:
        (only,) = names
        return lambda given: (values(given)[only],)
    pick = itemgetter(*names) if names else (lambda _: ())
    if plain:
        return pick
    if fixed:
        return lambda given: pick(values(given))
    # The hot case (a row of a Many): the values picked in order, the few a type processes
    # processed where they stand, not a new dict of every value per row.
    at = [(i, process[n]) for i, n in enumerate(names) if n in process]

    def positional(given: dict[str, Any]) -> tuple:
        out = list(pick(given))
        for i, p in at:
            out[i] = p(out[i])
        return tuple(out)

    return positional


class One:
    """A statement compiled once per dialect and driver, run on the driver's own cursor,
    returning plain tuples. SQLAlchemy's execution of a compiled statement (its parameters, result
    metadata, row objects) costs about 30 us, several times what a small indexed statement
    costs SQLite; a tick runs about twenty. Values are processed as SQLAlchemy would where a
    type asks for it (in_ids' lists, booleans on SQLite). It runs through SQLAlchemy instead
    when cursor listeners are attached (tests that watch the statements see it) and when no
    transaction is open (SQLAlchemy's autobegin opens one; a bare cursor would write outside
    it, at once on SQLite)."""

    def __init__(self, stmt: Executable) -> None:
        self.stmt = stmt
        self._forms: dict[tuple[str, str], _Form] = {}  # by dialect and driver

    def all(self, conn: Connection, params: dict[str, Any] | None = None) -> list[tuple]:
        """The statement's rows (or its RETURNING rows; none for a plain write)."""
        params = params or {}
        watched = conn.dispatch.before_cursor_execute or conn.dispatch.after_cursor_execute
        if watched or not conn.in_transaction():
            res = conn.execute(self.stmt, params)
            return [tuple(r) for r in res] if res.returns_rows else []
        dialect = conn.dialect
        form = self._forms.get((dialect.name, dialect.driver)) or self._compile(dialect)
        cur = conn.connection.cursor()
        try:
            cur.execute(form.sql, form.bind(params))
            if cur.description is None:
                return []
            rows = cur.fetchall()
            if form.rows is _not_yet:
                form = self._results(dialect, form, cur.description)
        finally:
            cur.close()
        return form.rows(rows) if form.rows is not None else rows

    def run(self, conn: Connection, params: dict[str, Any] | None = None) -> None:
        self.all(conn, params)

    def _compile(self, dialect: Dialect) -> _Form:
        compiled = self.stmt.compile(dialect=dialect)
        bind = _binder(compiled, dialect)
        form = self._forms[dialect.name, dialect.driver] = _Form(compiled.string, bind, _not_yet)
        return form

    def _results(self, dialect: Dialect, form: _Form, description: Sequence) -> _Form:
        """The result columns' processors, which depend on the types the driver reports."""
        columns = _result_columns(self.stmt)
        procs = [
            c.type.dialect_impl(dialect).result_processor(dialect, d[1])
            for c, d in zip(columns, description, strict=False)
        ]
        todo = [(i, p) for i, p in enumerate(procs) if p is not None]
        rows = _processing(todo) if todo else None
        form = self._forms[dialect.name, dialect.driver] = form._replace(rows=rows)
        return form


def _processing(todo: list[tuple[int, Callable[[Any], Any]]]) -> Callable[[list], list]:
    """Rows with the columns that need it (by position) processed, the rest as they came."""

    def rows(rs: list) -> list:
        out = []
        for r in rs:
            values = list(r)
            for i, p in todo:
                values[i] = p(values[i])
            out.append(tuple(values))
        return out

    return rows


def _not_yet(rows: list) -> list:
    raise AssertionError("a statement's result processors are worked out when it first runs")


class _Form(NamedTuple):
    sql: str
    bind: Callable[[dict[str, Any]], Any]
    rows: Callable[[list], list] | None  # _not_yet until it first returned rows


def _result_columns(stmt: Executable) -> list[ColumnElement[Any]]:
    if isinstance(stmt, UpdateBase):
        return list(stmt.exported_columns)
    return list(getattr(stmt, "selected_columns", []))


_json = msgspec.json.encode


class IdList(TypeDecorator):
    """A list of ids (ints, or text for worker ids: ``item_type`` follows the column) bound as
    one parameter: an array on PostgreSQL, JSON text elsewhere (SQLite reads it with
    json_each)."""

    impl = Text
    cache_ok = True

    def __init__(self, item_type: TypeEngine) -> None:
        super().__init__()
        self.item_type = item_type

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(ARRAY(self.item_type))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return list(value)
        return _json(list(value)).decode()  # str: SQLite (3.45+) reads a blob as JSONB


class InIds(ColumnElement[bool]):
    """``column IN ids`` for a list of ids bound as one parameter (in_ids)."""

    __visit_name__ = "in_ids"
    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # not ``... = 1`` where booleans are numbers (SQLite)
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("ids", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], ids: BindParameter[Any]) -> None:
        self.column = column
        self.ids = ids


def in_ids(column: ColumnElement[Any], name: str = "ids") -> InIds:
    """``column IN ids`` where the caller binds a Python list as ``name``: on SQLite
    ``column IN (SELECT value FROM json_each(:name))`` with the list as one JSON text, on
    PostgreSQL ``column = ANY(:name)`` with it as one array of the column's type; an empty
    list matches no row. An expanding IN parameter renders one bind per id, a new SQL string
    for every length of list: SQLAlchemy rewrites the statement on each execution (8% of a
    scheduler tick) and the driver, whose statement cache is keyed by text, prepares it again
    (psycopg prepares a text on the server once it has run five times: never, for most
    lengths). Here the text is fixed, so all of them keep it. Both plans still look each id up
    in the column's index."""
    return InIds(column, bindparam(name, type_=IdList(column.type)))


@compiles(InIds)
def _in_ids_json(element: InIds, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    return f"{column} IN (SELECT value FROM json_each({compiler.process(element.ids, **kw)}))"


@compiles(InIds, "postgresql")
def _in_ids_array(element: InIds, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} = ANY({compiler.process(element.ids, **kw)})"


class db_clock(FunctionElement[float]):  # noqa: N801 (used as a SQL function is)
    """The database's clock, in seconds since the epoch: coordinators on several hosts judge
    each other's silence by one clock, whatever their own say."""

    type = Float()
    inherit_cache = True


@compiles(db_clock)
def _db_clock_sqlite(element: db_clock, compiler: SQLCompiler, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"  # the Julian day of the epoch


@compiles(db_clock, "postgresql")
def _db_clock_pg(element: db_clock, compiler: SQLCompiler, **kw: Any) -> str:
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


_ignoring: dict[tuple[str, str], Many] = {}


def insert_ignore(conn: Connection, table: Table, rows: Rows) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, in the dialect at hand."""
    if not rows:
        return
    key = (conn.dialect.name, table.name)
    stmt = _ignoring.get(key)
    if stmt is None:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = _ignoring[key] = Many(insert(table).on_conflict_do_nothing())
    stmt.run(conn, rows)


# Units of one job that still want a replica and that this worker may take: never a unit it
# already holds a live replica of, and (when asked) never one whose replica went to its address.
# A released replica (lost with its connection, or past its deadline) does not count: its worker
# may compute the unit again, else a small pool of workers could be shut out of a unit forever.
# PostgreSQL skips rows another coordinator is claiming right now instead of waiting on them.
_CLAIM = """
SELECT u.id FROM units u
WHERE u.job_id = :job AND u.want > 0
  AND NOT EXISTS (
    SELECT 1 FROM replicas r
    WHERE r.unit_id = u.id AND r.state <> 'released'
      AND (r.worker_id = :worker OR ({distinct} AND r.client_addr = :addr))
    {fence}
  )
ORDER BY u.id
LIMIT :n
"""
# OFFSET 0 keeps PostgreSQL from turning NOT EXISTS into an anti-join, which (the OR defeats
# every index) scans all replicas of the database for each claim: 26 ms at 20,000 replicas,
# against 0.7 ms for a look at each candidate's replicas through replicas_unit.
NO_ANTI_JOIN = "OFFSET 0"

# A bound false would fold the OR into r.worker_id = :worker, and PostgreSQL would intersect
# replicas_unit with every replica the worker ever had (replicas_worker_state), per candidate.
# A sub-select is not folded.
OPAQUE_DISTINCT = "(SELECT CAST(:distinct AS BOOLEAN))"

_CLAIM_SQLITE = text(_CLAIM.format(fence="", distinct=":distinct"))
_CLAIM_PG = text(
    _CLAIM.format(fence=NO_ANTI_JOIN, distinct=OPAQUE_DISTINCT) + " FOR UPDATE OF u SKIP LOCKED"
)


_CLAIMS = {"postgresql": One(_CLAIM_PG), "sqlite": One(_CLAIM_SQLITE)}


def in_id_order(conn: Connection, stmt: One, params: dict[str, Any]) -> list:
    """Runs a claim (NOT EXISTS, ORDER BY u.id, LIMIT) walking its index in order, stopping at
    the limit; returns the first column. A job's units arrive long before autovacuum analyzes
    them, and on statistics that guess a few rows PostgreSQL prefers a bitmap scan that looks
    at the replicas of every leasable unit of the job, then sorts them: 400 ms a claim at
    10,000 units, not 0.5 ms."""
    if conn.dialect.name != "postgresql":
        return [r[0] for r in stmt.all(conn, params)]
    conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
    try:
        return [r[0] for r in stmt.all(conn, params)]
    finally:
        conn.exec_driver_sql("RESET enable_bitmapscan")


def claim_unit_ids(
    conn: Connection, job: int, worker: str, addr: str, distinct: bool, n: int
) -> list[int]:
    params = {"job": job, "worker": worker, "addr": addr, "distinct": distinct, "n": n}
    return in_id_order(conn, _CLAIMS[conn.dialect.name], params)
