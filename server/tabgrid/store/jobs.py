"""Jobs and their units: submission, status, listing, results, cancel, retire."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection, case, delete, func, insert, or_, select, update

from tabgrid.protocol import BlobRef as BlobRefMsg
from tabgrid.protocol import (
    JobStatus,
    JobSubmit,
    Output,
    Policy,
    UnitCounts,
    UnitInfo,
    UnitWorker,
)
from tabgrid.store import uploads
from tabgrid.store.codec import dumps, loads_inputs, loads_outputs
from tabgrid.store.notify import announce, job_changed
from tabgrid.store.sql import insert_ignore
from tabgrid.store.tables import BlobUse, Job, Replica, Unit

J = Job.__table__  # type: ignore[attr-defined]
U = Unit.__table__  # type: ignore[attr-defined]
R = Replica.__table__  # type: ignore[attr-defined]
REFS = BlobUse.__table__  # type: ignore[attr-defined]

OPEN_UNIT_STATES = ("pending", "running", "validating")
FINAL_JOB_STATES = ("done", "failed", "cancelled")
# A running job with nothing in flight and no replica leased or returned for this long is
# reported as stalled (JobStatus.stalled).
STALL_AFTER_S = 60.0


def input_digests(submit: JobSubmit) -> set[str]:
    found = {ref.digest for ref in submit.inputs.values()}
    for unit in submit.units:
        found.update(ref.digest for ref in unit.inputs.values())
    return found


def find_idempotent(conn: Connection, owner_id: int | None, key: str | None) -> int | None:
    if key is None:
        return None
    q = select(J.c.id).where(J.c.owner_id == owner_id, J.c.idempotency_key == key)
    return conn.execute(q).scalar()


def create_job(conn: Connection, owner_id: int | None, submit: JobSubmit, now: float) -> int:
    policy = submit.policy
    job_id = conn.execute(
        insert(J)
        .values(
            owner_id=owner_id,
            name=submit.name,
            kernel=submit.kernel,
            params=dumps(submit.params),
            inputs=dumps(submit.inputs),
            policy=dumps(policy),
            state="running",
            priority=policy.priority,
            n_units=len(submit.units),
            open_units=len(submit.units),
            idempotency_key=submit.idempotency_key,
            created_at=now,
            updated_at=now,
        )
        .returning(J.c.id)
    ).scalar_one()
    rows = [
        {
            "job_id": job_id,
            "idx": i,
            "params": dumps(u.params),
            "inputs": dumps(u.inputs),
            "state": "pending",
            "want": policy.first_replicas,
            "updated_at": now,
        }
        for i, u in enumerate(submit.units)
    ]
    conn.execute(insert(U), rows)
    insert_ignore(conn, REFS, [{"digest": d, "job_id": job_id} for d in input_digests(submit)])
    announce(conn)
    return job_id


@dataclass(frozen=True)
class JobRow:
    id: int
    owner_id: int | None
    kernel: str
    params: dict
    inputs: dict[str, BlobRefMsg]
    policy: Policy
    state: str


def get_job(conn: Connection, job_id: int) -> JobRow | None:
    row = conn.execute(select(J).where(J.c.id == job_id)).mappings().first()
    if row is None:
        return None
    return JobRow(
        id=row["id"],
        owner_id=row["owner_id"],
        kernel=row["kernel"],
        params=msgspec.json.decode(row["params"]),
        inputs=loads_inputs(row["inputs"]),
        policy=msgspec.json.decode(row["policy"], type=Policy),
        state=row["state"],
    )


def _counts(conn: Connection, job: dict) -> UnitCounts:
    if job["state"] in FINAL_JOB_STATES and job["open_units"] == 0:
        cancelled = job["n_units"] - job["done_units"] - job["failed_units"]
        return UnitCounts(done=job["done_units"], failed=job["failed_units"], cancelled=cancelled)
    q = select(U.c.state, func.count()).where(U.c.job_id == job["id"]).group_by(U.c.state)
    return UnitCounts(**{state: n for state, n in conn.execute(q)})


def status_of(conn: Connection, job: dict, owner: str, now: float) -> JobStatus:
    counts = _counts(conn, job)
    total = job["n_units"]
    done = counts.done
    rate, eta = 0.0, None
    if job["started_at"] and done:
        end = job["finished_at"] or now
        rate = done / max(end - job["started_at"], 1e-3)
        if job["state"] == "running":
            eta = (counts.pending + counts.running + counts.validating) / rate
    return JobStatus(
        id=job["id"],
        name=job["name"],
        kernel=job["kernel"],
        owner=owner,
        state=job["state"],
        policy=msgspec.json.decode(job["policy"], type=Policy),
        units=total,
        counts=counts,
        fraction_done=(done / total) if total else 1.0,
        created_at=job["created_at"],
        updated_at=job["updated_at"],
        finished_at=job["finished_at"],
        rate=rate,
        eta_s=eta,
        stalled=_stalled(conn, job, counts, now),
        error=_first_error(conn, job["id"]) if counts.failed else None,
    )


def _first_error(conn: Connection, job_id: int) -> str | None:
    q = select(U.c.error).where(U.c.job_id == job_id, U.c.state == "failed").order_by(U.c.idx)
    return conn.execute(q.limit(1)).scalar()


def _stalled(conn: Connection, job: dict, counts: UnitCounts, now: float) -> str | None:
    """Why the job cannot progress, when nothing of it is in flight and nothing happened for
    STALL_AFTER_S: its open units wait for workers that have not computed them yet."""
    waiting = counts.pending + counts.validating
    if job["state"] != "running" or counts.running or not waiting:
        return None
    q = select(
        func.max(R.c.created_at), func.max(R.c.returned_at), func.count(R.c.worker_id.distinct())
    )
    leased, returned, workers = conn.execute(q.where(R.c.job_id == job["id"])).one()
    last = max(x for x in (leased, returned, job["created_at"]) if x is not None)
    idle = now - last
    if idle < STALL_AFTER_S or _could_take(conn, job["id"], now - STALL_AFTER_S):
        return None
    quorum = msgspec.json.decode(job["policy"], type=Policy).quorum
    return (
        f"no unit of this job was leased or returned for {idle:.0f} s: {waiting} unit(s) wait "
        f"for a worker that has not computed them yet ({workers} different worker(s) have "
        f"worked on this job; quorum {quorum} needs {quorum} different workers, each on its "
        f"own client address by default). Connect another worker, or cancel the job"
    )


MAX_ACTIVE_CHECKED = 16


def _could_take(conn: Connection, job_id: int, since: float) -> bool:
    """A worker that leased anything since ``since``, or still computes a lease (busy with
    other jobs, or with one long unit), has not yet computed one of the job's units that want
    a replica: the job is queued, not stalled."""
    busy = or_(R.c.created_at >= since, R.c.state == "leased")
    recent = select(R.c.worker_id).where(busy).distinct()
    active = [w for (w,) in conn.execute(recent.limit(MAX_ACTIVE_CHECKED + 1))]
    if len(active) > MAX_ACTIVE_CHECKED:
        return True  # a busy network: too many to check one by one, and some can surely help
    for worker in active:
        done_by = select(R.c.id).where(R.c.unit_id == U.c.id, R.c.worker_id == worker)
        free = select(U.c.id).where(U.c.job_id == job_id, U.c.want > 0, ~done_by.exists())
        if conn.execute(free.limit(1)).first() is not None:
            return True
    return False


def job_record(conn: Connection, job_id: int) -> dict | None:
    row = conn.execute(select(J).where(J.c.id == job_id)).mappings().first()
    return dict(row) if row else None


def list_jobs(conn: Connection, owner_id: int | None, state: str | None, limit: int) -> list[dict]:
    q = select(J).order_by(J.c.id.desc()).limit(limit)
    if owner_id is not None:
        q = q.where(J.c.owner_id == owner_id)
    if state is not None:
        q = q.where(J.c.state == state)
    return [dict(r) for r in conn.execute(q).mappings()]


def _waiting(state: str, results: int, inflight: int, policy: Policy) -> str | None:
    quorum = policy.quorum
    if state == "pending":
        return "waiting for a worker to lease it"
    if state == "running":
        return f"computing on {inflight} worker(s)"
    if state == "validating" and policy.error_rate is not None:
        return (
            f"{results} result(s) in; waiting for another worker's result until the agreeing "
            f"ones are credible enough (error_rate {policy.error_rate:g})"
        )
    if state == "validating":
        need = max(quorum - results, 1)
        return (
            f"{results} result(s) in; waiting for {need} more from a different worker "
            f"(quorum {quorum}: results are accepted only when independent workers agree)"
        )
    return None


def list_units(
    conn: Connection, job_id: int, policy: Policy, state: str | None, after: int, limit: int
) -> list[UnitInfo]:
    q = select(U).where(U.c.job_id == job_id, U.c.idx > after).order_by(U.c.idx).limit(limit)
    if state is not None:
        q = q.where(U.c.state == state)
    rows = list(conn.execute(q).mappings())
    workers = _replica_workers(conn, [r["id"] for r in rows])
    return [
        UnitInfo(
            index=r["idx"],
            state=r["state"],
            replicas=r["issued"],
            results=r["results"],
            outputs=loads_outputs(r["outputs"]) if r["outputs"] else None,
            error=r["error"],
            waiting=_waiting(r["state"], r["results"], r["inflight"], policy),
            workers=workers.get(r["id"], []),
            accepted_by=r["accepted_by"],
            credibility=r["credibility"],
            revision=r["revision"],
        )
        for r in rows
    ]


def _replica_workers(conn: Connection, unit_ids: list[int]) -> dict[int, list[UnitWorker]]:
    """Each unit's replicas, oldest first: the worker (its id, as the console shows it) and
    the replica's state; 'valid' ones agreed with the accepted result."""
    found: dict[int, list[UnitWorker]] = {}
    cols = (R.c.unit_id, R.c.worker_id, R.c.state, R.c.error, R.c.elapsed_ms, R.c.spot_check)
    for chunk in _chunks(unit_ids, 500):
        q = select(*cols).where(R.c.unit_id.in_(chunk)).order_by(R.c.id)
        for unit_id, worker, state, error, elapsed, spot in conn.execute(q):
            found.setdefault(unit_id, []).append(
                UnitWorker(worker, state, error, elapsed, bool(spot))
            )
    return found


