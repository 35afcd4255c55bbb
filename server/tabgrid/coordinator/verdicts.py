"""The verdict rules: what a unit's results come to under its job's policy (BOINC's quorum,
adaptive replication, Sarmenta's credibility, verifiers, the kernel's reference), and what
each verdict does to its workers' standing."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from tabgrid.coordinator import credibility as cred
from tabgrid.coordinator.batch import Batch, Outcome, OutputBytes
from tabgrid.coordinator.disagreement_feed import Feed
from tabgrid.coordinator.job_context import JobContext
from tabgrid.coordinator.rules import (
    Candidate,
    can_verify,
    check_set,
    credit,
    make_comparator,
    verify_single,
)
from tabgrid.protocol import BlobRef, Output, Policy
from tabgrid.store import results as results_q
from tabgrid.store import trust as trust_q
from tabgrid.store.codec import dumps, loads_outputs
from tabgrid.store.standing import tally_of
from tabgrid.store.units import UnitRow

# The unit's answer from the kernel's reference, or None (Validator.reference).
Reference = Callable[
    [Connection, JobContext, dict, dict[str, BlobRef]],
    tuple[dict[str, Output], dict[str, bytes]] | None,
]


@dataclass(frozen=True)
class JudgingSetup:
    """What verdicts lean on beyond one batch, as the Validator holds it: each job's context,
    the trust model, the randomness of resampling, the per-address cap, reference answers,
    and whether a quorum counts addresses (as replicas are leased) or workers."""

    contexts: Callable[[Connection, int], JobContext]
    trust: cred.Trust
    rng: random.Random
    per_address: int
    reference: Reference
    distinct_addresses: bool = True


class Verdicts:
    """Judges one batch's units: each verdict goes into the batch (Batch.valid, .invalid), its
    workers' tallies, the outcome and the feed; workers a spot-check caught into ``caught``."""

    def __init__(
        self,
        conn: Connection,
        now: float,
        setup: JudgingSetup,
        outcome: Outcome,
        outputs: OutputBytes,
        feed: Feed,
    ) -> None:
        self._conn = conn
        self._now = now
        self._contexts = setup.contexts
        self._trust = setup.trust
        self._rng = setup.rng
        self._per_address = setup.per_address
        self._reference = setup.reference
        self._distinct_addresses = setup.distinct_addresses
        self._outcome = outcome
        self._outputs = outputs
        self._feed = feed
        self._evidence: dict[str, trust_q.Evidence] = {}
        self.caught: dict[str, str] = {}
        self.rejudged: set[int] = set()  # units backtracking judges again

    def load_evidence(self, conn: Connection, b: Batch) -> None:
        workers = sorted({r[1] for rows in b.replicas.values() for r in rows})
        self._evidence = trust_q.evidence(conn, workers) if workers else {}

    def validate(self, conn: Connection, u: UnitRow, b: Batch, tallies: dict) -> bool:
        """Decides what it can about one unit; True when the unit now wants another replica."""
        ctx = self._contexts(conn, u.job_id)
        policy = ctx.policy
        reps = b.replicas.get(u.id, [])
        fresh = [Candidate(r[0], b.outputs(r[3])) for r in reps if r[2] == "returned"]
        owner = {r[0]: r[1] for r in reps}
        if not fresh:
            return self._refill(u, policy) if u.id in self.rejudged and not u.final else False
        agree = make_comparator(policy, ctx.kernel, self._outputs.array)
        if u.state == "done":
            canon = loads_outputs(u.outputs or "{}")
            valid = [c.replica_id for c in fresh if agree(canon, c.outputs)]
            invalid = [c.replica_id for c in fresh if c.replica_id not in valid]
            self._judge(b, u, ctx, valid, invalid, owner, tallies)
            self._feed.note(u, ctx, Candidate(-1, canon), fresh, set(valid), owner)
            for rid in invalid:
                if rid in b.spot_checks:
                    self.caught.setdefault(
                        owner[rid], f"failed a spot-check: unit {u.idx} of job {u.job_id}"
                    )
            return False
        verifiable = policy.quorum == 1 or policy.error_rate is not None
        if policy.verifier and verifiable and can_verify(ctx.kernel):
            return self._verify(b, u, ctx, fresh, owner, tallies)
        if policy.error_rate is not None:
            return self._by_credibility(b, u, ctx, fresh, owner, tallies, agree)
        if policy.replication == "adaptive" and self._alone_by_boinc(u, fresh, owner):
            if not self._outputs.at_hand(fresh[0].outputs):
                return self._ask_more(u, policy, len(fresh))
            self._settle(b, u, ctx, fresh[0], [fresh[0].replica_id], owner, tallies, "adaptive")
            return False
        # Who a result counts as in a quorum: its address where replicas of a unit go to
        # distinct addresses, else its worker (every replica has both).
        witness = (b.addresses if self._distinct_addresses else owner).get
        verdict = check_set(fresh, policy.quorum, agree, witness)
        if verdict.canonical is not None:
            canon = next(c for c in fresh if c.replica_id == verdict.canonical)
            if not self._outputs.at_hand(canon.outputs):
                # Accepted, the unit would name bytes nobody has: one more result brings them.
                return self._ask_more(u, policy, len(fresh))
            self._settle(b, u, ctx, canon, verdict.valid, owner, tallies, "quorum")
            self._feed.note(u, ctx, canon, fresh, set(verdict.valid), owner)
            return False
        witnesses = len({witness(c.replica_id) for c in fresh})
        if witnesses >= policy.quorum:
            self._feed.note(u, ctx, None, fresh, set(), owner, agree)
        return self._ask_more(u, policy, witnesses)

    def _settle(self, b, u, ctx, canon, valid, owner, tallies, by, value=None) -> None:  # type: ignore[no-untyped-def]
        """Accepts ``canon``: ``valid`` agreed with it, every other fresh result did not. A
        result confirms its worker only when another worker's result agreed with it."""
        fresh = [r[0] for r in b.replicas.get(u.id, []) if r[2] == "returned"]
        invalid = [rid for rid in fresh if rid not in valid]
        self._accept_canonical(u, canon, by, value)
        self._outcome.latencies.append(max(0.0, self._now - b.first_result.get(u.id, self._now)))
        witness = self._witness_of(b, owner)
        witnesses = {witness(rid) for rid in valid}
        self._judge(b, u, ctx, valid, invalid, owner, tallies, confirmed=len(witnesses) > 1)

    def _witness_of(self, b: Batch, owner: dict[int, str]) -> Callable[[int], str | None]:
        """Who a result (by replica id) counts as: its address when addresses are capped, else
        its worker (every replica has both)."""
        return (b.addresses if self._per_address else owner).get

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
            self._feed.note(u, ctx, None, fresh, set(), owner, agree)
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
        answer = self._reference(conn, ctx, params, refs)
        if answer is None:
            return False
        outputs, data = answer
        self._outputs.inline.update(data)  # the comparator reads them before they are stored
        self._outputs.kept.update(data)
        results_q.reference_outputs(conn, {(d, u.job_id) for d in data})
        valid = [c.replica_id for c in fresh if agree(outputs, c.outputs)]
        invalid = [c.replica_id for c in fresh if c.replica_id not in valid]
        u.accept(None, dumps(outputs), "reference", 1.0)
        self._outcome.latencies.append(max(0.0, self._now - b.first_result.get(u.id, self._now)))
        self._judge(b, u, ctx, valid, invalid, owner, tallies, confirmed=len(valid) > 1)
        self._feed.note(u, ctx, Candidate(-1, outputs), fresh, set(valid), owner)
        for rid in invalid:
            tally_of(tallies, owner[rid]).checks_failed += 1
            self.caught.setdefault(
                owner[rid],
                f"failed a spot-check: unit {u.idx} of job {u.job_id} differs from "
                "the kernel's reference answer",
            )
        return True

    def _group_bad(
        self, b: Batch, group: list[Candidate], owner: dict[int, str], f: float
    ) -> float:
        """The chance that the group is wrong: members at one address count once (the best of
        them), and spot-checks alongside a unit's replicas count as members too."""
        best: dict[str | None, int] = {}
        witness = self._witness_of(b, owner)
        for c in group:
            wid = owner[c.replica_id]
            k = self._evidence.get(wid, trust_q.Evidence(0, 0)).k
            who = witness(c.replica_id)
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

    def _verify(self, b, u, ctx, fresh, owner, tallies) -> bool:  # type: ignore[no-untyped-def]
        params, refs = b.spec(u.id, ctx)
        inputs = {k: self._outputs.array_ref(ref) for k, ref in refs.items()}
        invalid = []
        for cand in fresh:
            outs = {k: self._outputs.array(o) for k, o in cand.outputs.items()}
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
        outputs = self._outputs.canonical(canon.outputs, u.job_id)
        u.accept(canon.replica_id, dumps(outputs), by, value)

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
            t = tally_of(tallies, owner[rid])
            t.valid += 1
            t.credit += gflop
            if rid in b.spot_checks:
                t.checks_passed += 1
            elif confirmed:
                t.events.append(True)
        for rid in invalid:
            t = tally_of(tallies, owner[rid])
            t.invalid += 1
            t.events.append(False)
            if rid in b.spot_checks:
                t.checks_failed += 1
