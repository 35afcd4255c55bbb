"""Results coming back: recorded, judged by quorum or verifier, credited, in the caller's
transaction. The policy is here; every statement it issues is in the store."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from math import prod
from types import ModuleType
from typing import Any

from sqlalchemy import Connection

from tabgrid import kernels
from tabgrid.blobs import BlobStore, digest_of
from tabgrid.coordinator import credibility as cred
from tabgrid.coordinator.differences import describe as describe_difference
from tabgrid.coordinator.rules import (
    Candidate,
    can_verify,
    check_set,
    credit,
    make_comparator,
    verify_single,
)
from tabgrid.protocol import BlobRef, JobSpec, Output, Policy, ResultItem, Stats, encoder
from tabgrid.runtime.array import ITEMSIZE
from tabgrid.runtime.errors import DETERMINISTIC
from tabgrid.store import bans, blob_rows, disagreements, standing
from tabgrid.store import jobs as jobs_q
from tabgrid.store import results as results_q
from tabgrid.store import trust as trust_q
from tabgrid.store import units as units_q
from tabgrid.store.codec import dumps, loads, loads_inputs, loads_outputs, strip_data
from tabgrid.store.leases import Ended, finish_units, load_units_and_specs, save_units
from tabgrid.store.results import Held
from tabgrid.store.standing import Tally
from tabgrid.store.units import UnitRow

MAX_ERROR_TEXT = 2000
# How a worker's shader error reads (worker/results.py, runtime/browser.py: the exception's
# class name first): a stored error result that claimed to be deterministic.
SHADER_ERROR_PREFIX = "ShaderError: "
# Distinct workers that must report a deterministic error before it fails a unit: one worker's
# word could fail anyone's unit; two are two distinct client addresses by default.
CONFIRMATIONS = 2
MAX_DESCRIBED = 1 << 22  # elements compared one by one for the feed; larger: by digest
ARRIVAL_STEP_S = 1e-6  # between the returned_at of consecutive results of one tick
REFERENCE_GFLOP = 1.0  # the largest unit the coordinator computes itself as a known answer


@dataclass(frozen=True)
class Incoming:
    worker: str
    item: ResultItem
    tries: int = 0  # ticks that failed with it


@dataclass
class JobContext:
    """What validating a job's units needs, loaded once per job."""

    kernel: ModuleType
    policy: Policy
    params: dict
    inputs: dict[str, BlobRef]
    key: str = ""  # what workers cache the job's description under (protocol.JobSpec)


@dataclass
class Outcome:
    stats: dict[str, Stats] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    new_work: bool = False
    units_done: int = 0
    # What the batch's results came to, for the console and /metrics.
    valid: int = 0
    invalid: int = 0
    errors: int = 0
    # Seconds from each newly validated unit's first result to its verdict.
    latencies: list[float] = field(default_factory=list)
    # Workers whose results could not be recorded at all, and why: they are cut off.
    hostile: dict[str, str] = field(default_factory=dict)
    # Leases of units failed with their job (a confirmed shader error), to call back.
    cancelled: list[tuple[int, str]] = field(default_factory=list)
    # Workers a spot-check caught (banned, every result taken back), and why.
    caught: dict[str, str] = field(default_factory=dict)
    reopened: int = 0  # accepted units whose acceptance rested on a caught worker
    duplicates: int = 0  # results for replicas that had theirs already: ignored
    # Units that ended, by job, when the caller folds them into the jobs (record's defer_jobs).
    ended: Ended = field(default_factory=dict)

    def merge(self, other: Outcome) -> None:
        """Adds a later part of the same tick (each worker's stats are read after its part)."""
        self.stats |= other.stats
        self.rejected += other.rejected
        self.new_work |= other.new_work
        self.units_done += other.units_done
        self.valid += other.valid
        self.invalid += other.invalid
        self.errors += other.errors
        self.latencies += other.latencies
        self.hostile |= other.hostile
        self.cancelled += other.cancelled
        self.caught |= other.caught
        self.reopened += other.reopened
        self.duplicates += other.duplicates
        for job, (done, failed) in other.ended.items():
            mine = self.ended.setdefault(job, [0, 0])
            mine[0] += done
            mine[1] += failed


ContextLoader = Callable[[Connection, int], JobContext]


