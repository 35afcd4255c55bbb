"""One batch of results recorded in the caller's transaction: which results count, each
replica's row, errors (a shader's confirmed before it fails anything), the verdicts
(verdicts.py), credit, and backtracking when a spot-check caught a worker."""

from __future__ import annotations

from math import prod

from sqlalchemy import Connection

from tabgrid.blobs import BlobStore
from tabgrid.coordinator.batch import Batch, Incoming, Outcome, OutputBytes
from tabgrid.coordinator.disagreement_feed import Feed
from tabgrid.coordinator.verdicts import JudgingSetup, Verdicts
from tabgrid.protocol import Output, ResultItem
from tabgrid.runtime.array import ITEMSIZE
from tabgrid.runtime.errors import DETERMINISTIC
from tabgrid.store import bans, disagreements, standing
from tabgrid.store import results as results_q
from tabgrid.store import trust as trust_q
from tabgrid.store import units as units_q
from tabgrid.store.codec import dumps, loads_outputs, strip_data
from tabgrid.store.leases import finish_units, load_units_and_specs, save_units
from tabgrid.store.results import Held
from tabgrid.store.standing import Tally, tally_of
from tabgrid.store.units import UnitRow

MAX_ERROR_TEXT = 2000
# How a worker's shader error reads (worker/results.py, runtime/browser.py: the exception's
# class name first): a stored error result that claimed to be deterministic.
SHADER_ERROR_PREFIX = "ShaderError: "
# Distinct workers that must report a deterministic error before it fails a unit: one worker's
# word could fail anyone's unit; two are two distinct client addresses by default.
CONFIRMATIONS = 2
ARRIVAL_STEP_S = 1e-6  # between the returned_at of consecutive results of one tick


