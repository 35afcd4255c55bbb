"""PostgreSQL LISTEN/NOTIFY wake-ups between coordinators sharing one database."""

from __future__ import annotations

import asyncio
import time

from tabgrid.protocol import JobSubmit, UnitSpec
from tabgrid.store import Store
from tabgrid.store import jobs as jobs_q
from tabgrid.store.notify import listen


def test_a_job_submitted_anywhere_wakes_every_listener(pg_url: str) -> None:
    store = Store(pg_url)

    async def scenario() -> list[float]:
        woken: list[float] = []
        task = asyncio.create_task(listen(pg_url, lambda: woken.append(time.monotonic())))
        while not woken:  # the listener wakes once when it starts listening
            await asyncio.sleep(0.01)
        woken.clear()
        spec = JobSubmit(kernel="checksum", units=[UnitSpec()])
        await store.run(jobs_q.create_job, None, spec, time.time())
        for _ in range(200):
            if woken:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return woken

    try:
        assert len(asyncio.run(scenario())) == 1, "one wake-up for one submitted job"
    finally:
        store.close()
