"""The statements of trust: workers' evidence, spot-check leases, and backtracking (taking back
every result of a caught saboteur). Policy lives in coordinator.verdicts, .recording and
.credibility."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from sqlalchemy import Connection, bindparam, case, func, select, text, update

from tabgrid.protocol import Policy
from tabgrid.store.leases import Claimed, Taker, claimed, replicate
from tabgrid.store.sql import NO_ANTI_JOIN, OPAQUE_DISTINCT, One, in_id_order, in_ids
from tabgrid.store.tables import Job, Replica, Unit, Worker

U = Unit.__table__  # type: ignore[attr-defined]
R = Replica.__table__  # type: ignore[attr-defined]
W = Worker.__table__  # type: ignore[attr-defined]
J = Job.__table__  # type: ignore[attr-defined]

# Accepted on grounds that do not rest on a worker's word alone: usable as known answers.
KNOWN = ("reference", "verifier", "credibility")


@dataclass(frozen=True)
class Evidence:
    checks: int  # spot-checks passed
    streak: int  # results another worker confirmed, since the last failure

    @property
    def k(self) -> int:
        return self.checks + self.streak


_EVIDENCE = One(select(W.c.id, W.c.checks_passed, W.c.consecutive_valid).where(in_ids(W.c.id)))


def evidence(conn: Connection, worker_ids: list[str]) -> dict[str, Evidence]:
    rows = _EVIDENCE.all(conn, {"ids": worker_ids})
    return {wid: Evidence(c, s) for wid, c, s in rows}


# Done units of the job with a known answer that this worker (or its address) never had: a
# spot-check looks like any other unit of the job. The walk starts at a random id.
_KNOWN_UNITS = """
SELECT u.id FROM units u
WHERE u.job_id = :job AND u.state = 'done' AND u.accepted_by IN ('reference', 'verifier',
      'credibility') AND u.id >= :start
  AND NOT EXISTS (
    SELECT 1 FROM replicas r
    WHERE r.unit_id = u.id AND (r.worker_id = :worker OR ({distinct} AND r.client_addr = :addr))
    {fence}
  )
