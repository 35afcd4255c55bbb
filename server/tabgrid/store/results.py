"""Results coming back: recorded, validated by quorum or verifier, credited, in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from tabgrid.blobs import BlobStore
from tabgrid.protocol import BlobRef, Output, Policy, ResultItem, Stats
from tabgrid.store import blob_rows
from tabgrid.store.codec import dumps, loads, loads_inputs, loads_outputs, strip_data
from tabgrid.store.leases import load_units, save_units
from tabgrid.store.sql import insert_ignore
from tabgrid.store.tables import Blob, BlobUse, Replica, Unit, Worker
from tabgrid.store.units import UnitRow
from tabgrid.validation import (
    Candidate,
    can_verify,
    check_set,
    credit,
    make_comparator,
    verify_single,
)

R = Replica.__table__  # type: ignore[attr-defined]
W = Worker.__table__  # type: ignore[attr-defined]
U = Unit.__table__  # type: ignore[attr-defined]
B = Blob.__table__  # type: ignore[attr-defined]
REFS = BlobUse.__table__  # type: ignore[attr-defined]

MAX_ERROR_TEXT = 2000


@dataclass(frozen=True)
class Incoming:
    worker: str
    item: ResultItem


@dataclass
class JobContext:
    """What validating a job's units needs, loaded once per job."""

    kernel: ModuleType
    policy: Policy
    params: dict
    inputs: dict[str, BlobRef]


@dataclass
class Outcome:
    stats: dict[str, Stats] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    new_work: bool = False
    units_done: int = 0


@dataclass
class _Tally:
    results: int = 0
    valid: int = 0
    invalid: int = 0
    errors: int = 0
    credit: float = 0.0
    events: list[bool] = field(default_factory=list)  # True valid, False invalid/error, in order