class Validator:
    """Decides verdicts on results, above the store: quorum (BOINC's check_set), verifiers,
    late results against the canonical one. Holds what outlives a batch: each job's context,
    loaded once, and the blob store; each batch is a `_Round` of its own."""

    def __init__(
        self,
        blobs: BlobStore,
        load: ContextLoader | None = None,
        trust: cred.Trust | None = None,
        rng: random.Random | None = None,
        per_address: int = 1,
    ) -> None:
        self._blobs = blobs
        self._load = load or load_context
        self._contexts: dict[int, JobContext] = {}
        self.trust = trust or cred.Trust()
        # Which units are resampled and which leases are spot-checks must be unpredictable.
        self.rng = rng or random.SystemRandom()
        self.per_address = per_address  # workers of one address that count in a group (0: all)

    def context(self, conn: Connection, job_id: int) -> JobContext:
        ctx = self._contexts.get(job_id)
        if ctx is None:
            ctx = self._contexts[job_id] = self._load(conn, job_id)
        return ctx

    def known(self, job_id: int) -> JobContext:
        """A context already loaded (every leased job's is, by the claim's tick)."""
        return self._contexts[job_id]

    def forget_job(self, job_id: int) -> None:
        self._contexts.pop(job_id, None)

    def record(
        self,
        conn: Connection,
        batch: list[Incoming],
        now: float,
        banned: frozenset[str] = frozenset(),
        defer_jobs: bool = False,
    ) -> Outcome:
        """Records a batch of results in the caller's transaction. Inline outputs must have
        been checked against their digests. Results of ``banned`` workers are refused: a ban
        may have come through another coordinator, or while they were in flight. With
        ``defer_jobs`` the units that ended are left in ``Outcome.ended`` for the caller to fold
        into their jobs (store.leases.finish_jobs) before it commits."""
        return _Round(self, conn, now).record(batch, banned, defer_jobs)

    def reconsider(self, conn: Connection, unit_ids: list[int], now: float) -> Outcome:
        return _Round(self, conn, now).reconsider(unit_ids)

    def answer_alone(self, conn: Connection, job_id: int, now: float) -> bool:
        """Computes one unit nobody holds yet with the kernel's reference, here, and accepts it
        as a known answer: spot-checks need some before any worker is trusted. Only for units
        small enough (REFERENCE_GFLOP); True when it answered one."""
        ctx = self.context(conn, job_id)
        reference = getattr(ctx.kernel, "reference", None)
        uid = trust_q.open_unit_for_reference(conn, job_id) if callable(reference) else None
        if uid is None:
            return False
        (u,), specs = load_units_and_specs(conn, [uid])
        params = ctx.params | loads(specs[uid][0])
        refs = ctx.inputs | loads_inputs(specs[uid][1])
        answer = self.reference(conn, ctx, params, refs)
        if answer is None:
            return False
        outputs, data = answer
        blob_rows.keep(conn, data, now)
        results_q.reference_outputs(conn, {(d, job_id) for d in data})
        u.accept(None, dumps(outputs), "reference", 1.0)  # type: ignore[arg-type]
        save_units(conn, [u], now)
        return True

    def reference(
        self, conn: Connection, ctx: JobContext, params: dict, refs: dict[str, BlobRef]
    ) -> tuple[dict[str, Output], dict[str, bytes]] | None:
        """The unit's answer from the kernel's reference, computed here, when it has one and
        the unit is small enough (REFERENCE_GFLOP); None otherwise."""
        reference = getattr(ctx.kernel, "reference", None)
        if not callable(reference):
            return None
        shapes = {k: (r.dtype, tuple(r.shape)) for k, r in refs.items()}
        if credit(ctx.kernel, params, shapes) > REFERENCE_GFLOP:
            return None
        try:
            arrays = {
                k: read_array(conn, self._blobs, r.digest, r.dtype, r.shape)
                for k, r in refs.items()
            }
            return _as_outputs(reference(params, arrays))
        except Exception:  # noqa: BLE001 - then workers alone decide, as without a reference
            return None


def _as_outputs(arrays: dict[str, Any]) -> tuple[dict[str, Output], dict[str, bytes]]:
    import numpy as np

    outputs, data = {}, {}
    for name, value in arrays.items():
        a = np.ascontiguousarray(value)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        if a.dtype.name not in ITEMSIZE:
            raise ValueError(f"the reference gave {a.dtype.name} for {name!r}")
        raw = a.tobytes()
        outputs[name] = Output(digest=digest_of(raw), dtype=a.dtype.name, shape=list(a.shape))
        data[outputs[name].digest] = raw
    return outputs, data


def read_array(
    conn: Connection | None, blobs: BlobStore, digest: str, dtype: str, shape: list[int]
) -> Any:
    """A blob as a numpy array: small ones live in the database, the rest in files."""
    import numpy as np

    data = blob_rows.read(conn, digest) if conn is not None else None
    if data is None:
        data = blobs.read(digest)
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def load_context(conn: Connection, job_id: int) -> JobContext:
    row = jobs_q.get_job(conn, job_id)
    if row is None:
        raise LookupError(f"job {job_id} does not exist")
    key = job_key(job_id, row.kernel, row.params, row.inputs)
    return JobContext(kernels.get(row.kernel), row.policy, row.params, row.inputs, key)


def job_key(job_id: int, kernel: str, params: dict, inputs: dict[str, BlobRef]) -> str:
    """A digest of everything a job's units run under: a job that reuses an id, or a worker
    cache that outlives a job, can never match another job's description."""
    spec = JobSpec(job=job_id, kernel=kernel, params=params, inputs=inputs)
    return digest_of(encoder.encode(spec))[:32]