def retry_failed(conn: Connection, job_id: int, quorum: int, now: float) -> int:
    """Puts an ended job's failed units back (pending, or validating where results are in)
    with a fresh replica budget (issued
    counts from 0 again) and the job back to running; returns how many units went back.

    The workers whose replicas ended in an error may take the unit again (those replicas
    become 'released', keeping their error); results already returned still count towards
    the quorum, and workers that returned one are not given the unit twice.
    """
    failed = [
        uid
        for (uid,) in conn.execute(
            select(U.c.id)
            .where(U.c.job_id == job_id, U.c.state == "failed")
            .order_by(U.c.id)
            .with_for_update()
        )
    ]
    if not failed:
        return 0
    for chunk in _chunks(failed, 500):
        conn.execute(
            update(R).where(R.c.unit_id.in_(chunk), R.c.state == "error").values(state="released")
        )
        conn.execute(
            update(U)
            .where(U.c.id.in_(chunk))
            .values(
                # As UnitRow.derive_state has it: results already in mean 'validating'.
                state=case((U.c.results > 0, "validating"), else_="pending"),
                # At least one new replica; as many as the quorum still lacks.
                want=func.max(quorum - U.c.results, 1)
                if conn.dialect.name == "sqlite"
                else func.greatest(quorum - U.c.results, 1),
                issued=0,
                inflight=0,
                error=None,
                updated_at=now,
            )
        )
    conn.execute(
        update(J)
        .where(J.c.id == job_id)
        .values(
            state="running",
            open_units=J.c.open_units + len(failed),
            failed_units=J.c.failed_units - len(failed),
            finished_at=None,
            updated_at=now,
        )
    )
    announce(conn)
    return len(failed)