ORDER BY u.id
LIMIT :n
"""
_KNOWN_SQLITE = text(_KNOWN_UNITS.format(fence="", distinct=":distinct"))
# sql.NO_ANTI_JOIN, sql.OPAQUE_DISTINCT and sql.in_id_order: why
_KNOWN_PG = text(_KNOWN_UNITS.format(fence=NO_ANTI_JOIN, distinct=OPAQUE_DISTINCT))
_KNOWN = {"postgresql": One(_KNOWN_PG), "sqlite": One(_KNOWN_SQLITE)}
_ID_RANGE = select(func.min(U.c.id), func.max(U.c.id)).where(U.c.job_id == bindparam("job"))
_CHECK_REPLICAS = replicate(spot_check=True)
_UNIT_SPECS = select(U.c.id, U.c.idx, U.c.params, U.c.inputs).where(in_ids(U.c.id))


def known_units(conn: Connection, job_id: int) -> int:
    q = select(func.count()).where(
        U.c.job_id == job_id, U.c.state == "done", U.c.accepted_by.in_(KNOWN)
    )
    return conn.execute(q).scalar_one()


def unit_id_range(conn: Connection, job_id: int) -> tuple[int, int] | None:
    """The first and last unit id of the job (a job's units never change: callers keep it)."""
    lo, hi = conn.execute(_ID_RANGE, {"job": job_id}).one()
    return None if lo is None else (lo, hi)


def claim_checks(
    conn: Connection,
    job_id: int,
    span: tuple[int, int],
    taker: Taker,
    n: int,
    distinct: bool,
    deadline: float,
    now: float,
    start_fraction: float,
) -> list[Claimed]:
    """Leases up to n spot-checks of the job (units ``span``, from unit_id_range) to the
    worker, from a random place in the job."""
    lo, hi = span
    worker, addr = taker.worker, taker.addr
    start = lo + int((hi - lo) * start_fraction)
    params = {"job": job_id, "worker": worker, "addr": addr, "distinct": distinct, "n": n}
    known = _KNOWN[conn.dialect.name]
    ids = in_id_order(conn, known, params | {"start": start})
    if len(ids) < n and start > lo:
        more = in_id_order(conn, known, params | {"start": lo, "n": n - len(ids)})
        ids = sorted(set(ids) | set(more))
    if not ids:
        return []
    rows = conn.execute(
        _CHECK_REPLICAS,
        {
            "ids": ids,
            "worker": worker,
            "addr": addr,
            "coordinator": taker.coordinator,
            "deadline": deadline,
            "now": now,
        },
    ).all()
    specs = {r[0]: tuple(r) for r in conn.execute(_UNIT_SPECS, {"ids": ids}).all()}
    return claimed(job_id, sorted((r[0], r[1]) for r in rows), specs, deadline)


def open_unit_for_reference(conn: Connection, job_id: int) -> int | None:
    """A unit of the job nobody computes yet, for the coordinator to answer itself."""
    q = (
        select(U.c.id)
        .where(U.c.job_id == job_id, U.c.state == "pending", U.c.issued == 0, U.c.want > 0)
        .order_by(U.c.id)
        .limit(1)
    )
    return conn.execute(q).scalar()


# ---- backtracking --------------------------------------------------------------------------


def take_back(conn: Connection, worker_id: str) -> list[int]:
    """Every result the worker gave becomes invalid; returns the units whose decision they
    were part of (its spot-checks decided nothing: those units are left as they are)."""
    mine = select(R.c.unit_id).where(
        R.c.worker_id == worker_id,
        R.c.state.in_(("returned", "valid")),
        R.c.spot_check.is_(False),
    )
    units = sorted(set(conn.execute(mine).scalars()))
    conn.execute(
        update(R)
        .where(R.c.worker_id == worker_id, R.c.state.in_(("returned", "valid")))
        .values(state="invalid")
    )
    return units


def done_units_of(conn: Connection, unit_ids: list[int]) -> list[int]:
    """Those of the units that are done on workers' results (not on a reference or a
    verifier, which no worker's word can undo) and belong to a job not cancelled."""
    out: list[int] = []
    for i in range(0, len(unit_ids), 500):
        q = (
            select(U.c.id)
            .join(J, J.c.id == U.c.job_id)
            .where(
                U.c.id.in_(unit_ids[i : i + 500]),
                U.c.state == "done",
                U.c.accepted_by.not_in(("reference", "verifier")),
                J.c.state != "cancelled",
            )
        )
        out += list(conn.execute(q).scalars())
    return out


def undecide(conn: Connection, unit_ids: list[int]) -> None:
    """The results of reopened units wait for a verdict again: those that agreed with the
    accepted result and those that disagreed with it (it may have been the wrong one), and
    spot-checks of them too, each another worker's independent result; never a banned
    worker's."""
    banned = select(W.c.id).where(W.c.banned)
    for i in range(0, len(unit_ids), 500):
        conn.execute(
            update(R)
            .where(
                R.c.unit_id.in_(unit_ids[i : i + 500]),
                R.c.state.in_(("valid", "invalid")),
                R.c.worker_id.not_in(banned),
            )
            .values(state="returned")
        )


def standing_results(conn: Connection, unit_ids: list[int]) -> dict[int, int]:
    """How many results of each unit still stand (returned or valid)."""
    out: dict[int, int] = {}
    for i in range(0, len(unit_ids), 500):
        q = (
            select(R.c.unit_id, func.count())
            .where(
                R.c.unit_id.in_(unit_ids[i : i + 500]),
                R.c.state.in_(("returned", "valid")),
            )
            .group_by(R.c.unit_id)
        )
        out.update({uid: n for uid, n in conn.execute(q).all()})
    return out


def record_checks(conn: Connection, passed: dict[str, int], failed: dict[str, int]) -> None:
    for wid, n in passed.items():
        conn.execute(update(W).where(W.c.id == wid).values(checks_passed=W.c.checks_passed + n))
    for wid, n in failed.items():
        conn.execute(update(W).where(W.c.id == wid).values(checks_failed=W.c.checks_failed + n))


def addresses_with_many_ids(conn: Connection, since: float, least: int = 3) -> list[dict]:
    """Client addresses that held ``least`` or more worker ids seen since ``since``: one
    machine (or one saboteur) coming back under new ids."""
    q = (
        select(
            W.c.client_addr,
            func.count().label("ids"),
            func.sum(case((W.c.banned, 1), else_=0)).label("banned"),
        )
        .where(W.c.last_seen >= since, W.c.client_addr != "")
        .group_by(W.c.client_addr)
        .having(func.count() >= least)
        .order_by(func.count().desc())
        .limit(50)
    )
    return [{"addr": a, "ids": n, "banned": int(b or 0)} for a, n, b in conn.execute(q)]


_policy = msgspec.json.Decoder(Policy)
_RUNNING = (
    select(J.c.id, J.c.policy).where(J.c.state == "running").order_by(J.c.priority.desc(), J.c.id)
)


def checked_jobs(conn: Connection) -> list[tuple[int, float]]:
    """Running jobs accepted by credibility, whose workers get spot-checks: (id, deadline_s)."""
    out = []
    for job_id, text_ in conn.execute(_RUNNING):
        policy = _policy.decode(text_)
        if policy.error_rate is not None:
            out.append((job_id, policy.deadline_s))
    return out


def waiting_on_evidence(conn: Connection, job_ids: list[int], limit: int = 500) -> list[int]:
    """Units of these jobs whose results are all in and that still wait for a verdict."""
    if not job_ids:
        return []
    q = (
        select(U.c.id)
        .where(U.c.job_id.in_(job_ids), U.c.state == "validating", U.c.inflight == 0)
        .order_by(U.c.updated_at)
        .limit(limit)
    )
    return list(conn.execute(q).scalars())