class Validator:
    """Records a batch of results; holds the per-job context cache and the array loader."""

    def __init__(self, contexts: Callable[[Connection, int], JobContext], blobs: BlobStore) -> None:
        self._contexts = contexts
        self._blobs = blobs
        self._inline: dict[str, bytes] = {}  # inline outputs of the batch being recorded
        self._kept: dict[str, bytes] = {}  # of those, the ones to store
        self._conn: Connection | None = None

    def record(self, conn: Connection, batch: list[Incoming], now: float) -> Outcome:
        """Inline outputs must have been checked against their digests (check_inline)."""
        out = Outcome()
        self._conn = conn
        self._inline = {
            o.digest: o.data
            for inc in batch
            for o in (inc.item.outputs or {}).values()
            if o.data is not None
        }
        self._kept = {}
        accepted = self._accept(conn, batch, out)
        if not accepted:
            return out
        units = {u.id: u for u in load_units(conn, {r["unit_id"] for _, r in accepted})}
        tallies: dict[str, _Tally] = {}
        updates = [self._apply(inc, rep, units, tallies, conn) for inc, rep in accepted]
        _save_replicas(conn, updates, now)
        _reference_outputs(conn, accepted)
        todo = [u for u in units.values() if not u.final or u.loaded_state == "done"]
        batch_ = _Batch.load(conn, [u.id for u in todo])
        for u in todo:
            out.new_work |= self._validate(conn, u, batch_, tallies)
        batch_.flush(conn)
        blob_rows.keep(conn, self._kept, now)
        out.units_done = sum(
            1 for u in units.values() if u.state == "done" and u.loaded_state != "done"
        )
        save_units(conn, list(units.values()), now)
        out.stats = _credit_workers(conn, tallies, now)
        return out

    def _accept(
        self, conn: Connection, batch: list[Incoming], out: Outcome
    ) -> list[tuple[Incoming, dict]]:
        ids = [inc.item.lease for inc in batch]
        q = select(R).where(R.c.id.in_(ids)).order_by(R.c.id).with_for_update()
        reps = {r["id"]: dict(r) for r in conn.execute(q).mappings()}
        live = _live_replicas(conn, [r for r in reps.values() if r["state"] == "released"])
        accepted, seen = [], set()
        for inc in batch:
            rep = reps.get(inc.item.lease)
            if rep is None or rep["worker_id"] != inc.worker:
                out.rejected.append((inc.worker, f"lease {inc.item.lease} is not held by you"))
            elif rep["state"] not in ("leased", "released") or rep["id"] in seen:
                out.rejected.append((inc.worker, f"lease {inc.item.lease} already has a result"))
            elif rep["state"] == "released" and (rep["unit_id"], inc.worker) in live:
                # The unit went to this worker again: only one of its results may count.
                out.rejected.append((inc.worker, f"lease {inc.item.lease} was released"))
            else:
                seen.add(rep["id"])
                accepted.append((inc, rep))
        return accepted

    def _apply(
        self, inc: Incoming, rep: dict, units: dict[int, UnitRow], tallies: dict, conn: Connection
    ) -> dict:
        u = units[rep["unit_id"]]
        if rep["state"] == "leased" and not u.final:
            u.inflight = max(0, u.inflight - 1)
        tally = tallies.setdefault(inc.worker, _Tally())
        tally.results += 1
        error = self._error_of(inc.item)
        row = {"b_id": rep["id"], "elapsed_ms": inc.item.elapsed_ms, "outputs": None}
        if error is not None:
            tally.errors += 1
            tally.events.append(False)
            if not u.final:
                ctx = self._contexts(conn, u.job_id)
                u.replace_replica(ctx.policy)
                u.fail_if_stuck(f"every replica failed or was lost; last error: {error}")
                u.derive_state()
            return row | {"state": "error", "error": error}
        u.results += 1
        if self._contexts(conn, u.job_id).policy.compare != "exact":
            self._keep(inc.item.outputs or {})  # comparisons will read the bytes
        outputs = strip_data(inc.item.outputs or {})
        return row | {"state": "returned", "error": None, "outputs": dumps(outputs)}

    def _error_of(self, item: ResultItem) -> str | None:
        if item.error is not None:
            return item.error[:MAX_ERROR_TEXT] or "the worker reported an error without a message"
        if not item.outputs:
            return "the result carried no outputs"
        missing = [
            k for k, o in item.outputs.items() if o.data is None and not self._blobs.has(o.digest)
        ]
        if missing:
            return f"output blob(s) {', '.join(missing)} were neither inline nor uploaded"
        return None

    def _validate(self, conn: Connection, u: UnitRow, b: _Batch, tallies: dict) -> bool:
        """Decides what it can about one unit; True when the unit now wants another replica."""
        ctx = self._contexts(conn, u.job_id)
        reps = b.replicas.get(u.id, [])
        fresh = [Candidate(rid, loads_outputs(o)) for rid, _, st, o in reps if st == "returned"]
        owner = {rid: wid for rid, wid, _, _ in reps}
        if not fresh:
            return False
        agree = make_comparator(ctx.policy, ctx.kernel, self._array)
        if u.state == "done":
            canon = loads_outputs(u.outputs or "{}")
            valid = [c.replica_id for c in fresh if agree(canon, c.outputs)]
            invalid = [c.replica_id for c in fresh if c.replica_id not in valid]
            self._judge(b, u, ctx, valid, invalid, owner, tallies)
            return False
        if ctx.policy.quorum == 1 and can_verify(ctx.kernel):
            return self._verify(b, u, ctx, fresh, owner, tallies)
        verdict = check_set(fresh, ctx.policy.quorum, agree)
        if verdict.canonical is not None:
            canon = next(c for c in fresh if c.replica_id == verdict.canonical)
            self._accept_canonical(u, canon)
            self._judge(b, u, ctx, verdict.valid, verdict.invalid, owner, tallies)
            return False
        return self._ask_more(u, ctx.policy, len(fresh))

    def _verify(self, b, u, ctx, fresh, owner, tallies) -> bool:  # type: ignore[no-untyped-def]
        params, refs = b.spec(u.id, ctx)
        inputs = {k: self._array_ref(ref) for k, ref in refs.items()}
        invalid = []
        for cand in fresh:
            outs = {k: self._array(o) for k, o in cand.outputs.items()}
            if verify_single(ctx.kernel, params, inputs, outs):
                self._accept_canonical(u, cand)
                rest = [c.replica_id for c in fresh if c is not cand]
                self._judge(b, u, ctx, [cand.replica_id], invalid + rest, owner, tallies)
                return False
            invalid.append(cand.replica_id)
        self._judge(b, u, ctx, [], invalid, owner, tallies)
        u.results -= len(invalid)
        return self._ask_more(u, ctx.policy, 0)

    def _ask_more(self, u: UnitRow, policy: Policy, undecided: int) -> bool:
        """BOINC adds one replica when quorum-many results disagree; and refills lost ones."""
        potential = undecided + u.inflight + u.want
        wanted = max(policy.quorum - potential, 1 if u.inflight + u.want == 0 else 0)
        asked = any([u.replace_replica(policy) for _ in range(wanted)])
        u.fail_if_stuck(
            f"no {policy.quorum} results agreed within max_replicas={policy.max_replicas}"
        )
        u.derive_state()
        return asked

    def _accept_canonical(self, u: UnitRow, canon: Candidate) -> None:
        # Under exact comparison only the canonical bytes are stored: an agreeing result in this
        # batch carried them (same digest), or they were uploaded as a blob.
        self._keep(canon.outputs)
        u.canonical_id = canon.replica_id
        u.outputs = dumps(canon.outputs)
        u.state = "done"
        u.want = 0

    def _judge(self, b, u, ctx, valid, invalid, owner, tallies) -> None:  # type: ignore[no-untyped-def]
        b.valid += valid
        b.invalid += invalid
        gflop = 0.0
        if valid:
            params, refs = b.spec(u.id, ctx)
            shapes = {k: (r.dtype, tuple(r.shape)) for k, r in refs.items()}
            gflop = credit(ctx.kernel, params, shapes)
        for rid in valid:
            t = tallies.setdefault(owner[rid], _Tally())
            t.valid += 1
            t.credit += gflop
            t.events.append(True)
        for rid in invalid:
            t = tallies.setdefault(owner[rid], _Tally())
            t.invalid += 1
            t.events.append(False)

    def _keep(self, outputs: dict[str, Output]) -> None:
        for o in outputs.values():
            data = self._inline.get(o.digest)
            if data is not None:
                self._kept[o.digest] = data

    def _array(self, o: Output) -> Any:
        return self._load(o.digest, o.dtype, o.shape)

    def _array_ref(self, ref: BlobRef) -> Any:
        return self._load(ref.digest, ref.dtype, ref.shape)

    def _load(self, digest: str, dtype: str, shape: list[int]) -> Any:
        import numpy as np

        data = self._inline.get(digest)
        if data is None and self._conn is not None:
            data = blob_rows.read(self._conn, digest)
        if data is None:
            data = self._blobs.read(digest)
        return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