def summary_rows(conn: Connection, job_id: int) -> dict[str, Any]:
    """What a job's summary is made of: replica tallies, reported GPU time, and the params and
    inputs of each unit with its count of valid replicas (for GFLOP and credit)."""
    tally = conn.execute(
        select(R.c.state, func.count(), func.sum(R.c.elapsed_ms))
        .where(R.c.job_id == job_id)
        .group_by(R.c.state)
    ).all()
    workers, errors = conn.execute(
        select(
            func.count(func.distinct(R.c.worker_id)),
            func.count(R.c.error),  # errors stay counted after a retry releases their replicas
        ).where(R.c.job_id == job_id)
    ).one()
    valid = (
        select(R.c.unit_id, func.count().label("n"))
        .where(R.c.job_id == job_id, R.c.state == "valid")
        .group_by(R.c.unit_id)
        .subquery()
    )
    units = conn.execute(
        select(U.c.params, U.c.inputs, U.c.state, func.coalesce(valid.c.n, 0))
        .select_from(U.outerjoin(valid, valid.c.unit_id == U.c.id))
        .where(U.c.job_id == job_id)
    ).all()
    return {
        "by_state": {state: (n, ms or 0.0) for state, n, ms in tally},
        "workers": workers,
        "errors": errors,
        "units": [tuple(u) for u in units],
    }


def done_outputs(
    conn: Connection, job_id: int, after: int, limit: int
) -> list[tuple[int, dict[str, Output], int]]:
    """(index, outputs, revision) of the job's done units after ``after``, in index order."""
    q = (
        select(U.c.idx, U.c.outputs, U.c.revision)
        .where(U.c.job_id == job_id, U.c.state == "done", U.c.idx > after)
        .order_by(U.c.idx)
        .limit(limit)
    )
    return [(idx, loads_outputs(out), rev) for idx, out, rev in conn.execute(q)]