class _Round:
    """One batch of results being recorded: its connection, its inline bytes, its verdicts."""

    def __init__(self, validator: Validator, conn: Connection, now: float) -> None:
        self._validator = validator
        self._contexts = validator.context
        self._blobs = validator._blobs
        self._trust = validator.trust
        self._rng = validator.rng
        self._per_address = validator.per_address
        self._evidence: dict[str, trust_q.Evidence] = {}
        self._caught: dict[str, str] = {}
        self._rejudged: set[int] = set()  # units backtracking judges again
        self._conn = conn
        self._now = now
        self._inline: dict[str, bytes] = {}  # inline outputs of the batch
        self._kept: dict[str, bytes] = {}  # of those, the ones to store
        self._kept_refs: set[tuple[str, int]] = set()  # (digest, job) of the kept ones
        self._outcome = Outcome()
        self._disagreements: list[dict] = []
        # Deterministic error claims per unit: (worker, text), stored ones and this batch's.
        self._claims: dict[int, list[tuple[str, str]]] = {}
        self._failed_jobs: dict[int, str] = {}  # job -> why, when a shader error fails it

    def record(self, batch: list[Incoming], banned: frozenset[str], defer_jobs: bool) -> Outcome:
        conn, now, out = self._conn, self._now, self._outcome
        ended = out.ended if defer_jobs else None
        self._inline = {
            o.digest: o.data
            for inc in batch
            for o in (inc.item.outputs or {}).values()
            if o.data is not None
        }
        accepted = self._accept(conn, batch, out, banned)
        if not accepted:
            return out
        loaded, specs = load_units_and_specs(conn, {rep.unit_id for _, rep in accepted})
        units = {u.id: u for u in loaded}
        claiming = {rep.unit_id for inc, rep in accepted if inc.item.error_kind == DETERMINISTIC}
        if claiming:
            self._claims = {
                uid: [(w, e) for w, e in found if e.startswith(SHADER_ERROR_PREFIX)]
                for uid, found in units_q.reported_errors(conn, claiming).items()
            }
        tallies: dict[str, Tally] = {}
        updates = {rep.id: self._apply(inc, rep, units, tallies, conn) for inc, rep in accepted}
        for i, (_, rep) in enumerate(accepted):  # a tick's results keep their arrival order
            updates[rep.id]["returned_at"] = now + i * ARRIVAL_STEP_S
        # Uploaded outputs belong to the job at once; inline ones once kept (below).
        uploaded = {
            (o.digest, rep.job_id)
            for inc, rep in accepted
            for o in (inc.item.outputs or {}).values()
            if o.data is None
        }
        todo = [u for u in units.values() if not u.final or u.loaded_state == "done"]
        batch_ = _Batch.load(conn, [u.id for u in todo], specs, accepted, updates, now)
        self._load_evidence(conn, batch_)
        for u in todo:
            out.new_work |= self._validate(conn, u, batch_, tallies)
        # Each replica of the batch is written once, verdict included; earlier ones are judged.
        batch_.flush(conn, updates)
        results_q.save_replicas(conn, list(updates.values()), now)
        self._store_kept(conn, uploaded)
        out.units_done = sum(
            1 for u in units.values() if u.state == "done" and u.loaded_state != "done"
        )
        for u in units.values():
            if u.job_id in self._failed_jobs:
                u.fail_now(self._failed_jobs[u.job_id])
        save_units(conn, list(units.values()), now, ended)
        for job_id, why in self._failed_jobs.items():
            mine = [u.id for u in units.values() if u.job_id == job_id]
            leased, n = units_q.fail_open_units(conn, job_id, why, mine, now)
            if n and ended is not None:
                ended.setdefault(job_id, [0, 0])[1] += n
            elif n:
                finish_units(conn, job_id, 0, n, now)
            out.cancelled += leased
        if self._caught:
            self._backtrack(conn, tallies)
        out.stats = standing.credit(conn, tallies, now)
        trust_q.record_checks(
            conn,
            {w: t.checks_passed for w, t in tallies.items() if t.checks_passed},
            {w: t.checks_failed for w, t in tallies.items() if t.checks_failed},
        )
        disagreements.record(conn, self._disagreements)
        out.valid = sum(t.valid for t in tallies.values())
        out.invalid = sum(t.invalid for t in tallies.values())
        out.errors = sum(t.errors for t in tallies.values())
        return out

    def reconsider(self, unit_ids: list[int]) -> Outcome:
        """Judges waiting units again on the evidence their workers have now: a unit that asked
        for one more result no worker can give may be credible enough without it by now."""
        conn, out = self._conn, self._outcome
        loaded, specs = load_units_and_specs(conn, unit_ids)
        todo = [u for u in loaded if u.state == "validating"]
        b = _Batch.load(conn, [u.id for u in todo], specs, [], {}, self._now)
        self._load_evidence(conn, b)
        tallies: dict[str, Tally] = {}
        for u in todo:
            out.new_work |= self._validate(conn, u, b, tallies)
        b.flush(conn, {})
        save_units(conn, loaded, self._now)
        if self._caught:
            self._backtrack(conn, tallies)
        out.stats = standing.credit(conn, tallies, self._now)
        out.units_done = sum(1 for u in todo if u.state == "done")
        self._store_kept(conn, set())
        disagreements.record(conn, self._disagreements)
        return out

    def _backtrack(self, conn: Connection, tallies: dict[str, Tally]) -> None:
        """Sarmenta's backtracking, in this transaction: a worker a spot-check caught is banned
        and every result it gave is taken back; each unit they belonged to is judged again on
        the results that remain. An accepted unit whose acceptance rested on the worker opens
        again (its revision goes up, a finished job runs again); one that still stands without
        it stays as it was."""
        now, out = self._now, self._outcome
        touched: set[int] = set()
        for wid, why in self._caught.items():
            touched.update(trust_q.take_back(conn, wid))
            bans.ban(conn, wid, why, now)
            out.caught[wid] = why
        ids = sorted(touched)
        if not ids:
            return
        done = trust_q.done_units_of(conn, ids)
        trust_q.undecide(conn, done)
        standing_now = trust_q.standing_results(conn, ids)
        loaded, specs = load_units_and_specs(conn, ids)
        before = {u.id: u.outputs for u in loaded if u.id in set(done)}
        for u in loaded:
            if u.id in before:
                u.reopen(standing_now.get(u.id, 0))
            elif not u.final:
                u.results = standing_now.get(u.id, 0)
        todo = [u for u in loaded if not u.final]
        self._rejudged = {u.id for u in todo}
        b = _Batch.load(conn, [u.id for u in todo], specs, [], {}, now)
        self._load_evidence(conn, b)
        again: dict[str, Tally] = {}  # verdicts given before: not credited twice
        for u in todo:
            out.new_work |= self._validate(conn, u, b, again)
        b.flush(conn, {})
        for u in loaded:
            if u.id in before and (u.state != "done" or u.outputs != before[u.id]):
                u.revision += 1
                out.reopened += 1
        save_units(conn, loaded, now)

    def _accept(
        self, conn: Connection, batch: list[Incoming], out: Outcome, banned: frozenset[str]
    ) -> list[tuple[Incoming, Held]]:
        reps = results_q.held(conn, [inc.item.lease for inc in batch])
        live = results_q.live_pairs(conn, [r for r in reps.values() if r.state == "released"])
        accepted, seen = [], set()
        for inc in batch:
            rep = reps.get(inc.item.lease)
            if inc.worker in banned:
                out.rejected.append((inc.worker, "this worker is banned: its results do not count"))
            elif rep is None or rep.worker_id != inc.worker:
                out.rejected.append((inc.worker, f"lease {inc.item.lease} is not held by you"))
            elif rep.state not in ("leased", "released") or rep.id in seen:
                # A copy sent again (its acknowledgement was lost): the first one counts.
                out.duplicates += 1
            elif rep.state == "released" and (rep.unit_id, inc.worker) in live:
                # The unit went to this worker again: only one of its results may count.
                out.rejected.append((inc.worker, f"lease {inc.item.lease} was released"))
            else:
                seen.add(rep.id)
                accepted.append((inc, rep))
        return accepted

    def _apply(
        self, inc: Incoming, rep: Held, units: dict[int, UnitRow], tallies: dict, conn: Connection
    ) -> dict:
        u = units[rep.unit_id]
        row = {"b_id": rep.id, "elapsed_ms": inc.item.elapsed_ms, "outputs": None}
        if rep.state == "released" and u.final and inc.item.error is not None:
            # Called back (its job failed or was cancelled) while it ran: the error is the call
            # back's (a blob no longer served, say), not the worker's. Nothing counts.
            return row | {"state": "released", "error": None}
        if rep.state == "leased" and not u.final:
            u.inflight = max(0, u.inflight - 1)
        elif rep.state == "released" and not u.final and u.want > 0:
            # Late, but here: the replica its release asked for is not needed after all.
            u.want -= 1
        tally = tallies.setdefault(inc.worker, Tally())
        tally.results += 1
        error = self._error_of(inc.item)
        if error is not None:
            tally.errors += 1
            tally.events.append(False)
            if not u.final and not self._deterministic(inc, u, error, conn):
                ctx = self._contexts(conn, u.job_id)
                u.replace_replica(ctx.policy)
                u.fail_if_stuck(f"every replica failed or was lost; last error: {error}")
                u.derive_state()
            return row | {"state": "error", "error": error}
        if not rep.spot_check:
            u.results += 1
        policy = self._contexts(conn, u.job_id).policy
        if policy.compare != "exact" or policy.error_rate is not None:
            # Comparisons will read the bytes; and backtracking may make any result canonical.
            self._keep(inc.item.outputs or {}, u.job_id)
        outputs = strip_data(inc.item.outputs or {})
        return row | {"state": "returned", "error": None, "outputs": dumps(outputs)}

    def _deterministic(self, inc: Incoming, u: UnitRow, error: str, conn: Connection) -> bool:
        """Fails the unit (and its job, when every unit runs the same shader) on a confirmed
        deterministic error; True when it did.

        A worker only claims that its error is the shader's own (ResultItem.error_kind): a
        lying worker could otherwise fail anyone's unit with one message. The claim counts once
        CONFIRMATIONS distinct workers made it for the unit (by default on distinct client
        addresses, as two replicas of a unit never share one): honest workers agree at once,
        since compiling WGSL is specified, while one worker alone only spends its own error."""
        if inc.item.error_kind != DETERMINISTIC or not error.startswith(SHADER_ERROR_PREFIX):
            return False
        claims = self._claims.setdefault(u.id, [])
        claims.append((inc.worker, error))
        workers = {w for w, _ in claims}
        if len(workers) < CONFIRMATIONS:
            return False
        first = claims[0][1]
        why = (
            f"every replica failed the same way on {len(workers)} different workers: the "
            f"shader does not compile or validate, which no GPU and no retry can change; "
            f"fix the shader and submit again. {first}"
        )
        u.fail_now(why[:MAX_ERROR_TEXT])
        if u.job_id not in self._failed_jobs and units_q.shares_shader(conn, u.job_id):
            self._failed_jobs[u.job_id] = (
                f"not run: unit {u.idx} runs the same shader, which does not compile or "
                f"validate. {first}"
            )[:MAX_ERROR_TEXT]
        return True

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
        for name, o in item.outputs.items():
            need = prod(o.shape) * ITEMSIZE[o.dtype]
            have = len(o.data) if o.data is not None else self._blobs.size(o.digest)
            if have != need:
                return f"output {name!r} holds {have} bytes, but {o.dtype} {o.shape} needs {need}"
        return None

    def _validate(self, conn: Connection, u: UnitRow, b: _Batch, tallies: dict) -> bool:
        """Decides what it can about one unit; True when the unit now wants another replica."""
        ctx = self._contexts(conn, u.job_id)
        policy = ctx.policy
        reps = b.replicas.get(u.id, [])
        fresh = [Candidate(r[0], loads_outputs(r[3])) for r in reps if r[2] == "returned"]
        owner = {r[0]: r[1] for r in reps}
        if not fresh:
            return self._refill(u, policy) if u.id in self._rejudged and not u.final else False
        agree = make_comparator(policy, ctx.kernel, self._array)
        if u.state == "done":
            canon = loads_outputs(u.outputs or "{}")
            valid = [c.replica_id for c in fresh if agree(canon, c.outputs)]
            invalid = [c.replica_id for c in fresh if c.replica_id not in valid]
            self._judge(b, u, ctx, valid, invalid, owner, tallies)
            self._note(u, ctx, Candidate(-1, canon), fresh, set(valid), owner)
            for rid in invalid:
                if rid in b.spot_checks:
                    self._caught.setdefault(
                        owner[rid], f"failed a spot-check: unit {u.idx} of job {u.job_id}"
                    )
            return False
        verifiable = policy.quorum == 1 or policy.error_rate is not None
        if policy.verifier and verifiable and can_verify(ctx.kernel):
            return self._verify(b, u, ctx, fresh, owner, tallies)
        if policy.error_rate is not None:
            return self._by_credibility(b, u, ctx, fresh, owner, tallies, agree)
        if policy.replication == "adaptive" and self._alone_by_boinc(u, fresh, owner):
            self._settle(b, u, ctx, fresh[0], [fresh[0].replica_id], owner, tallies, "adaptive")
            return False
        verdict = check_set(fresh, policy.quorum, agree)
        if verdict.canonical is not None:
            canon = next(c for c in fresh if c.replica_id == verdict.canonical)
            self._settle(b, u, ctx, canon, verdict.valid, owner, tallies, "quorum")
            self._note(u, ctx, canon, fresh, set(verdict.valid), owner)
            return False
        if len(fresh) >= policy.quorum:
            self._note(u, ctx, None, fresh, set(), owner, agree)
        return self._ask_more(u, policy, len(fresh))

    def _settle(self, b, u, ctx, canon, valid, owner, tallies, by, value=None) -> None:  # type: ignore[no-untyped-def]
        """Accepts ``canon``: ``valid`` agreed with it, every other fresh result did not. A
        result confirms its worker only when another worker's result agreed with it."""
        fresh = [r[0] for r in b.replicas.get(u.id, []) if r[2] == "returned"]
        invalid = [rid for rid in fresh if rid not in valid]
        self._accept_canonical(u, canon, by, value)
        self._outcome.latencies.append(max(0.0, self._now - b.first_result.get(u.id, self._now)))
        witnesses = {self._witness(b, rid, owner) for rid in valid}
        self._judge(b, u, ctx, valid, invalid, owner, tallies, confirmed=len(witnesses) > 1)

    def _witness(self, b: _Batch, rid: int, owner: dict[int, str]) -> str:
        """Who a result counts as: its address when addresses are capped, else its worker."""
        return b.addresses.get(rid, "") if self._per_address else owner[rid]

    def _by_credibility(self, b, u, ctx, fresh, owner, tallies, agree) -> bool:  # type: ignore[no-untyped-def]
        """Sarmenta's credibility-based acceptance (coordinator/credibility.py)."""
        policy, f = ctx.policy, self._trust.saboteur_bound
        groups: list[list[Candidate]] = []
        for c in fresh:
            home = next((g for g in groups if agree(g[0].outputs, c.outputs)), None)
            if home is None:
                groups.append([c])
            else:
                home.append(c)
        if len(groups) > 1 and self._by_reference(
            self._conn, b, u, ctx, fresh, owner, tallies, agree
        ):
            return False
        bad = [self._group_bad(b, g, owner, f) for g in groups]
        values = cred.group_credibilities(bad)
        best = max(range(len(groups)), key=lambda i: (values[i], -i))
        if len(groups) > 1:
            self._note(u, ctx, None, fresh, set(), owner, agree)
        if values[best] >= 1.0 - policy.error_rate:
            alone = len(fresh) == 1
            if alone and self._rng.random() < self._trust.resample_rate and self._refill(u, policy):
                return True  # a trusted worker is still checked now and then (sleepers)
            group = groups[best]
            valid = [c.replica_id for c in group]
            self._settle(b, u, ctx, group[0], valid, owner, tallies, "credibility", values[best])
            return False
        asked = self._refill(u, policy)
        u.fail_if_stuck(
            f"no group of agreeing results reached credibility {1 - policy.error_rate:.6g} "
            f"within max_replicas={policy.max_replicas} (best: {values[best]:.6g}, "
            f"{len(groups)} disagreeing group(s))"
        )
        u.derive_state()
        return asked

    def _by_reference(self, conn, b, u, ctx, fresh, owner, tallies, agree) -> bool:  # type: ignore[no-untyped-def]
        """Results that disagree mean someone is wrong: where the kernel's reference is cheap,
        the coordinator computes the unit itself, accepts that, and every worker whose result
        differs from it has failed a spot-check (a known answer, known after the fact)."""
        params, refs = b.spec(u.id, ctx)
        answer = self._validator.reference(conn, ctx, params, refs)
        if answer is None:
            return False
        outputs, data = answer
        self._inline.update(data)  # the comparator reads them before they are stored
        self._kept.update(data)
        results_q.reference_outputs(conn, {(d, u.job_id) for d in data})
        valid = [c.replica_id for c in fresh if agree(outputs, c.outputs)]
        invalid = [c.replica_id for c in fresh if c.replica_id not in valid]
        u.accept(None, dumps(outputs), "reference", 1.0)
        self._outcome.latencies.append(max(0.0, self._now - b.first_result.get(u.id, self._now)))
        self._judge(b, u, ctx, valid, invalid, owner, tallies, confirmed=len(valid) > 1)
        self._note(u, ctx, Candidate(-1, outputs), fresh, set(valid), owner)
        for rid in invalid:
            tallies.setdefault(owner[rid], Tally()).checks_failed += 1
            self._caught.setdefault(
                owner[rid],
                f"failed a spot-check: unit {u.idx} of job {u.job_id} differs from "
                "the kernel's reference answer",
            )
        return True

    def _group_bad(
        self, b: _Batch, group: list[Candidate], owner: dict[int, str], f: float
    ) -> float:
        """The chance that the group is wrong: members at one address count once (the best of
        them), and spot-checks alongside a unit's replicas count as members too."""
        best: dict[str, int] = {}
        for c in group:
            wid = owner[c.replica_id]
            k = self._evidence.get(wid, trust_q.Evidence(0, 0)).k
            who = self._witness(b, c.replica_id, owner)
            best[who] = max(best.get(who, 0), k)
        return cred.group_bad(len(best), sum(best.values()), f)

    def _alone_by_boinc(self, u: UnitRow, fresh: list[Candidate], owner: dict[int, str]) -> bool:
        """BOINC's adaptive replication (sched_send.cpp set_trust): a host with at least 10
        consecutive confirmed results is trusted alone with probability 1 - 1/streak."""
        if len(fresh) != 1 or u.issued != 1:
            return False
        streak = self._evidence.get(owner[fresh[0].replica_id], trust_q.Evidence(0, 0)).streak
        return streak >= 10 and self._rng.random() < 1.0 - 1.0 / streak

    def _refill(self, u: UnitRow, policy: Policy) -> bool:
        """One more replica when none is on its way; False when max_replicas forbids it."""
        if u.inflight + u.want > 0:
            return False
        asked = u.replace_replica(policy)
        u.derive_state()
        return asked

    def _load_evidence(self, conn: Connection, b: _Batch) -> None:
        workers = sorted({r[1] for rows in b.replicas.values() for r in rows})
        self._evidence = trust_q.evidence(conn, workers) if workers else {}

    def _note(self, u, ctx, canon, fresh, valid, owner, agree=None) -> None:  # type: ignore[no-untyped-def]
        """Adds a disagreement to the feed when some of ``fresh`` disagree with ``canon`` (or,
        with no canonical result yet, with the first of them, judged by ``agree``)."""
        odd = [c for c in fresh if c.replica_id not in valid and c is not canon]
        if canon is None:
            canon = fresh[0]
            odd = [c for c in fresh[1:] if not agree(canon.outputs, c.outputs)]
        if not odd:
            return
        lines = [f"worker {owner[c.replica_id][:8]}: {self._how(canon, c)}" for c in odd]
        against = "the canonical result" if u.state == "done" else "the first result"
        state = {c.replica_id: "valid" if c.replica_id in valid else "invalid" for c in fresh}
        if u.state != "done":
            state = dict.fromkeys(state, "undecided")
        replicas = [
            {
                "replica": c.replica_id,
                "worker": owner.get(c.replica_id, ""),
                "state": state.get(c.replica_id, "canonical"),
                "digest": next(iter(c.outputs.values())).digest if c.outputs else "",
            }
            for c in ([canon] if canon.replica_id not in state else []) + fresh
            if c.replica_id >= 0
        ]
        self._disagreements.append(
            {
                "at": self._now,
                "job_id": u.job_id,
                "unit_id": u.id,
                "idx": u.idx,
                "kernel": ctx.kernel.NAME,
                "summary": f"{len(odd)} of {len(fresh)} results differ from {against}: "
                + "; ".join(lines),
                "replicas": replicas,
            }
        )

    def _how(self, reference: Candidate, other: Candidate) -> str:
        """How ``other``'s outputs differ from ``reference``'s, element by element when both
        are at hand; by digest when not (under exact comparison only canonical bytes stay)."""
        try:
            if _elements(reference.outputs) + _elements(other.outputs) > MAX_DESCRIBED:
                raise ValueError("too large to compare element by element here")
            return describe_difference(self._arrays(reference.outputs), self._arrays(other.outputs))
        except Exception:  # noqa: BLE001 - the feed must not fail a batch
            a, b = reference.outputs, other.outputs
            differ = [n for n in sorted(set(a) | set(b)) if n not in a or n not in b
                      or a[n].digest != b[n].digest]  # fmt: skip
            return (
                "; ".join(
                    f"{n}: different bytes (sha256 {a[n].digest[:8] if n in a else '-'} "
                    f"vs {b[n].digest[:8] if n in b else '-'})"
                    for n in differ
                )
                or "same bytes, judged different by the comparator"
            )

    def _arrays(self, outputs: dict[str, Output]) -> dict[str, Any]:
        return {k: self._array(o) for k, o in outputs.items()}

    def _verify(self, b, u, ctx, fresh, owner, tallies) -> bool:  # type: ignore[no-untyped-def]
        params, refs = b.spec(u.id, ctx)
        inputs = {k: self._array_ref(ref) for k, ref in refs.items()}
        invalid = []
        for cand in fresh:
            outs = {k: self._array(o) for k, o in cand.outputs.items()}
            if verify_single(ctx.kernel, params, inputs, outs):
                self._accept_canonical(u, cand, "verifier", 1.0)
                self._outcome.latencies.append(0.0)
                rest = [c.replica_id for c in fresh if c is not cand]
                self._judge(b, u, ctx, [cand.replica_id], invalid + rest, owner, tallies)
                return False
            invalid.append(cand.replica_id)
        self._judge(b, u, ctx, [], invalid, owner, tallies)
        u.results -= len(invalid)
        return self._ask_more(u, ctx.policy, 0)

    def _ask_more(self, u: UnitRow, policy: Policy, undecided: int) -> bool:
        """BOINC adds one replica when quorum-many results disagree; and refills lost ones."""
        quorum = 1 if policy.error_rate is not None else policy.quorum
        potential = undecided + u.inflight + u.want
        wanted = max(quorum - potential, 1 if u.inflight + u.want == 0 else 0)
        asked = any([u.replace_replica(policy) for _ in range(wanted)])
        u.fail_if_stuck(
            f"no {policy.quorum} results agreed within max_replicas={policy.max_replicas}"
        )
        u.derive_state()
        return asked

    def _accept_canonical(
        self, u: UnitRow, canon: Candidate, by: str, value: float | None = None
    ) -> None:
        # Under exact comparison only the canonical bytes are stored: an agreeing result in this
        # batch carried them (same digest), or they were uploaded as a blob.
        self._keep(canon.outputs, u.job_id)
        u.accept(canon.replica_id, dumps(canon.outputs), by, value)

    def _judge(self, b, u, ctx, valid, invalid, owner, tallies, confirmed=True) -> None:  # type: ignore[no-untyped-def]
        """Verdicts on replicas, and what they do to their workers' standing: a spot-check
        passed, a confirmed result (extends the streak), an invalid one (ends it)."""
        b.valid += valid
        b.invalid += invalid
        gflop = 0.0
        if valid:
            params, refs = b.spec(u.id, ctx)
            shapes = {k: (r.dtype, tuple(r.shape)) for k, r in refs.items()}
            gflop = credit(ctx.kernel, params, shapes)
        for rid in valid:
            t = tallies.setdefault(owner[rid], Tally())
            t.valid += 1
            t.credit += gflop
            if rid in b.spot_checks:
                t.checks_passed += 1
            elif confirmed:
                t.events.append(True)
        for rid in invalid:
            t = tallies.setdefault(owner[rid], Tally())
            t.invalid += 1
            t.events.append(False)
            if rid in b.spot_checks:
                t.checks_failed += 1

    def _keep(self, outputs: dict[str, Output], job_id: int) -> None:
        for o in outputs.values():
            data = self._inline.get(o.digest)
            if data is not None:
                self._kept[o.digest] = data
                self._kept_refs.add((o.digest, job_id))

    def _store_kept(self, conn: Connection, uploaded: set[tuple[str, int]]) -> None:
        """The inline outputs kept, as blob rows that belong to their jobs (so that retiring a
        job frees them), and the uploaded outputs' belonging too."""
        blob_rows.keep(conn, self._kept, self._now)
        results_q.reference_outputs(conn, uploaded | self._kept_refs)

    def _array(self, o: Output) -> Any:
        return self._load(o.digest, o.dtype, o.shape)

    def _array_ref(self, ref: BlobRef) -> Any:
        return self._load(ref.digest, ref.dtype, ref.shape)

    def _load(self, digest: str, dtype: str, shape: list[int]) -> Any:
        import numpy as np

        data = self._inline.get(digest)
        if data is None:
            return read_array(self._conn, self._blobs, digest, dtype, shape)
        return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


