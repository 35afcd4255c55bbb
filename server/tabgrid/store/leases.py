"""Leases: claiming units for a worker, releasing them on disconnect or expiry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
from sqlalchemy import (
    Connection,
    Float,
    Insert,
    String,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)

from tabgrid.protocol import BlobRef, Policy
from tabgrid.store.codec import loads, loads_inputs
from tabgrid.store.notify import announce
from tabgrid.store.sql import Many, One, claim_unit_ids, in_ids
from tabgrid.store.tables import Job, Replica, Unit
from tabgrid.store.units import FINAL, UnitRow

J = Job.__table__  # type: ignore[attr-defined]
U = Unit.__table__  # type: ignore[attr-defined]
R = Replica.__table__  # type: ignore[attr-defined]

_policy = msgspec.json.Decoder(Policy)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much
class Claimed:
    lease: int
    job: int
    unit: int
    index: int
    # The unit's own params and inputs as stored (JSON text, valid since submission): the
    # lease message carries them as they are, not decoded here and encoded again.
    params_json: str
    inputs_json: str
    deadline: float

    @property
    def params(self) -> dict:
        return loads(self.params_json)

    @property
    def inputs(self) -> dict[str, BlobRef]:
        return loads_inputs(self.inputs_json)


# The hot statements are built once: building and cache-keying a statement costs more than
# running it. Their id lists are one bound parameter (sql.in_ids): the SQL text stays the same
# whatever the count, so neither SQLAlchemy nor the driver works it out again per execution.
_JOBS = One(
    select(J.c.id, J.c.policy, J.c.started_at)
    .where(J.c.state == "running", J.c.open_units > 0)
    .order_by(J.c.priority.desc(), J.c.id)
)
_ISSUE = One(
    update(U)
    .where(in_ids(U.c.id))
    .values(
        want=U.c.want - 1,
        issued=U.c.issued + 1,
        inflight=U.c.inflight + 1,
        state="running",
        updated_at=bindparam("now", type_=Float),
    )
    .returning(U.c.id, U.c.idx, U.c.params, U.c.inputs)
)


def replicate(spot_check: bool) -> Insert:
    """One INSERT ... SELECT that makes every replica of a claim, whatever the count: units
    ``ids`` leased to ``worker`` at ``addr`` by ``coordinator`` until ``deadline``."""
    columns = [
        "unit_id",
        "job_id",
        "worker_id",
        "client_addr",
        "coordinator",
        "state",
        "deadline",
        "created_at",
        "spot_check",
    ]
    values = [
        U.c.id,
        U.c.job_id,
        bindparam("worker", type_=String),
        bindparam("addr", type_=String),
        bindparam("coordinator", type_=String),
        literal("leased", String),
        bindparam("deadline", type_=Float),
        bindparam("now", type_=Float),
        literal(spot_check),
    ]
    units = select(*values).where(in_ids(U.c.id)).order_by(U.c.id)
    return insert(R).from_select(columns, units).returning(R.c.id, R.c.unit_id)


_REPLICATE = One(replicate(spot_check=False))
_START = (
    update(J).where(J.c.id == bindparam("job")).values(started_at=bindparam("now", type_=Float))
)


@dataclass(frozen=True)
class Taker:
    """Who takes leases: the worker, its client address, the coordinator that serves it."""

    worker: str
    addr: str
    coordinator: str


def claim(conn: Connection, taker: Taker, n: int, distinct: bool, now: float) -> list[Claimed]:
    """Leases up to n units to one worker, highest priority job first."""
    worker, addr = taker.worker, taker.addr
    out: list[Claimed] = []
    for job_id, policy_text, started in _JOBS.all(conn):
        if len(out) >= n:
            break
        ids = claim_unit_ids(conn, job_id, worker, addr, distinct, n - len(out))
        if ids:
            deadline = now + _policy.decode(policy_text).deadline_s
            out += _lease(conn, job_id, ids, taker, deadline, now)
            if started is None:
                conn.execute(_START, {"job": job_id, "now": now})
    return out


def _lease(
    conn: Connection, job_id: int, ids: list[int], taker: Taker, deadline: float, now: float
) -> list[Claimed]:
    units = {r[0]: r for r in _ISSUE.all(conn, {"ids": ids, "now": now})}
    params = {
        "ids": ids,
        "worker": taker.worker,
        "addr": taker.addr,
        "coordinator": taker.coordinator,
        "deadline": deadline,
        "now": now,
    }
    leases = sorted((r[0], r[1]) for r in _REPLICATE.all(conn, params))
    return claimed(job_id, leases, units, deadline)


def claimed(
    job_id: int, leases: list[tuple[int, int]], units: dict[int, tuple], deadline: float
) -> list[Claimed]:
    """Leases as the scheduler sends them: (lease, unit) pairs, with each unit's row of
    (id, idx, params, inputs)."""
    return [
        Claimed(
            lease=lid,
            job=job_id,
            unit=uid,
            index=units[uid][1],
            params_json=units[uid][2],
            inputs_json=units[uid][3],
            deadline=deadline,
        )
        for lid, uid in leases
    ]


def release_worker(
    conn: Connection,
    worker: str,
    now: float,
    coordinator: str | None = None,
    ended: Ended | None = None,
) -> int:
    """Releases the leases a worker holds, those one coordinator gave it (it disconnected
    from that one: it may be connected to another already) or all (it is banned); returns
    how many. Units that fail for it go to ``ended`` when given (save_units)."""
    where = and_(R.c.worker_id == worker, R.c.state == "leased")
    if coordinator is not None:
        where = and_(where, R.c.coordinator == coordinator)
    return _release(conn, where, now, ended)


def expire(conn: Connection, now: float) -> int:
    """Releases leases whose deadline passed."""
    # The literal (not a bound parameter) lets SQLite use the partial index on live leases.
    return _release(conn, and_(text("replicas.state = 'leased'"), R.c.deadline < now), now)


def shorten_deadlines(conn: Connection, deadline: float) -> int:
    """After a restart no worker is connected yet: leases get a short grace to be reclaimed by
    their reconnecting workers (who still compute them), then the sweeper releases them."""
    res = conn.execute(
        update(R).where(R.c.state == "leased", R.c.deadline > deadline).values(deadline=deadline)
    )
    return res.rowcount


def _release(conn: Connection, where, now: float, ended: Ended | None = None) -> int:  # type: ignore[no-untyped-def]
    reason = "every replica was lost (worker gone or deadline passed) and max_replicas is reached"
    n = replace_replicas(conn, where, "released", "inflight", reason, now, ended)
    if n:
        announce(conn)
    return n


def replace_replicas(  # type: ignore[no-untyped-def]
    conn: Connection,
    where,
    state: str,
    counter: str,
    reason: str,
    now: float,
    ended: Ended | None = None,
) -> int:
    """Marks the replicas matching ``where`` as ``state``, takes them off each unit's
    ``counter`` (inflight or results) and asks for as many new replicas as the policy allows;
    a unit that can get none fails with ``reason``, folded into its job at once or, given
    ``ended``, there (save_units). Returns how many replicas it marked."""
    # Row locks (PostgreSQL; SQLite serializes writers anyway) taken replicas first, then
    # units, each in id order, the same as the result path: no lost update, no deadlock.
    q = select(R.c.id, R.c.unit_id).where(where).order_by(R.c.id).with_for_update()
    rows = conn.execute(q).all()
    if not rows:
        return 0
    for chunk in _chunks([r[0] for r in rows]):
        conn.execute(update(R).where(R.c.id.in_(chunk)).values(state=state))
    per_unit: dict[int, int] = {}
    for _, uid in rows:
        per_unit[uid] = per_unit.get(uid, 0) + 1
    units = load_units(conn, list(per_unit))
    policies = job_policies(conn, {u.job_id for u in units})
    for u in units:
        if u.final:
            continue
        setattr(u, counter, max(0, getattr(u, counter) - per_unit[u.id]))
        for _ in range(per_unit[u.id]):
            u.replace_replica(policies[u.job_id])
        u.fail_if_stuck(reason)
        u.derive_state()
    save_units(conn, units, now, ended)
    return len(rows)


_FIXED = ("id", "job_id", "idx", "loaded_state")  # what UnitRow.values never writes
_UNIT_COLS = [U.c[name] for name in UnitRow.__dataclass_fields__ if name != "loaded_state"]
_LOAD = One(select(*_UNIT_COLS).where(in_ids(U.c.id)).order_by(U.c.id).with_for_update())
_LOAD_SPECS = One(
    select(*_UNIT_COLS, U.c.params, U.c.inputs)
    .where(in_ids(U.c.id))
    .order_by(U.c.id)
    .with_for_update()
)
_N_UNIT_COLS = len(_UNIT_COLS)
_SAVED = [*(name for name in UnitRow.__dataclass_fields__ if name not in _FIXED), "updated_at"]
_SAVE = Many(update(U).where(U.c.id == bindparam("b_id")).values({k: bindparam(k) for k in _SAVED}))
_FINISH = One(
    update(J)
    .where(J.c.id == bindparam("job"))
    .values(
        open_units=J.c.open_units - bindparam("ended"),
        done_units=J.c.done_units + bindparam("done"),
        failed_units=J.c.failed_units + bindparam("failed"),
        updated_at=bindparam("now", type_=Float),
    )
)
# Backtracking took back accepted units: a finished job runs again until they are decided.
_REOPEN = (
    update(J)
    .where(J.c.id == bindparam("job"))
    .values(
        open_units=J.c.open_units + bindparam("n"),
        done_units=J.c.done_units - bindparam("n"),
        state=case((J.c.state.in_(("done", "failed")), "running"), else_=J.c.state),
        finished_at=case((J.c.state.in_(("done", "failed")), None), else_=J.c.finished_at),
        updated_at=bindparam("now", type_=Float),
    )
)
_CLOSE = One(
    update(J)
    .where(
        J.c.id == bindparam("job"),
        J.c.open_units <= 0,
        or_(J.c.state == "running", J.c.state == "paused"),  # One: no expanding IN
    )
    .values(
        state=case((J.c.failed_units > 0, "failed"), else_="done"),
        finished_at=bindparam("now", type_=Float),
    )
)


def load_units(conn: Connection, ids: Iterable[int]) -> list[UnitRow]:
    return [UnitRow(*r) for r in _LOAD.all(conn, {"ids": list(ids)})]


def load_units_and_specs(
    conn: Connection, ids: Iterable[int]
) -> tuple[list[UnitRow], dict[int, tuple[str, str]]]:
    """The units, locked, and each one's own params and inputs (JSON text) beside them."""
    out: list[UnitRow] = []
    specs: dict[int, tuple[str, str]] = {}
    n = _N_UNIT_COLS
    for r in _LOAD_SPECS.all(conn, {"ids": list(ids)}):
        out.append(UnitRow(*r[:n]))
        specs[r[0]] = (r[n], r[n + 1])
    return out, specs


