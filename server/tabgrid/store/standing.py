"""Workers' standing: counts, the streak of consecutive valid results, and credit."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, Float, bindparam, func, select, update

from tabgrid.protocol import Stats
from tabgrid.store.sql import Many, One, in_ids
from tabgrid.store.tables import Replica, Worker

R = Replica.__table__  # type: ignore[attr-defined]
W = Worker.__table__  # type: ignore[attr-defined]


@dataclass
class Tally:
    """What one batch did to one worker's standing, in order."""

    results: int = 0
    valid: int = 0
    invalid: int = 0
    errors: int = 0
    credit: float = 0.0
    # In order: True a result another worker confirmed, False an invalid result or an error.
    events: list[bool] = field(default_factory=list)
    checks_passed: int = 0
    checks_failed: int = 0


def tally_of(tallies: dict[str, Tally], worker: str) -> Tally:
    """The worker's tally in this batch, made at its first result (not at every lookup)."""
    t = tallies.get(worker)
    if t is None:
        t = tallies[worker] = Tally()
    return t


# Counters move by deltas, so a concurrent writer's increments are never lost; the streak is
# either extended (keep = 1) or restarted after a failure in this batch (keep = 0).
_CREDIT = Many(
    update(W)
    .where(W.c.id == bindparam("b_id"))
    .values(
        results=W.c.results + bindparam("d_results"),
        valid=W.c.valid + bindparam("d_valid"),
        invalid=W.c.invalid + bindparam("d_invalid"),
        errors=W.c.errors + bindparam("d_errors"),
        credit=W.c.credit + bindparam("d_credit", type_=Float),
        consecutive_valid=W.c.consecutive_valid * bindparam("keep") + bindparam("tail"),
        last_seen=bindparam("now", type_=Float),
    )
)
_PENDING = (
    select(func.count()).where(R.c.worker_id == W.c.id, R.c.state == "returned").scalar_subquery()
)
_STATS = One(
    select(W.c.id, W.c.results, W.c.valid, W.c.invalid, W.c.errors, _PENDING, W.c.credit).where(
        in_ids(W.c.id)
    )
)


def credit(conn: Connection, tallies: dict[str, Tally], now: float) -> dict[str, Stats]:
    """Applies the batch's tallies and returns each worker's standing for its Stats message."""
    if not tallies:
        return {}
    # In id order, as every tick locks workers' rows: two coordinators crediting the same two
    # workers (replicas of shared units) take them in one order, so neither waits on the other.
    deltas = [_delta(wid, tallies[wid], now) for wid in sorted(tallies)]
    _CREDIT.run(conn, deltas)
    stats: dict[str, Stats] = {}
    for wid, results, valid, invalid, errors, pending, credit_ in _STATS.all(
        conn, {"ids": list(tallies)}
    ):
        stats[wid] = Stats(
            results=results,
            valid=valid,
            invalid=invalid,
            errors=errors,
            pending=pending,
            credit=credit_,
        )
    return {wid: stats[wid] for wid in tallies if wid in stats}


def _delta(wid: str, t: Tally, now: float) -> dict:
    """The tally as increments; the streak continues past the last failure of the batch."""
    tail = 0
    for ok in reversed(t.events):
        if not ok:
            break
        tail += 1
    return {
        "b_id": wid,
        "d_results": t.results,
        "d_valid": t.valid,
        "d_invalid": t.invalid,
        "d_errors": t.errors,
        "d_credit": t.credit,
        "keep": 1 if tail == len(t.events) else 0,
        "tail": tail,
        "now": now,
    }
