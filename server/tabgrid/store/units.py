"""A unit's life: how many replicas it still wants, its derived state, when it fails."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Connection, select, update

from tabgrid.protocol import Policy
from tabgrid.store.notify import job_changed
from tabgrid.store.tables import Replica, Unit

U = Unit.__table__  # type: ignore[attr-defined]
R = Replica.__table__  # type: ignore[attr-defined]

FINAL = ("done", "failed", "cancelled")


@dataclass(slots=True)
class UnitRow:
    """The counters of one unit, changed in Python and written back in one UPDATE."""

    id: int
    job_id: int
    idx: int
    state: str
    want: int
    issued: int
    inflight: int
    results: int
    canonical_id: int | None = None
    outputs: str | None = None
    error: str | None = None
    accepted_by: str | None = None
    credibility: float | None = None
    revision: int = 0
    loaded_state: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.loaded_state = self.state

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def derive_state(self) -> None:
        if self.final:
            return
        if self.inflight > 0:
            self.state = "running"
        elif self.results > 0:
            self.state = "validating"
        else:
            self.state = "pending"

    def replace_replica(self, policy: Policy) -> bool:
        """Asks for one more replica if the policy allows it; True when it did."""
        if self.issued + self.want < policy.max_replicas:
            self.want += 1
            return True
        return False

    def fail_if_stuck(self, reason: str) -> bool:
        """A unit with nothing in flight and nothing more to issue can never finish."""
        if not self.final and self.want == 0 and self.inflight == 0:
            self.state = "failed"
            self.error = reason
            return True
        return False

    def fail_now(self, reason: str) -> bool:
        """A confirmed deterministic error: no replica can succeed, so none more is issued.
        Replicas still in flight come back to a final unit and change nothing."""
        if self.final:
            return False
        self.state = "failed"
        self.want = 0
        self.error = reason
        return True

    def accept(
        self, canonical_id: int | None, outputs: str, by: str, credibility: float | None
    ) -> None:
        self.canonical_id = canonical_id
        self.outputs = outputs
        self.accepted_by = by
        self.credibility = credibility
        self.state = "done"
        self.want = 0

    def reopen(self, results: int) -> None:
        """Backtracking took back a result its acceptance rested on: it is decided again from
        the ``results`` that still stand."""
        self.state = "validating" if results else "pending"
        self.canonical_id = None
        self.outputs = None
        self.accepted_by = None
        self.credibility = None
        self.error = None
        self.results = results
        self.revision += 1

    def values(self, now: float, **more: object) -> dict:
        """The columns it writes back, and ``more`` (a key the statement binds, say)."""
        row = {
            "state": self.state,
            "want": self.want,
            "issued": self.issued,
            "inflight": self.inflight,
            "results": self.results,
            "canonical_id": self.canonical_id,
            "outputs": self.outputs,
            "error": self.error,
            "accepted_by": self.accepted_by,
            "credibility": self.credibility,
            "revision": self.revision,
            "updated_at": now,
        }
        row.update(more)
        return row


# ---- deterministic failures (coordinator/recording.py decides; these are its statements) ----


def reported_errors(conn: Connection, unit_ids: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
    """(worker, error text) of each stored error result of the units."""
    found: dict[int, list[tuple[str, str]]] = {}
    ids = sorted(set(unit_ids))
    for i in range(0, len(ids), 500):
        q = select(R.c.unit_id, R.c.worker_id, R.c.error).where(
            R.c.unit_id.in_(ids[i : i + 500]), R.c.state == "error"
        )
        for unit_id, worker, error in conn.execute(q):
            found.setdefault(unit_id, []).append((worker, error or ""))
    return found


def shares_shader(conn: Connection, job_id: int) -> bool:
    """True when no unit of the job names a shader of its own: every unit runs the job's (or
    the kernel's built-in) shader. A unit param that merely mentions the word counts as its
    own, which only ever keeps a failure to one unit."""
    q = select(U.c.id).where(U.c.job_id == job_id, U.c.params.contains('"shader"')).limit(1)
    return conn.execute(q).first() is None


def fail_open_units(
    conn: Connection, job_id: int, reason: str, skip: Iterable[int], now: float
) -> tuple[list[tuple[int, str]], int]:
    """Fails every open unit of the job except ``skip`` (written by the caller) and releases
    every lease of the job still out; returns the (lease, worker) pairs to call back and how
    many units failed, for the job's counters (store.leases.finish_units). Locks replicas,
    then units, as the result path does."""
    skipped = sorted(set(skip))
    rq = select(R.c.id, R.c.worker_id).where(R.c.job_id == job_id, R.c.state == "leased")
    leased = [(rid, wid) for rid, wid in conn.execute(rq.order_by(R.c.id).with_for_update())]
    open_ = U.c.state.in_(("pending", "running", "validating"))
    where = [U.c.job_id == job_id, open_]
    if skipped:
        where.append(U.c.id.not_in(skipped))
    conn.execute(select(U.c.id).where(*where).order_by(U.c.id).with_for_update()).all()
    if leased:
        ids = [rid for rid, _ in leased]
        for i in range(0, len(ids), 500):
            conn.execute(update(R).where(R.c.id.in_(ids[i : i + 500])).values(state="released"))
    n = conn.execute(
        update(U)
        .where(*where)
        .values(state="failed", want=0, inflight=0, error=reason[:2000], updated_at=now)
    ).rowcount
    # Workers of other coordinators hold leases of it too: theirs call them back.
    job_changed(conn, job_id, "failed")
    return leased, n
