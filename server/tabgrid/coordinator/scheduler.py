"""Replicas, leases, deadlines and flow control: the loop between the gateway and the store.

One loop ticks whenever there is something to do. Each tick runs ONE transaction that records
every result that came in since the last tick and claims units for every worker with free
slots, so the database commits once per tick, not once per message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
from sqlalchemy import Connection

from tabgrid.blobs import BlobStore, digest_of
from tabgrid.coordinator import credibility as cred
from tabgrid.coordinator.telemetry import Telemetry
from tabgrid.coordinator.validator import Incoming, Outcome, Validator
from tabgrid.protocol import (
    BANNED,
    Ack,
    Cancel,
    CoordinatorMessage,
    Error,
    Idle,
    JobSpec,
    Lease,
    LeaseItem,
    ResultItem,
)
from tabgrid.settings import Settings
from tabgrid.store import Store, bans
from tabgrid.store import coordinators as coordinators_q
from tabgrid.store import leases as leases_q
from tabgrid.store import trust as trust_q
from tabgrid.store import workers as workers_q
from tabgrid.store.db import transient
from tabgrid.store.notify import announce

log = logging.getLogger("tabgrid.coordinator.scheduler")

MAX_TICK_TRIES = 3  # a tick the database refused is tried again this often
KNOWN_ANSWERS = 8  # known answers a checked job keeps before spot-checks draw on it
TICK_RETRY_S = 0.5
PRUNE_EVERY_S = 60.0
ACKS_PER_MESSAGE = 1024


class Peer(Protocol):
    """What the scheduler (and the console) need of a worker connection."""

    worker_id: str
    addr: str
    connected_at: float
    credit: int
    leases: set[int]
    jobs_sent: set[str]  # JobSpec keys
    idle_reason: str | None
    draining: bool
    acks: bool  # the worker keeps results until they are acknowledged

    def post(self, msg: CoordinatorMessage) -> None: ...

    def close(self, reason: str, code: str = "") -> None: ...


@dataclass
class _TickResult:
    outcome: Outcome
    claims: dict[str, list[leases_q.Claimed]] = field(default_factory=dict)
    idle: dict[str, str] = field(default_factory=dict)
    # Workers an operator banned or drained, perhaps through another coordinator.
    stopped: dict[str, str] = field(default_factory=dict)
    # The leases of every result the tick dealt with, by sender: acknowledged once committed.
    acks: dict[str, list[int]] = field(default_factory=dict)


class Scheduler:
    def __init__(
        self, store: Store, blobs: BlobStore, settings: Settings, telemetry: Telemetry
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.settings = settings
        self.telemetry = telemetry
        self.peers: dict[str, Peer] = {}
        # This process, among the coordinators sharing the database: its leases carry the id.
        self.coordinator_id = uuid.uuid4().hex
        self._results: list[Incoming] = []
        self._hungry: set[str] = set()  # workers with credit to fill this tick
        # Workers gone with leases their detach did not release: it ran beside the tick that
        # claimed them (PostgreSQL), or it failed. The next tick releases them.
        self._orphans: set[str] = set()
        self._starving: set[str] = set()  # workers the last claim could not fill
        self._wake = asyncio.Event()
        self._next_prune = 0.0
        self._renewed = time.time()  # this coordinator's last renewal of its row (start)
        self._well_known: set[int] = set()  # jobs with enough known answers for spot-checks
        self._checked_jobs: list[tuple[int, float]] = []  # this tick's, with their deadline_s
        self._spans: dict[int, tuple[int, int]] = {}  # each checked job's first and last unit id
        trust = cred.Trust(
            saboteur_bound=settings.trust_saboteur_bound,
            check_rate_new=settings.trust_check_rate_new,
            check_rate_min=settings.trust_check_rate_min,
            resample_rate=settings.trust_resample_rate,
        )
        self.validator = Validator(
            blobs,
            trust=trust,
            per_address=settings.trust_per_address,
            distinct_addresses=settings.distinct_addresses,
        )

    # ---- called by the gateway and the API -----------------------------------------------

    async def start(self) -> None:
        me, host = self.coordinator_id, socket.gethostname()
        await self.store.run(coordinators_q.register, me, host, os.getpid())
        if not self.store.is_postgres:
            # A lone coordinator: any other row is a previous run, whose leases wait below.
            await self.store.run(coordinators_q.forget_others, me)
            # A lone coordinator that starts has no worker connected yet.
            grace = time.time() + self.settings.restart_grace_s
            n = await self.store.run(leases_q.shorten_deadlines, grace)
            if n:
                log.info(
                    "%d leases from the previous run wait %.0f s for their workers",
                    n,
                    self.settings.restart_grace_s,
                )

    async def stop(self) -> None:
        """A clean stop: the workers' connections closed already, releasing their leases."""
        await self.store.run(coordinators_q.forget, self.coordinator_id)

    def attach(self, peer: Peer) -> None:
        old = self.peers.get(peer.worker_id)
        self.peers[peer.worker_id] = peer
        if old is not None and old is not peer:
            old.post(Error(code="replaced", message="this worker connected again elsewhere"))
        if peer.draining:
            self.set_draining(peer.worker_id, True)  # tells it why it gets nothing

    async def detach(self, peer: Peer) -> None:
        """A disconnect releases the worker's leases at once."""
        if self.peers.get(peer.worker_id) is peer:
            del self.peers[peer.worker_id]
            self._hungry.discard(peer.worker_id)
            self._starving.discard(peer.worker_id)
            await self._release_gone_worker(peer.worker_id)

    async def _release_gone_worker(self, wid: str) -> None:
        """Releases the leases this coordinator gave a worker that is gone, in a transaction of
        its own: inside a tick its replicas and units would be locked before those of the
        tick's results, against the order every other transaction takes them in."""
        try:
            n = await self.store.run(leases_q.release_worker, wid, time.time(), self.coordinator_id)
        except Exception:  # noqa: BLE001 - a deadlock victim, say: the next tick tries
            log.exception("releasing the leases of worker %s failed", wid[:8])
            self._orphans.add(wid)
            self._wake.set()
            return
        if n:
            self.poke()

    def ready(self, peer: Peer, n: int) -> None:
        room = self.settings.limits.max_leases - len(peer.leases)
        peer.credit = max(0, min(peer.credit + n, room))
        if peer.credit and not peer.draining:
            self._hungry.add(peer.worker_id)
            self._starving.discard(peer.worker_id)
            self._wake.set()

    def hold(self, peer: Peer) -> None:
        """The worker wants nothing more for now: its unused credit is dropped."""
        peer.credit = 0
        self._hungry.discard(peer.worker_id)
        self._starving.discard(peer.worker_id)

    def results(self, peer: Peer, items: list[ResultItem]) -> None:
        for item in items:
            peer.leases.discard(item.lease)
            self._results.append(Incoming(peer.worker_id, item))
        self._wake.set()

    def poke(self) -> None:
        """New work may exist (a job, a released lease): idle workers try again."""
        self._hungry |= self._starving
        self._starving.clear()
        self._wake.set()

    def cancelled(self, pairs: list[tuple[int, str]], reason: str) -> None:
        """Calls back (lease, worker) pairs the store released: each worker hears of its own."""
        by_worker: dict[str, list[int]] = {}
        for lease, worker in pairs:
            by_worker.setdefault(worker, []).append(lease)
        for worker, ids in by_worker.items():
            peer = self.peers.get(worker)
            if peer is not None:
                peer.leases.difference_update(ids)
                peer.post(Cancel(leases=ids, reason=reason))

    def banned(self, worker_id: str, reason: str) -> None:
        """The store has banned the worker: its connection goes now."""
        peer = self.peers.get(worker_id)
        if peer is not None:
            peer.close(f"banned by the operator: {reason}", BANNED)
        self.poke()  # its released leases and discarded results want replicas

    def set_draining(self, worker_id: str, draining: bool) -> None:
        peer = self.peers.get(worker_id)
        if peer is None:
            return
        peer.draining = draining
        if draining:
            reason = "drained by the operator: finishing the units it holds, taking no more"
            peer.idle_reason = reason
            peer.post(Idle(reason=reason))
        elif peer.credit:
            self._hungry.add(worker_id)
            self._wake.set()

    def forget_job(self, job_id: int) -> None:
        self.validator.forget_job(job_id)
        self._spans.pop(job_id, None)
        self._well_known.discard(job_id)

    # ---- side tasks -----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.settings.batch_window_s)  # let a burst gather into one tick
            try:
                await self._tick()
            except Exception:
                # Nothing of the failed tick was committed (the database itself failed: each
                # worker's results are isolated inside the tick); _tick queued it again.
                log.exception("a scheduler tick failed; trying its work again")
                await asyncio.sleep(TICK_RETRY_S)

    async def sweep(self) -> None:
        """Expires leases past their deadline; retries idle workers (work may come from another
        coordinator sharing the database)."""
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                await self._sweep_once()
            except Exception:
                # A database that failed for a moment (a deadlock victim, a lost connection)
                # must not stop the coordinator: the next sweep does it all again.
                log.exception("a sweep failed; the next one tries again")

    async def _sweep_once(self) -> None:
        n = await self.store.run(leases_q.expire, time.time())
        if n:
            log.info("%d leases passed their deadline and were released", n)
        await self._coordinators()
        await self._undrained()
        await self._forget_unused_workers()
        outcome = await self.store.run(self.reconsider, time.time())
        self._deliver(_TickResult(outcome), {})
        self.poke()

    def reconsider(self, conn: Connection, now: float) -> Outcome:
        """Units of checked jobs waiting on results nobody can give are judged again: their
        workers' credibility may have grown meanwhile (coordinator.validator)."""
        jobs = [job for job, _ in trust_q.checked_jobs(conn)]
        units = trust_q.waiting_on_evidence(conn, jobs)
        if not units:
            return Outcome()
        for job in jobs:
            self.validator.context(conn, job)
        return self.validator.reconsider(conn, units, now)

    async def _coordinators(self) -> None:
        """Renews this coordinator's row and releases the leases of coordinators gone silent
        (killed, cut off): their workers reconnect elsewhere and their units are leased again."""
        me, ttl = self.coordinator_id, self.settings.coordinator_ttl_s
        # Renewed in a transaction of its own: never held back or undone by the release.
        await self.store.run(coordinators_q.renew, me)
        renewed, last = time.time(), self._renewed
        self._renewed = renewed
        # One coordinator on SQLite: a restart's leases wait restart_grace_s instead (start).
        # And one that could not renew itself for ttl was stalled with the others (the
        # database was): they are silent for the same reason, not gone; it waits a sweep.
        if not self.store.is_postgres or renewed - last > ttl:
            return
        n = await self.store.run(coordinators_q.release_gone, me, None, ttl)
        if n:
            log.warning("released %d leases of coordinators silent for %.0f s", n, ttl)

    async def _forget_unused_workers(self) -> None:
        now = time.time()
        if now < self._next_prune:
            return
        ttl = self.settings.unused_worker_ttl_s
        self._next_prune = now + min(PRUNE_EVERY_S, ttl)
        n = await self.store.run(workers_q.prune_unused, now - ttl, sorted(self.peers))
        if n:
            log.info("forgot %d worker records that never held a lease", n)

    async def _undrained(self) -> None:
        """Drained workers an operator let go again, perhaps through another coordinator."""
        draining = [wid for wid, p in self.peers.items() if p.draining]
        if draining:
            still = await self.store.run(bans.stopped, draining)
            for wid in draining:
                if wid not in still:
                    self.set_draining(wid, False)

    # ---- one tick -------------------------------------------------------------------------

    async def _tick(self) -> None:
        batch, self._results = self._results, []
        wanted = {
            wid: (p.addr, p.credit)
            for wid in self._hungry
            if (p := self.peers.get(wid)) is not None and p.credit > 0 and not p.draining
        }
        self._hungry.clear()
        orphans = sorted(w for w in self._orphans if w not in self.peers)
        self._orphans.clear()
        for wid in orphans:
            await self._release_gone_worker(wid)
        if not batch and not wanted:
            return
        start = time.perf_counter()
        try:
            res = await self.store.run(self._work, batch, wanted, time.time())
        except Exception:
            # Nobody's work is forgotten: the workers still want units, and the results are
            # tried again a few times before their leases are left to the deadline.
            self._hungry.update(w for w in wanted if w in self.peers)
            again = [inc._replace(tries=inc.tries + 1) for inc in batch]
            self._results[:0] = [inc for inc in again if inc.tries <= MAX_TICK_TRIES]
            self._give_back({inc.worker for inc in again if inc.tries > MAX_TICK_TRIES})
            self._wake.set()
            raise
        finally:
            self.telemetry.ticks.observe(time.perf_counter() - start)
        res.acks = acks_of(batch)
        self._deliver(res, wanted)

    def _give_back(self, senders: set[str]) -> None:
        """Results no tick could record are left to their senders, which keep them until
        acknowledged but send them again only on a new connection: theirs is closed, and
        they reconnect (to any coordinator) once the database answers again."""
        for wid in senders:
            if (p := self.peers.get(wid)) is not None:
                log.warning("results of worker %s could not be recorded; it will resend", wid[:8])
                p.close(
                    "the coordinator could not record your results: connect again and send them"
                )

    def _work(
        self,
        conn: Connection,
        batch: list[Incoming],
        wanted: dict[str, tuple[str, int]],
        now: float,
    ) -> _TickResult:
        # One look at the operator's bans and drains for every worker this tick touches.
        involved = set(wanted) | {inc.worker for inc in batch}
        stopped = bans.stopped(conn, sorted(involved)) if involved else {}
        banned = frozenset(w for w, why in stopped.items() if why == "banned")
        outcome = self._record(conn, self._check_inline(batch), now, banned)
        stopped |= {w: "banned" for w in outcome.banned}
        if outcome.new_work:
            announce(conn)  # a disagreement asked for a replica another coordinator may serve
        res = _TickResult(outcome)
        distinct = self.settings.distinct_addresses
        reason: str | None = None  # the same for every idle worker: counted once a tick
        res.stopped = {w: why for w, why in stopped.items() if w in wanted}
        caught = set(outcome.caught)  # banned by this very tick: their connections go
        serving = {w: v for w, v in wanted.items() if w not in res.stopped and w not in caught}
        checks = self._plan_spot_checks(conn, serving)
        for wid, (addr, n) in serving.items():
            taker = leases_q.Taker(wid, addr, self.coordinator_id)
            got = leases_q.claim(conn, taker, n - checks.get(wid, 0), distinct, now)
            res.claims[wid] = got
            if not got:
                reason = reason or idle_reason(conn, distinct)
                res.idle[wid] = reason
        self._add_spot_checks(conn, res.claims, checks, serving, now)
        for claimed in res.claims.values():
            for c in claimed:
                self.validator.context(conn, c.job)
        leases_q.finish_jobs(conn, outcome.ended, now)  # last: the jobs' rows lock until commit
        return res

    def _plan_spot_checks(
        self, conn: Connection, wanted: dict[str, tuple[str, int]]
    ) -> dict[str, int]:
        """How many of each worker's free slots go to spot-checks this tick: each slot with
        probability ``check_rate``, high for new and little-trusted workers
        (credibility.check_rate), low but never zero for trusted ones."""
        self._checked_jobs = trust_q.checked_jobs(conn) if wanted else []
        if not self._checked_jobs:
            return {}
        rng = self.validator.rng
        evidence = trust_q.evidence(conn, list(wanted))
        plan = {}
        for wid, (_, n) in wanted.items():
            k = evidence[wid].k if wid in evidence else 0
            rate = cred.check_rate(k, self.validator.trust)
            m = sum(1 for _ in range(n) if rng.random() < rate)
            if m:
                plan[wid] = m
        return plan

    def _add_spot_checks(
        self,
        conn: Connection,
        claims: dict[str, list[leases_q.Claimed]],
        plan: dict[str, int],
        wanted: dict[str, tuple[str, int]],
        now: float,
    ) -> None:
        """The planned spot-checks, in the same lease message as the worker's other units: a
        unit of a checked job whose answer is known. None for a worker that got no work, and
        never more than the work it got, so that checks never outnumber work."""
        rng = self.validator.rng
        jobs = self._checked_jobs
        known: dict[int, int] = {}
        for wid, m in plan.items():
            got = claims.get(wid, [])
            m = min(m, len(got))
            if m <= 0:
                continue
            job_id, deadline_s = jobs[int(rng.random() * len(jobs))]
            if job_id not in known:
                known[job_id] = self._known_answers(conn, job_id, now)
            if not known[job_id]:
                continue
            span = self._spans.get(job_id) or trust_q.unit_id_range(conn, job_id)
            if span is None:
                continue
            self._spans[job_id] = span
            taker = leases_q.Taker(wid, wanted[wid][0], self.coordinator_id)
            lease = (job_id, span, taker, deadline_s, now)
            checks = self._draw_checks(conn, lease, m)
            # A worker that has seen every known answer gets a new one, where the coordinator
            # can compute it: small networks then bootstrap trust from the reference alone.
            if len(checks) < m and self.validator.answer_alone(conn, job_id, now):
                checks += self._draw_checks(conn, lease, m - len(checks))
            claims[wid] = got + checks

    def _draw_checks(self, conn: Connection, lease: tuple, n: int) -> list[leases_q.Claimed]:
        job_id, span, taker, deadline_s, now = lease
        distinct = self.settings.distinct_addresses
        start = self.validator.rng.random()
        return trust_q.claim_checks(
            conn, job_id, span, taker, n, distinct, now + deadline_s, now, start
        )

    def _known_answers(self, conn: Connection, job_id: int, now: float) -> int:
        """Known answers the job has for spot-checks (at least KNOWN_ANSWERS once it had them:
        backtracking may take some back, never all); below that the coordinator answers one
        unit itself, when the kernel has a reference."""
        if job_id in self._well_known:
            return KNOWN_ANSWERS
        n = trust_q.known_units(conn, job_id)
        if n < KNOWN_ANSWERS and self.validator.answer_alone(conn, job_id, now):
            n += 1
        if n >= KNOWN_ANSWERS:
            self._well_known.add(job_id)
        return n

    def _record(
        self, conn: Connection, batch: list[Incoming], now: float, banned: frozenset[str]
    ) -> Outcome:
        """Records the batch; when that fails, each worker's results alone, so that a result
        no check foresaw costs only its sender: the others' results and credit stand."""
        if not batch:
            return Outcome()
        try:
            with conn.begin_nested():
                return self.validator.record(conn, batch, now, banned, defer_jobs=True)
        except Exception as e:  # noqa: BLE001 - isolated below, worker by worker
            if transient(e):
                raise  # the database's, not a result's: the whole tick is tried again
            log.warning("a batch of %d results failed; recording them worker by worker", len(batch))
        outcome = Outcome()
        by_worker: dict[str, list[Incoming]] = {}
        for inc in batch:
            by_worker.setdefault(inc.worker, []).append(inc)
        for worker, items in by_worker.items():
            try:
                with conn.begin_nested():
                    outcome.merge(self.validator.record(conn, items, now, banned, defer_jobs=True))
            except Exception as e:  # noqa: BLE001 - the sender's results are refused
                if transient(e):
                    raise  # not the sender's doing: its results are not refused for it
                log.warning("results of worker %s could not be recorded: %r", worker[:8], e)
                why = f"results that could not be recorded ({type(e).__name__})"
                outcome.hostile[worker] = why
                outcome.rejected.append((worker, f"{why}: they do not count"))
        return outcome

    def _deliver(self, res: _TickResult, wanted: dict[str, tuple[str, int]]) -> None:
        self.telemetry.outcome(res.outcome)
        self._acknowledge(res.acks)
        for wid, why in res.stopped.items():
            if why == "banned":
                self.banned(wid, "see the operator's audit log")
            else:
                self.set_draining(wid, True)
        for wid, msg in res.outcome.rejected:
            if (p := self.peers.get(wid)) is not None:
                p.post(Error(code="bad_result", message=msg))
        for wid, stats in res.outcome.stats.items():
            if (p := self.peers.get(wid)) is not None:
                p.post(stats)
        for wid, why in res.outcome.hostile.items():
            if (p := self.peers.get(wid)) is not None:
                p.close(why)
        for wid, why in res.outcome.caught.items():
            if (p := self.peers.get(wid)) is not None:
                p.close(f"banned: {why}; every result it gave was taken back", BANNED)
        if res.outcome.cancelled:  # their job failed on a shader error
            self.cancelled(res.outcome.cancelled, "the job failed: its shader does not compile")
        for wid, claimed in res.claims.items():
            peer = self.peers.get(wid)
            if peer is None:
                if claimed:  # gone meanwhile; its detach may have run before these existed
                    self._orphans.add(wid)
                    self._wake.set()
                continue
            if claimed:
                self._send_leases(peer, claimed)
            if peer.credit > 0:
                self._starving.add(wid)
            if wid in res.idle and not peer.leases and peer.idle_reason != res.idle[wid]:
                peer.idle_reason = res.idle[wid]
                peer.post(Idle(reason=res.idle[wid]))
        if res.outcome.new_work:
            self.poke()
        elif self._results or self._hungry:
            self._wake.set()

    def _acknowledge(self, acks: dict[str, list[int]]) -> None:
        """First, whatever else the tick says: its results are durable, the workers forget
        them. A worker connected again meanwhile hears it on its new connection."""
        for wid, leases in acks.items():
            if (p := self.peers.get(wid)) is not None and p.acks:
                for i in range(0, len(leases), ACKS_PER_MESSAGE):
                    p.post(Ack(leases=leases[i : i + ACKS_PER_MESSAGE]))

    def _send_leases(self, peer: Peer, claimed: list[leases_q.Claimed]) -> None:
        for job in {c.job for c in claimed}:
            ctx = self.validator.known(job)
            if ctx.key not in peer.jobs_sent:
                peer.post(JobSpec(job, ctx.kernel.NAME, ctx.params, ctx.inputs, ctx.key))
                peer.jobs_sent.add(ctx.key)
        items = [
            LeaseItem(
                lease=c.lease,
                job=c.job,
                unit=c.unit,
                index=c.index,
                params=msgspec.Raw(c.params_json),  # type: ignore[arg-type]
                inputs=msgspec.Raw(c.inputs_json),  # type: ignore[arg-type]
                deadline=c.deadline,
                spec=self.validator.known(c.job).key,
            )
            for c in claimed
        ]
        peer.leases.update(c.lease for c in claimed)
        # max: a hold may have zeroed the credit while this claim ran.
        peer.credit = max(0, peer.credit - len(claimed))
        peer.idle_reason = None
        peer.post(Lease(leases=items))

    # ---- helpers for the validator (run on the DB thread) ---------------------------------

    def _check_inline(self, batch: list[Incoming]) -> list[Incoming]:
        """An inline output whose bytes do not hash to its digest turns its result into an
        error. The validator stores the bytes it keeps."""
        out = []
        for inc in batch:
            item = inc.item
            liars = [
                name
                for name, o in (item.outputs or {}).items()
                if o.data is not None and digest_of(o.data) != o.digest
            ]
            if liars:
                error = f"inline output {liars[0]!r} does not hash to its digest"
                item = ResultItem(lease=item.lease, error=error, elapsed_ms=item.elapsed_ms)
                inc = Incoming(inc.worker, item)
            out.append(inc)
        return out


def acks_of(batch: list[Incoming]) -> dict[str, list[int]]:
    """Each sender's leases in the order their results came, one entry per copy received."""
    acks: dict[str, list[int]] = {}
    for inc in batch:
        acks.setdefault(inc.worker, []).append(inc.item.lease)
    return acks


def idle_reason(conn: Connection, distinct: bool) -> str:
    """Why a worker with free slots got nothing, in words for the person running it."""
    waiting = leases_q.waiting(conn)
    if not waiting:
        return "no work is queued right now; units will come as soon as a job is submitted"
    who = "a different worker" + (" at a different address" if distinct else "")
    return (
        f"{waiting} unit(s) wait for a result from {who}: results are accepted only when "
        "independent workers agree, and this worker already computed them"
    )
