"""Results coming back: recorded, judged by quorum or verifier, credited, in the caller's
transaction. The policy is here; every statement it issues is in the store.

The Validator is the entry point; one batch's recording is recording.py, the verdict rules
verdicts.py, what a batch reads and writes batch.py, the disagreement feed
disagreement_feed.py, the kernel's reference answers reference_answers.py, and each job's
context job_context.py."""

from __future__ import annotations

import random

from sqlalchemy import Connection

from tabgrid.blobs import BlobStore
from tabgrid.coordinator import credibility as cred
from tabgrid.coordinator import reference_answers
from tabgrid.coordinator.batch import Incoming, Outcome
from tabgrid.coordinator.job_context import ContextLoader, JobContext, job_key, load_context
from tabgrid.coordinator.recording import Round
from tabgrid.coordinator.reference_answers import read_array
from tabgrid.coordinator.verdicts import JudgingSetup
from tabgrid.protocol import BlobRef, Output
from tabgrid.store import blob_rows
from tabgrid.store import results as results_q
from tabgrid.store import trust as trust_q
from tabgrid.store.codec import dumps, loads, loads_inputs
from tabgrid.store.leases import load_units_and_specs, save_units

__all__ = [
    "ContextLoader",
    "Incoming",
    "JobContext",
    "Outcome",
    "Validator",
    "job_key",
    "load_context",
    "read_array",
]


class Validator:
    """Decides verdicts on results, above the store: quorum (BOINC's check_set), verifiers,
    late results against the canonical one. Holds what outlives a batch: each job's context,
    loaded once, and the blob store; each batch is a `Round` of its own (recording.py)."""

    def __init__(
        self,
        blobs: BlobStore,
        load: ContextLoader | None = None,
        trust: cred.Trust | None = None,
        rng: random.Random | None = None,
        per_address: int = 1,
        distinct_addresses: bool = True,
    ) -> None:
        self._blobs = blobs
        self._load = load or load_context
        self._contexts: dict[int, JobContext] = {}
        self.trust = trust or cred.Trust()
        # Which units are resampled and which leases are spot-checks must be unpredictable.
        self.rng = rng or random.SystemRandom()
        self.per_address = per_address  # workers of one address that count in a group (0: all)
        # A quorum's witnesses are addresses (as replicas are leased), else workers.
        self.distinct_addresses = distinct_addresses

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
        return self._round(conn, now).record(batch, banned, defer_jobs)

    def reconsider(self, conn: Connection, unit_ids: list[int], now: float) -> Outcome:
        return self._round(conn, now).reconsider(unit_ids)

    def _round(self, conn: Connection, now: float) -> Round:
        # Read at each batch: a caller may replace any of them (a test, a benchmark).
        setup = JudgingSetup(
            self.context,
            self.trust,
            self.rng,
            self.per_address,
            self.reference,
            self.distinct_addresses,
        )
        return Round(conn, now, self._blobs, setup)

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
        """The unit's answer from the kernel's reference (reference_answers.compute)."""
        return reference_answers.compute(conn, self._blobs, ctx, params, refs)