# Units that just ended, by job: [done, failed].
Ended = dict[int, list[int]]


def add_ended(into: Ended, more: Ended) -> None:
    for job, (done, failed) in more.items():
        mine = into.setdefault(job, [0, 0])
        mine[0] += done
        mine[1] += failed


def save_units(
    conn: Connection, units: list[UnitRow], now: float, ended: Ended | None = None
) -> None:
    """Writes the units back, and folds the ones that just ended into their job's counters; or,
    given ``ended``, adds them there for the caller to fold in just before it commits
    (finish_jobs): on PostgreSQL the job's row is then locked for the commit alone, not for
    the rest of a tick, which every coordinator's ticks on that job would queue behind."""
    if not units:
        return
    _SAVE.run(conn, [u.values(now, b_id=u.id) for u in units])
    deferred = ended is not None
    ended = ended if ended is not None else {}
    reopened: dict[int, int] = {}
    for u in units:
        if u.state in ("done", "failed") and u.loaded_state not in FINAL:
            ended.setdefault(u.job_id, [0, 0])[0 if u.state == "done" else 1] += 1
        elif u.loaded_state == "done" and not u.final:
            reopened[u.job_id] = reopened.get(u.job_id, 0) + 1
    for job_id, n in reopened.items():
        conn.execute(_REOPEN, {"job": job_id, "n": n, "now": now})
    if not deferred:
        finish_jobs(conn, ended, now)