class Round:
    """One batch of results being recorded: its connection, its inline bytes, its verdicts."""

    def __init__(
        self,
        conn: Connection,
        now: float,
        blobs: BlobStore,
        setup: JudgingSetup,
    ) -> None:
        self._contexts = setup.contexts
        self._blobs = blobs
        self._conn = conn
        self._now = now
        self._outcome = Outcome()
        self._outputs = OutputBytes(conn, blobs, now)
        self._feed = Feed(now, self._outputs.array)
        self._verdicts = Verdicts(conn, now, setup, self._outcome, self._outputs, self._feed)
        # Deterministic error claims per unit: (worker, text), stored ones and this batch's.
        self._claims: dict[int, list[tuple[str, str]]] = {}
        self._failed_jobs: dict[int, str] = {}  # job -> why, when a shader error fails it
        self._parsed: dict[int, dict[str, Output]] = {}  # replica -> its outputs, as stored

    def record(self, batch: list[Incoming], banned: frozenset[str], defer_jobs: bool) -> Outcome:
        conn, now, out = self._conn, self._now, self._outcome
        ended = out.ended if defer_jobs else None
        self._outputs.inline = {
            o.digest: o.data
            for inc in batch
            for o in (inc.item.outputs or {}).values()
            if o.data is not None
        }
        accepted = self._accept(conn, batch, out, banned)
        if not accepted:
            return out
        loaded, specs = load_units_and_specs(conn, {rep.unit_id for _, rep in accepted})
        accepted = self._once_per_unit(conn, accepted, out)
        units = {u.id: u for u in loaded}
        claiming = {rep.unit_id for inc, rep in accepted if inc.item.error_kind == DETERMINISTIC}
        if claiming:
            self._claims = {
                uid: [(w, e) for w, e in found if e.startswith(SHADER_ERROR_PREFIX)]
                for uid, found in units_q.reported_errors(conn, claiming).items()
            }
        tallies: dict[str, Tally] = {}
        updates = {rep.id: self._apply(inc, rep, units, tallies, conn) for inc, rep in accepted}
        for i, row in enumerate(updates.values()):  # a tick's results keep their arrival order
            row["returned_at"] = now + i * ARRIVAL_STEP_S
        # Uploaded outputs belong to the job at once; inline ones once kept (below).
        uploaded = {
            (o.digest, rep.job_id)
            for inc, rep in accepted
            for o in (inc.item.outputs or {}).values()
            if o.data is None
        }
        todo = [u for u in units.values() if not u.final or u.loaded_state == "done"]
        batch_ = Batch.load(conn, [u.id for u in todo], specs, accepted, updates, self._parsed, now)
        self._verdicts.load_evidence(conn, batch_)
        for u in todo:
            out.new_work |= self._verdicts.validate(conn, u, batch_, tallies)
        # Each replica of the batch is written once, verdict included; earlier ones are judged.
        batch_.flush(conn, updates)
        results_q.save_replicas(conn, list(updates.values()), now)
        self._outputs.store(conn, uploaded)
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
        if self._verdicts.caught:
            self._backtrack(conn, tallies)
        out.stats = standing.credit(conn, tallies, now)
        trust_q.record_checks(
            conn,
            {w: t.checks_passed for w, t in tallies.items() if t.checks_passed},
            {w: t.checks_failed for w, t in tallies.items() if t.checks_failed},
        )
        disagreements.record(conn, self._feed.entries)
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
        b = Batch.load(conn, [u.id for u in todo], specs, [], {}, {}, self._now)
        self._verdicts.load_evidence(conn, b)
        tallies: dict[str, Tally] = {}
        for u in todo:
            out.new_work |= self._verdicts.validate(conn, u, b, tallies)
        b.flush(conn, {})
        save_units(conn, loaded, self._now)
        if self._verdicts.caught:
            self._backtrack(conn, tallies)
        out.stats = standing.credit(conn, tallies, self._now)
        out.units_done = sum(1 for u in todo if u.state == "done")
        self._outputs.store(conn, set())
        disagreements.record(conn, self._feed.entries)
        return out

    def _backtrack(self, conn: Connection, tallies: dict[str, Tally]) -> None:
        """Sarmenta's backtracking, in this transaction: a worker a spot-check caught is banned
        and every result it gave is taken back; each unit they belonged to is judged again on
        the results that remain. An accepted unit whose acceptance rested on the worker opens
        again (its revision goes up, a finished job runs again); one that still stands without
        it stays as it was."""
        now, out = self._now, self._outcome
        touched: set[int] = set()
        for wid, why in self._verdicts.caught.items():
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
        before = {u.id: _outputs_of(u.outputs) for u in loaded if u.id in set(done)}
        # A small canonical output's bytes live only in its unit's row, which reopening clears:
        # the unit accepted again on the same answer keeps them.
        for outputs in before.values():
            self._outputs.inline.update(
                {o.digest: o.data for o in outputs.values() if o.data is not None}
            )
        for u in loaded:
            if u.id in before:
                u.reopen(standing_now.get(u.id, 0))
            elif not u.final:
                u.results = standing_now.get(u.id, 0)
        todo = [u for u in loaded if not u.final]
        self._verdicts.rejudged = {u.id for u in todo}
        b = Batch.load(conn, [u.id for u in todo], specs, [], {}, {}, now)
        self._verdicts.load_evidence(conn, b)
        again: dict[str, Tally] = {}  # verdicts given before: not credited twice
        for u in todo:
            out.new_work |= self._verdicts.validate(conn, u, b, again)
        b.flush(conn, {})
        for u in loaded:
            if u.id in before and (u.state != "done" or not _same(u.outputs, before[u.id])):
                u.revision += 1
                out.reopened += 1
        save_units(conn, loaded, now)

    def _accept(
        self, conn: Connection, batch: list[Incoming], out: Outcome, banned: frozenset[str]
    ) -> list[tuple[Incoming, Held]]:
        reps = results_q.held(conn, [inc.item.lease for inc in batch])
        # Read again with their replicas locked: a ban through another coordinator that
        # committed after this tick looked (and released those leases) is seen now.
        senders = sorted({inc.worker for inc in batch} - banned)
        if senders:
            stopped = bans.stopped(conn, senders)
            out.banned |= {w for w, why in stopped.items() if why == "banned"}
            banned = banned | out.banned
        accepted, seen = [], set()
        for inc in batch:
            rep = reps.get(inc.item.lease)
            if inc.worker in banned:
                out.rejected.append((inc.worker, "this worker is banned: its results do not count"))
            elif rep is None or rep.worker_id != inc.worker:
                out.rejected.append((inc.worker, f"lease {inc.item.lease} is not held by you"))
            elif rep.state not in ("leased", "released") or rep.id in seen or _had_result(rep):
                # A copy sent again (its acknowledgement was lost): the first one counts.
                out.duplicates += 1
            else:
                seen.add(rep.id)
                accepted.append((inc, rep))
        return accepted

    def _once_per_unit(
        self, conn: Connection, accepted: list[tuple[Incoming, Held]], out: Outcome
    ) -> list[tuple[Incoming, Held]]:
        """A worker's results count once per unit. A released lease's late result is refused
        when the unit went to the same worker again (its other lease is live, or returned) or
        when this batch takes another of its leases of the unit. Read with the units locked:
        two coordinators taking two released leases of one unit from one worker at once then
        take turns, and the second sees the first's result."""
        released = [rep for _, rep in accepted if rep.state == "released"]
        if not released:
            return accepted
        live = results_q.live_pairs(conn, released)
        kept, taken = [], set()
        for inc, rep in accepted:
            pair = (rep.unit_id, inc.worker)
            if rep.state == "released" and (pair in live or pair in taken):
                out.rejected.append((inc.worker, f"lease {inc.item.lease} was released"))
            else:
                kept.append((inc, rep))
                taken.add(pair)
        return kept

    def _apply(
        self, inc: Incoming, rep: Held, units: dict[int, UnitRow], tallies: dict, conn: Connection
    ) -> dict:
        u = units[rep.unit_id]
        row = {"b_id": rep.id, "elapsed_ms": inc.item.elapsed_ms, "outputs": None, "error": None}
        if rep.state == "released" and u.final and inc.item.error is not None:
            # Called back (its job failed or was cancelled) while it ran: the error is the call
            # back's (a blob no longer served, say), not the worker's. Nothing counts.
            row["state"] = "released"
            return row
        if rep.state == "leased" and not u.final:
            u.inflight = max(0, u.inflight - 1)
        elif rep.state == "released" and not u.final and u.want > 0:
            # Late, but here: the replica its release asked for is not needed after all.
            u.want -= 1
        tally = tally_of(tallies, inc.worker)
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
            row["state"], row["error"] = "error", error
            return row
        if not rep.spot_check:
            u.results += 1
        policy = self._contexts(conn, u.job_id).policy
        if policy.compare != "exact" or policy.error_rate is not None:
            # Comparisons will read the bytes; and backtracking may make any result canonical.
            self._outputs.keep(inc.item.outputs or {}, u.job_id)
        outputs = self._parsed[rep.id] = strip_data(inc.item.outputs or {})
        row["state"], row["outputs"] = "returned", dumps(outputs)
        return row

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


def _outputs_of(text: str | None) -> dict[str, Output]:
    return loads_outputs(text) if text else {}


def _same(text: str | None, outputs: dict[str, Output]) -> bool:
    """The same answer, whether or not either side carries its bytes."""
    return strip_data(_outputs_of(text)) == strip_data(outputs)


def _had_result(rep: Held) -> bool:
    """A released lease whose result came before its release (a retry of its failed unit
    released it): the unit goes out again under a new lease, and this one is done."""
    return rep.state == "released" and rep.returned_at is not None
