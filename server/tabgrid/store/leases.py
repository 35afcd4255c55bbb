"""Leases: claiming units for a worker, releasing them on disconnect or expiry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
from sqlalchemy import Connection, and_, bindparam, case, insert, select, text, update

from tabgrid.protocol import BlobRef, Policy
from tabgrid.store.codec import loads, loads_inputs
from tabgrid.store.sql import claim_unit_ids
from tabgrid.store.tables import Job, Replica, Unit
from tabgrid.store.units import FINAL, UnitRow

J = Job.__table__  # type: ignore[attr-defined]
U = Unit.__table__  # type: ignore[attr-defined]
R = Replica.__table__  # type: ignore[attr-defined]

_policy = msgspec.json.Decoder(Policy)


@dataclass(frozen=True)
class Claimed:
    lease: int
    job: int
    unit: int
    index: int
    params: dict
    inputs: dict[str, BlobRef]
    deadline: float


def claim(
    conn: Connection, worker: str, addr: str, n: int, distinct: bool, now: float
) -> list[Claimed]:
    """Leases up to n units to one worker, highest priority job first."""
    out: list[Claimed] = []
    jobs = conn.execute(
        select(J.c.id, J.c.policy, J.c.started_at)
        .where(J.c.state == "running", J.c.open_units > 0)
        .order_by(J.c.priority.desc(), J.c.id)
    ).all()
    for job_id, policy_text, started in jobs:
        if len(out) >= n:
            break
        ids = claim_unit_ids(conn, job_id, worker, addr, distinct, n - len(out))
        if ids:
            deadline = now + _policy.decode(policy_text).deadline_s
            out += _lease(conn, job_id, ids, worker, addr, deadline, now)
            if started is None:
                conn.execute(update(J).where(J.c.id == job_id).values(started_at=now))
    return out


def _lease(
    conn: Connection,
    job_id: int,
    ids: list[int],
    worker: str,
    addr: str,
    deadline: float,
    now: float,
) -> list[Claimed]:
    conn.execute(
        update(U)
        .where(U.c.id.in_(ids))
        .values(
            want=U.c.want - 1,
            issued=U.c.issued + 1,
            inflight=U.c.inflight + 1,
            state="running",
            updated_at=now,
        )
    )
    rows = [
        {
            "unit_id": uid,
            "job_id": job_id,
            "worker_id": worker,
            "client_addr": addr,
            "state": "leased",
            "deadline": deadline,
            "created_at": now,
        }
        for uid in ids
    ]
    leases = conn.execute(
        insert(R).returning(R.c.id, R.c.unit_id, sort_by_parameter_order=True), rows
    ).all()
    units = {
        r[0]: r
        for r in conn.execute(
            select(U.c.id, U.c.idx, U.c.params, U.c.inputs).where(U.c.id.in_(ids))
        )
    }
    return [
        Claimed(
            lease=lid,
            job=job_id,
            unit=uid,
            index=units[uid][1],
            params=loads(units[uid][2]),
            inputs=loads_inputs(units[uid][3]),
            deadline=deadline,
        )
        for lid, uid in leases
    ]


def release_worker(conn: Connection, worker: str, now: float) -> int:
    """Releases every lease a worker holds (it disconnected); returns how many."""
    return _release(conn, and_(R.c.worker_id == worker, R.c.state == "leased"), now)


def release_leases(conn: Connection, lease_ids: list[int], now: float) -> int:
    return _release(conn, and_(R.c.id.in_(lease_ids), R.c.state == "leased"), now)


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


def _release(conn: Connection, where, now: float) -> int:  # type: ignore[no-untyped-def]
    # Row locks (PostgreSQL; SQLite serializes writers anyway) taken replicas first, then
    # units, each in id order, the same as the result path: no lost update, no deadlock.
    q = select(R.c.id, R.c.unit_id).where(where).order_by(R.c.id).with_for_update()
    freed = conn.execute(q).all()
    if not freed:
        return 0
    ids = [r[0] for r in freed]
    for chunk in _chunks(ids):
        conn.execute(update(R).where(R.c.id.in_(chunk)).values(state="released"))
    per_unit: dict[int, int] = {}
    for _, uid in freed:
        per_unit[uid] = per_unit.get(uid, 0) + 1
    units = load_units(conn, list(per_unit))
    policies = job_policies(conn, {u.job_id for u in units})
    for u in units:
        if u.final:
            continue
        u.inflight = max(0, u.inflight - per_unit[u.id])
        for _ in range(per_unit[u.id]):
            u.replace_replica(policies[u.job_id])
        u.fail_if_stuck(
            "every replica was lost (worker gone or deadline passed) and max_replicas is reached"
        )
        u.derive_state()
    save_units(conn, units, now)
    return len(ids)


def load_units(conn: Connection, ids: Iterable[int]) -> list[UnitRow]:
    cols = [
        U.c[name] for name in UnitRow.__dataclass_fields__ if name not in ("id", "loaded_state")
    ]
    out: list[UnitRow] = []
    for chunk in _chunks(sorted(ids)):
        q = select(U.c.id, *cols).where(U.c.id.in_(chunk)).order_by(U.c.id).with_for_update()
        out += [UnitRow(**r) for r in conn.execute(q).mappings()]
    return out


def save_units(conn: Connection, units: list[UnitRow], now: float) -> None:
    """Writes the units back, and folds the ones that just ended into their job's counters."""
    if not units:
        return
    stmt = (
        update(U)
        .where(U.c.id == bindparam("b_id"))
        .values({k: bindparam(k) for k in units[0].values(now)})
    )
    conn.execute(stmt, [{"b_id": u.id, **u.values(now)} for u in units])
    ended: dict[int, list[int]] = {}
    for u in units:
        if u.state in ("done", "failed") and u.loaded_state not in FINAL:
            ended.setdefault(u.job_id, [0, 0])[0 if u.state == "done" else 1] += 1
    for job_id, (done, failed) in ended.items():
        _finish_units(conn, job_id, done, failed, now)


def _finish_units(conn: Connection, job_id: int, done: int, failed: int, now: float) -> None:
    conn.execute(
        update(J)
        .where(J.c.id == job_id)
        .values(
            open_units=J.c.open_units - done - failed,
            done_units=J.c.done_units + done,
            failed_units=J.c.failed_units + failed,
            updated_at=now,
        )
    )
    conn.execute(
        update(J)
        .where(J.c.id == job_id, J.c.open_units <= 0, J.c.state.in_(("running", "paused")))
        .values(state=case((J.c.failed_units > 0, "failed"), else_="done"), finished_at=now)
    )


def job_policies(conn: Connection, job_ids: Iterable[int]) -> dict[int, Policy]:
    ids = list(job_ids)
    rows = conn.execute(select(J.c.id, J.c.policy).where(J.c.id.in_(ids))).all()
    return {jid: _policy.decode(p) for jid, p in rows}


def _chunks[T](items: list[T], size: int = 500) -> Iterable[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
