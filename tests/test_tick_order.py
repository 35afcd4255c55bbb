"""The order of a tick's statements, on both backends: the jobs' counters are written last, so
that on PostgreSQL a job's row is locked only for the commit, not while the tick goes on to
claim units (every coordinator's ticks on that job queue behind that lock)."""

from __future__ import annotations

import asyncio
import re

from sqlalchemy import event

from tabgrid.coordinator.scheduler import Scheduler
from tabgrid.protocol import ResultItem
from tabgrid.store import Store
from test_acks import FakePeer, scheduler  # noqa: F401 - the fixture
from test_hardening_store import submit_checksum
from test_store import claim, out, worker


def test_a_tick_writes_its_jobs_counters_after_everything_else(
    store: Store,
    scheduler: Scheduler,  # noqa: F811
) -> None:
    job = submit_checksum(store, 3, quorum=2)
    a, b = worker(store, "1"), worker(store, "2")
    pa, pb = FakePeer(a), FakePeer(b)
    for peer in (pa, pb):
        scheduler.attach(peer)
    (la,), (lb,) = claim(store, a, 1), claim(store, b, 1)
    item = ResultItem  # both agree: the unit is validated in this tick
    scheduler.results(pa, [item(lease=la.lease, outputs=out("same", data=True))])
    scheduler.results(pb, [item(lease=lb.lease, outputs=out("same", data=True))])
    scheduler.ready(pa, 2)  # and the tick claims units for a, after recording

    seen: list[str] = []

    def statement(conn, cursor, sql, params, context, many) -> None:  # type: ignore[no-untyped-def]
        seen.append(re.sub(r"\s+", " ", sql).strip())

    event.listen(store.engine, "before_cursor_execute", statement)
    try:
        asyncio.run(scheduler._tick())
    finally:
        event.remove(store.engine, "before_cursor_execute", statement)

    writes = [i for i, s in enumerate(seen) if s.startswith("UPDATE jobs")]
    claims = [i for i, s in enumerate(seen) if s.startswith("INSERT INTO replicas")]
    assert writes and claims, seen
    assert min(writes) > max(claims), "the job's counters come after the tick's claims"
    tail = [s for s in seen[min(writes) :] if not s.startswith(("RELEASE", "COMMIT"))]
    assert all(s.startswith("UPDATE jobs") for s in tail), tail
    counts = store.tx(lambda c: c.exec_driver_sql(
        f"SELECT open_units, done_units FROM jobs WHERE id = {job:d}").one())  # fmt: skip
    assert tuple(counts) == (2, 1), "one unit of three validated, folded in once"
    assert len(pa.leases) == 2