@dataclass
class _Batch:
    """What validating a batch of units reads, in one query each, and the verdicts it writes."""

    replicas: dict[int, list]
    specs: dict[int, tuple[str, str]]
    valid: list[int] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)

    @classmethod
    def load(cls, conn: Connection, unit_ids: list[int]) -> _Batch:
        replicas: dict[int, list] = {}
        specs: dict[int, tuple[str, str]] = {}
        if unit_ids:
            q = (
                select(R.c.unit_id, R.c.id, R.c.worker_id, R.c.state, R.c.outputs)
                .where(R.c.unit_id.in_(unit_ids), R.c.state.in_(("returned", "valid")))
                .order_by(R.c.returned_at, R.c.id)
            )
            for unit_id, *rest in conn.execute(q):
                replicas.setdefault(unit_id, []).append(rest)
            q2 = select(U.c.id, U.c.params, U.c.inputs).where(U.c.id.in_(unit_ids))
            specs = {uid: (p, i) for uid, p, i in conn.execute(q2)}
        return cls(replicas, specs)

    def spec(self, unit_id: int, ctx: JobContext) -> tuple[dict, dict[str, BlobRef]]:
        """The unit's merged params and inputs: the job's, overridden by the unit's own."""
        params, inputs = self.specs[unit_id]
        return ctx.params | loads(params), ctx.inputs | loads_inputs(inputs)

    def flush(self, conn: Connection) -> None:
        if self.valid:
            conn.execute(update(R).where(R.c.id.in_(self.valid)).values(state="valid"))
        if self.invalid:
            conn.execute(update(R).where(R.c.id.in_(self.invalid)).values(state="invalid"))


def _live_replicas(conn: Connection, released: list[dict]) -> set[tuple[int, str]]:
    """(unit, worker) pairs among these where the worker holds another, unreleased replica."""
    if not released:
        return set()
    units = {r["unit_id"] for r in released}
    q = select(R.c.unit_id, R.c.worker_id).where(R.c.unit_id.in_(units), R.c.state != "released")
    return {(u, w) for u, w in conn.execute(q)}


def _reference_outputs(conn: Connection, accepted: list[tuple[Incoming, dict]]) -> None:
    """Output blobs belong to their job too, so retiring the job frees them."""
    refs = {
        (o.digest, rep["job_id"])
        for inc, rep in accepted
        for o in (inc.item.outputs or {}).values()
    }
    insert_ignore(conn, REFS, [{"digest": d, "job_id": j} for d, j in refs])


def _save_replicas(conn: Connection, rows: list[dict], now: float) -> None:
    stmt = (
        update(R)
        .where(R.c.id == bindparam("b_id"))
        .values(
            state=bindparam("state"),
            outputs=bindparam("outputs"),
            error=bindparam("error"),
            elapsed_ms=bindparam("elapsed_ms"),
            returned_at=now,
        )
    )
    conn.execute(stmt, rows)


def _credit_workers(conn: Connection, tallies: dict[str, _Tally], now: float) -> dict[str, Stats]:
    if not tallies:
        return {}
    rows = {
        r["id"]: dict(r)
        for r in conn.execute(select(W).where(W.c.id.in_(list(tallies)))).mappings()
    }
    pending = dict(
        conn.execute(
            select(R.c.worker_id, func.count())
            .where(R.c.worker_id.in_(list(tallies)), R.c.state == "returned")
            .group_by(R.c.worker_id)
        ).all()
    )
    stats: dict[str, Stats] = {}
    for wid, t in tallies.items():
        w = rows.get(wid)
        if w is None:
            continue
        streak = w["consecutive_valid"]
        for ok in t.events:
            streak = streak + 1 if ok else 0
        w.update(
            results=w["results"] + t.results,
            valid=w["valid"] + t.valid,
            invalid=w["invalid"] + t.invalid,
            errors=w["errors"] + t.errors,
            credit=w["credit"] + t.credit,
            consecutive_valid=streak,
            last_seen=now,
        )
        conn.execute(update(W).where(W.c.id == wid).values(w))
        stats[wid] = Stats(
            results=w["results"],
            valid=w["valid"],
            invalid=w["invalid"],
            errors=w["errors"],
            pending=pending.get(wid, 0),
            credit=w["credit"],
        )
    return stats
