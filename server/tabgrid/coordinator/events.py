"""What a coordinator does on hearing that something happened (store/notify.py), perhaps
through another coordinator sharing the database, perhaps through itself.

Every action reads the database again and asks the scheduler only what its public methods do,
so hearing an event twice, late, or of its own making does nothing twice: a closed connection
is not closed again, a lease called back is no longer held. What a missed event would have
done still happens, later: the sweep pokes idle workers and lifts drains, and each tick checks
the bans and drains of the workers it serves.
"""

from __future__ import annotations

import logging

from tabgrid.coordinator.scheduler import Scheduler
from tabgrid.store import bans
from tabgrid.store import jobs as jobs_q
from tabgrid.store.notify import Event

log = logging.getLogger("tabgrid.coordinator.events")


async def dispatch(scheduler: Scheduler, event: Event) -> None:
    """Acts on one event at once, for the workers this coordinator holds."""
    try:
        match event.kind:
            case "work":
                scheduler.poke()
            case "job" if event.state in ("cancelled", "deleted", "failed"):
                await _call_back(scheduler)
                if event.state == "deleted" and event.job is not None:
                    scheduler.forget_job(event.job)  # what this coordinator kept of it
            case "job" if event.state == "running":
                scheduler.poke()
            case "worker" if event.worker in scheduler.peers:
                await _apply_flags(scheduler, [event.worker])  # type: ignore[list-item]
            case "resync":  # the listener (re)connected: anything may have been missed
                scheduler.poke()
                await _apply_flags(scheduler, list(scheduler.peers))
                await _call_back(scheduler)
            # A paused job needs nothing: its leases stay out and count, the claim skips it.
    except Exception:  # the database is the truth: the sweep and the ticks catch up
        log.exception("could not act on %s; the sweep will", event)


async def _apply_flags(scheduler: Scheduler, worker_ids: list[str]) -> None:
    """Bans and drains, as the database has them now, applied to the connections held here."""
    if not worker_ids:
        return
    stopped = await scheduler.store.run(bans.stopped, worker_ids)
    for wid in worker_ids:
        peer = scheduler.peers.get(wid)
        if peer is None:
            continue
        why = stopped.get(wid)
        if why == "banned":
            reason = await scheduler.store.run(bans.ban_reason, wid)
            scheduler.banned(wid, reason or "see the operator's audit log")
        elif (why == "draining") != peer.draining:
            scheduler.set_draining(wid, why == "draining")


async def _call_back(scheduler: Scheduler) -> None:
    """Leases held here whose job was cancelled, deleted or failed are called back from their
    workers."""
    held = {lease: wid for wid, peer in scheduler.peers.items() for lease in peer.leases}
    if not held:
        return
    stale = await scheduler.store.run(jobs_q.stale_leases, sorted(held))
    by_reason: dict[str, list[tuple[int, str]]] = {}
    for lease, why in stale.items():
        peer = scheduler.peers.get(held[lease])
        if peer is not None and lease in peer.leases:  # not finished meanwhile
            by_reason.setdefault(why, []).append((lease, held[lease]))
    for why, pairs in by_reason.items():
        scheduler.cancelled(pairs, why)