@dataclass
class _Batch:
    """What validating a batch of units reads, in one query each, and the verdicts it writes."""

    replicas: dict[int, list]  # unit -> [replica, worker, state, outputs] in return order
    specs: dict[int, tuple[str, str]]
    first_result: dict[int, float] = field(default_factory=dict)
    addresses: dict[int, str] = field(default_factory=dict)  # replica -> client address
    spot_checks: set[int] = field(default_factory=set)
    valid: list[int] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)

    @classmethod
    def load(
        cls,
        conn: Connection,
        unit_ids: list[int],
        specs: dict[int, tuple[str, str]],
        accepted: list[tuple[Incoming, Held]],
        updates: dict[int, dict],
        now: float,
    ) -> _Batch:
        """Each unit's results in return order: those stored before, then this batch's (not
        written yet), ordered as `ORDER BY returned_at, id` would order them once written."""
        keyed: dict[int, list] = {}
        addresses: dict[int, str] = {}
        spot: set[int] = set()
        if unit_ids:
            for r in results_q.deciding(conn, unit_ids):
                at = -math.inf if r.returned_at is None else r.returned_at
                keyed.setdefault(r.unit_id, []).append(
                    (at, r.id, [r.id, r.worker_id, r.state, r.outputs])
                )
                addresses[r.id] = r.client_addr
                if r.spot_check:
                    spot.add(r.id)
            wanted = set(unit_ids)
            for inc, rep in accepted:
                row = updates[rep.id]
                if row["state"] == "returned" and rep.unit_id in wanted:
                    at = row["returned_at"]
                    item = (at, rep.id, [rep.id, inc.worker, "returned", row["outputs"]])
                    keyed.setdefault(rep.unit_id, []).append(item)
                    addresses[rep.id] = rep.client_addr
                    if rep.spot_check:
                        spot.add(rep.id)
        replicas = {
            uid: [r for _, _, r in sorted(rows, key=_by_return)] for uid, rows in keyed.items()
        }
        first = {uid: min(at for at, _, _ in rows) for uid, rows in keyed.items()}
        return cls(replicas, specs, first, addresses, spot)

    def spec(self, unit_id: int, ctx: JobContext) -> tuple[dict, dict[str, BlobRef]]:
        """The unit's merged params and inputs: the job's, overridden by the unit's own."""
        params, inputs = self.specs[unit_id]
        return ctx.params | loads(params), ctx.inputs | loads_inputs(inputs)

    def flush(self, conn: Connection, updates: dict[int, dict]) -> None:
        """Verdicts on this batch's replicas go into their pending rows; the rest are stored."""
        for state, ids in (("valid", self.valid), ("invalid", self.invalid)):
            stored = []
            for rid in ids:
                row = updates.get(rid)
                if row is None:
                    stored.append(rid)
                else:
                    row["state"] = state
            results_q.judge(conn, stored, state)


def _by_return(item: tuple) -> tuple[float, int]:
    return item[0], item[1]


def _elements(outputs: dict[str, Output]) -> int:
    return sum(prod(o.shape) for o in outputs.values())
