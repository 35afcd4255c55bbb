"""The statements of the result path: the replicas results name, the results a unit's verdict
reads, verdicts and returned results written in bulk. Policy lives in coordinator.recording
and .verdicts."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import Connection, Float, bindparam, select, text, update

from tabgrid.store.sql import Many, One, in_ids, insert_ignore
from tabgrid.store.tables import BlobUse, Replica

R = Replica.__table__  # type: ignore[attr-defined]
REFS = BlobUse.__table__  # type: ignore[attr-defined]


class Held(NamedTuple):
    """A replica a result names, as the result path reads it."""

    id: int
    unit_id: int
    job_id: int
    worker_id: str
    state: str
    spot_check: bool
    client_addr: str
    returned_at: float | None  # set once its result came, whatever became of the lease after


class Returned(NamedTuple):
    """A result stored for a unit, in return order."""

    unit_id: int
    id: int
    worker_id: str
    state: str
    outputs: str | None
    returned_at: float | None
    client_addr: str
    spot_check: bool


# The hot statements are built once: building and cache-keying a statement costs more than
# running it. Their id lists are one bound parameter (sql.in_ids): the SQL text stays the same
# whatever the count, so neither SQLAlchemy nor the driver works it out again per execution.
_LEASES = One(
    select(
        R.c.id,
        R.c.unit_id,
        R.c.job_id,
        R.c.worker_id,
        R.c.state,
        R.c.spot_check,
        R.c.client_addr,
        R.c.returned_at,
    )
    .where(in_ids(R.c.id))
    .order_by(R.c.id)
    .with_for_update()
)
_LIVE = One(select(R.c.unit_id, R.c.worker_id).where(in_ids(R.c.unit_id), R.c.state != "released"))
# A unit's stored results, found through its replicas (replicas_unit): the state is wrapped
# in an expression no index covers, else PostgreSQL, on statistics that do not know the
# tick's units yet, walks replicas_worker_state over every result of the database instead.
# Filtered here, not in Python: most replicas a tick's units have are still leased, or are the
# tick's own results (not written yet), and each row fetched costs more than the filter.
_STORED_ONLY = text("(replicas.state || '') IN ('returned', 'valid')")
_DECIDING = One(
    select(
        R.c.unit_id,
        R.c.id,
        R.c.worker_id,
        R.c.state,
        R.c.outputs,
        R.c.returned_at,
        R.c.client_addr,
        R.c.spot_check,
    ).where(in_ids(R.c.unit_id), _STORED_ONLY)
)
_JUDGE = One(update(R).where(in_ids(R.c.id)).values(state=bindparam("state")))
_SAVE = Many(
    update(R)
    .where(R.c.id == bindparam("b_id"))
    .values(
        state=bindparam("state"),
        outputs=bindparam("outputs"),
        error=bindparam("error"),
        elapsed_ms=bindparam("elapsed_ms"),
        returned_at=bindparam("returned_at", type_=Float),
    )
)


def held(conn: Connection, lease_ids: list[int]) -> dict[int, Held]:
    """The replicas these leases name, locked for this transaction."""
    return {r[0]: Held._make(r) for r in _LEASES.all(conn, {"ids": lease_ids})}


def live_pairs(conn: Connection, released: list[Held]) -> set[tuple[int, str]]:
    """(unit, worker) pairs among these where the worker holds another, unreleased replica."""
    if not released:
        return set()
    units = list({r.unit_id for r in released})
    return {(u, w) for u, w in _LIVE.all(conn, {"ids": units})}


def deciding(conn: Connection, unit_ids: list[int]) -> list[Returned]:
    """The stored results (returned or valid) of these units, in no order: Batch.load orders
    them with the batch's own (an ORDER BY here sorted every row of the tick once more)."""
    if not unit_ids:
        return []
    return [Returned._make(r) for r in _DECIDING.all(conn, {"ids": unit_ids})]


def judge(conn: Connection, replica_ids: list[int], state: str) -> None:
    if replica_ids:
        _JUDGE.run(conn, {"ids": replica_ids, "state": state})


def save_replicas(conn: Connection, rows: list[dict], now: float) -> None:
    """Each replica of a batch, written once: {b_id, state, outputs, error, elapsed_ms} and
    perhaps returned_at (else ``now``)."""
    _SAVE.run(conn, [row if "returned_at" in row else row | {"returned_at": now} for row in rows])


def reference_outputs(conn: Connection, refs: set[tuple[str, int]]) -> None:
    """Output blobs belong to their job too, so retiring the job frees them."""
    insert_ignore(conn, REFS, [{"digest": d, "job_id": j} for d, j in refs])