def cancel_job(conn: Connection, job_id: int, now: float) -> list[tuple[int, str]]:
    """Cancels the job's open units; returns the (lease, worker) pairs to call back."""
    # Locks in the order the result and release paths take them (replicas, then units, each
    # by id), so a cancel racing a scheduler tick on PostgreSQL waits instead of deadlocking.
    leased = [
        (rid, wid)
        for rid, wid in conn.execute(
            select(R.c.id, R.c.worker_id)
            .where(R.c.job_id == job_id, R.c.state == "leased")
            .order_by(R.c.id)
            .with_for_update()
        )
    ]
    conn.execute(
        select(U.c.id)
        .where(U.c.job_id == job_id, U.c.state.in_(OPEN_UNIT_STATES))
        .order_by(U.c.id)
        .with_for_update()
    ).all()
    conn.execute(
        update(R).where(R.c.job_id == job_id, R.c.state == "leased").values(state="released")
    )
    conn.execute(
        update(U)
        .where(U.c.job_id == job_id, U.c.state.in_(OPEN_UNIT_STATES))
        .values(state="cancelled", want=0, inflight=0, updated_at=now)
    )
    conn.execute(
        update(J)
        .where(J.c.id == job_id, J.c.state.not_in(FINAL_JOB_STATES))
        .values(state="cancelled", open_units=0, updated_at=now, finished_at=now)
    )
    job_changed(conn, job_id, "cancelled")  # other coordinators call back their workers' leases
    return leased


def stale_leases(conn: Connection, lease_ids: list[int]) -> dict[int, str]:
    """Of these leases (held by a coordinator's workers), those of a job cancelled, deleted or
    failed since, with why: the coordinator calls them back."""
    stale: dict[int, str] = {}
    for chunk in _chunks(lease_ids, 500):
        q = select(R.c.id, J.c.state).select_from(R.outerjoin(J, J.c.id == R.c.job_id))
        found = {lease: state for lease, state in conn.execute(q.where(R.c.id.in_(chunk)))}
        for lease in chunk:
            state = found.get(lease)
            if lease not in found or state is None:
                stale[lease] = "job deleted"
            elif state == "cancelled":
                stale[lease] = "job cancelled"
            elif state == "failed":
                stale[lease] = "job failed"
    return stale


def retire_job(conn: Connection, job_id: int) -> list[str]:
    """Deletes the job and returns the digests of blobs nothing holds any more: no other job
    uses them and no live upload claims them (an upload by another submitter keeps its blob
    until it expires or is used; see store/uploads.py)."""
    digests = [d for (d,) in conn.execute(select(REFS.c.digest).where(REFS.c.job_id == job_id))]
    uploads.release_job(conn, job_id, digests)  # the uploads this job used, while it is there
    conn.execute(delete(REFS).where(REFS.c.job_id == job_id))
    still_used = _still_used(conn, digests) | uploads.claimed(conn, digests, time.time())
    conn.execute(delete(R).where(R.c.job_id == job_id))
    conn.execute(delete(U).where(U.c.job_id == job_id))
    conn.execute(delete(J).where(J.c.id == job_id))
    from tabgrid.store.tables import Blob

    free = [d for d in digests if d not in still_used]
    B = Blob.__table__  # type: ignore[attr-defined]
    for chunk in _chunks(free, 500):
        conn.execute(delete(B).where(B.c.digest.in_(chunk)))
    job_changed(conn, job_id, "deleted")
    return free


def _still_used(conn: Connection, digests: list[str]) -> set[str]:
    used: set[str] = set()
    for chunk in _chunks(digests, 500):
        used.update(
            d for (d,) in conn.execute(select(REFS.c.digest).where(REFS.c.digest.in_(chunk)))
        )
    return used


def _chunks[T](items: list[T], size: int) -> Iterable[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def figures_by_state(conn: Connection) -> list[tuple[str, int, int | None, int | None]]:
    """(state, jobs, units, done units) for each job state: counts that name no job."""
    q = select(J.c.state, func.count(), func.sum(J.c.n_units), func.sum(J.c.done_units))
    return [tuple(r) for r in conn.execute(q.group_by(J.c.state))]  # type: ignore[misc]


def picture_job(conn: Connection, job_id: int) -> Any:
    """owner_id, kernel, params and n_units of a job, or None."""
    q = select(J.c.owner_id, J.c.kernel, J.c.params, J.c.n_units).where(J.c.id == job_id)
    return conn.execute(q).first()


def unit_outputs(conn: Connection, job_id: int) -> list[tuple[str, str, str | None]]:
    """(params, state, outputs) of each unit of a job, by index."""
    q = select(U.c.params, U.c.state, U.c.outputs).where(U.c.job_id == job_id).order_by(U.c.idx)
    return [tuple(r) for r in conn.execute(q)]  # type: ignore[misc]