def finish_jobs(conn: Connection, ended: Ended, now: float) -> None:
    """Folds the units that ended into their jobs' counters, in job order (as every
    transaction locks them: no deadlock)."""
    for job_id in sorted(ended):
        done, failed = ended[job_id]
        if done or failed:
            finish_units(conn, job_id, done, failed, now)


def finish_units(conn: Connection, job_id: int, done: int, failed: int, now: float) -> None:
    """Folds units that just ended into their job's counters; closes the job when none is open."""
    params = {"job": job_id, "ended": done + failed, "done": done, "failed": failed, "now": now}
    _FINISH.run(conn, params)
    _CLOSE.run(conn, {"job": job_id, "now": now})


def job_policies(conn: Connection, job_ids: Iterable[int]) -> dict[int, Policy]:
    ids = list(job_ids)
    rows = conn.execute(select(J.c.id, J.c.policy).where(J.c.id.in_(ids))).all()
    return {jid: _policy.decode(p) for jid, p in rows}


def _chunks[T](items: list[T], size: int = 500) -> Iterable[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def waiting(conn: Connection) -> int:
    """Units of running jobs that still want a replica."""
    return conn.execute(
        select(func.count())
        .select_from(U.join(J, U.c.job_id == J.c.id))
        .where(J.c.state == "running", text("units.want > 0"))  # literal: the partial index
    ).scalar_one()
