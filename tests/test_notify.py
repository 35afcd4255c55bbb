"""Events between coordinators sharing one database (store/notify.py), and what a coordinator
does on hearing one (coordinator/events.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest

from tabgrid.blobs import FileBlobStore
from tabgrid.coordinator.events import dispatch
from tabgrid.coordinator.scheduler import Scheduler
from tabgrid.coordinator.telemetry import Telemetry
from tabgrid.protocol import BANNED, Cancel, Hello, Idle, JobSubmit, UnitSpec
from tabgrid.settings import Settings
from tabgrid.store import Store, bans, job_controls
from tabgrid.store import jobs as jobs_q
from tabgrid.store import leases as leases_q
from tabgrid.store import units as units_q
from tabgrid.store import workers as workers_q
from tabgrid.store.notify import RESYNC, WORK, Event, listen, parse, send

# ---- the payload ---------------------------------------------------------------------------


def test_an_event_is_a_few_bytes_of_json_and_reads_back() -> None:
    import msgspec

    event = Event("job", job=12, state="cancelled")
    payload = msgspec.json.encode(event)
    assert payload == b'{"kind":"job","job":12,"state":"cancelled"}'
    assert parse(payload.decode()) == event
    worker = Event("worker", worker="f" * 64)
    assert parse(msgspec.json.encode(worker).decode()) == worker


@pytest.mark.parametrize(
    "payload", ["", "not json", '{"kind":"later"}', '{"kind":"resync"}', '{"job":1}']
)
def test_a_payload_this_version_cannot_read_means_look_for_work(payload: str) -> None:
    # An empty payload is what an older coordinator sends; resync is never taken from outside.
    assert parse(payload) == WORK


def test_an_oversized_event_is_refused_before_it_is_sent() -> None:
    class Postgres:
        class dialect:  # noqa: N801 - what a Connection has
            name = "postgresql"

        def execute(self, *args: Any) -> None:
            raise AssertionError("sent")

    with pytest.raises(ValueError, match="over 512"):
        send(Postgres(), Event("worker", worker="w" * 600))  # type: ignore[arg-type]


# ---- what the store sends, and the listener hears -------------------------------------------


def _submit(store: Store, n: int) -> int:
    spec = JobSubmit(kernel="checksum", units=[UnitSpec(params={"i": i}) for i in range(n)])
    return store.tx(jobs_q.create_job, None, spec, time.time())


def _fail(conn: Any, job: int) -> None:
    """What the validator does to a job whose shader does not compile."""
    now = time.time()
    _, n = units_q.fail_open_units(conn, job, "the shader does not compile", [], now)
    leases_q.finish_units(conn, job, 0, n, now)


def _worker(store: Store, name: str) -> str:
    hello = Hello(kind="native", name=name)
    return store.tx(workers_q.register, hello, f"10.0.0.{name}", time.time())[0]


class Heard:
    """A listener in a task of its own; ``next`` waits for what it hears."""

    def __init__(self, url: str) -> None:
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.task = asyncio.create_task(listen(url, self._heard, retry_s=0.05))

    async def _heard(self, event: Event) -> None:
        await self.events.put(event)

    async def next(self) -> Event:
        return await asyncio.wait_for(self.events.get(), 5)

    async def nothing_more(self) -> None:
        await asyncio.sleep(0.2)
        assert self.events.empty(), self.events.get_nowait()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def test_each_change_is_heard_with_what_it_was(pg_url: str) -> None:
    store = Store(pg_url)

    async def scenario() -> None:
        heard = Heard(pg_url)
        try:
            assert await heard.next() == RESYNC, "connecting, it looks at everything first"
            job = await store.run(jobs_q.create_job, None, JobSubmit("checksum", [UnitSpec()]), 0)
            assert await heard.next() == WORK
            w = _worker(store, "1")
            await store.run(bans.set_draining, w, True)
            assert await heard.next() == Event("worker", worker=w)
            await store.run(job_controls.transition, job, "pause", time.time())
            assert await heard.next() == Event("job", job=job, state="paused")
            await store.run(job_controls.transition, job, "resume", time.time())
            assert await heard.next() == Event("job", job=job, state="running")
            await store.run(bans.ban, w, "cheats", time.time())
            assert await heard.next() == Event("worker", worker=w)
            await store.run(_fail, job)
            assert await heard.next() == Event("job", job=job, state="failed")
            await store.run(jobs_q.cancel_job, job, time.time())
            assert await heard.next() == Event("job", job=job, state="cancelled")
            await store.run(jobs_q.retire_job, job)
            assert await heard.next() == Event("job", job=job, state="deleted")
            await heard.nothing_more()
        finally:
            await heard.close()

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_a_listener_that_lost_its_connection_looks_at_everything_again(pg_url: str) -> None:
    async def scenario() -> None:
        heard = Heard(pg_url)
        try:
            assert await heard.next() == RESYNC
            with psycopg.connect(pg_url, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                ).fetchall()
            assert killed == [(True,)]
            assert await heard.next() == RESYNC, "whatever was sent meanwhile may be lost"
        finally:
            await heard.close()

    asyncio.run(scenario())


# ---- what a coordinator does on hearing ------------------------------------------------------


class Peer:
    """A worker connection as the scheduler sees it, recording what it is told."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id, self.addr, self.connected_at = worker_id, "10.0.0.9", 0.0
        self.credit, self.leases, self.jobs_sent = 0, set[int](), set[str]()
        self.idle_reason: str | None = None
        self.draining = False
        self.sent: list[Any] = []
        self.closed: list[tuple[str, str]] = []

    def post(self, msg: Any) -> None:
        self.sent.append(msg)

    def close(self, reason: str, code: str = "") -> None:
        self.closed.append((reason, code))


@pytest.fixture
def scheduler(store: Store, tmp_path: Any) -> Scheduler:
    return Scheduler(store, FileBlobStore(tmp_path / "blobs"), Settings(), Telemetry())


def _held(store: Store, scheduler: Scheduler, name: str) -> Peer:
    peer = Peer(_worker(store, name))
    scheduler.attach(peer)
    return peer


def _lease(store: Store, scheduler: Scheduler, peer: Peer, n: int) -> list[int]:
    taker = leases_q.Taker(peer.worker_id, peer.addr, scheduler.coordinator_id)
    got = [c.lease for c in store.tx(leases_q.claim, taker, n, True, time.time())]
    assert len(got) == n
    peer.leases.update(got)
    return got


def test_a_ban_heard_closes_the_connection_held_here(store: Store, scheduler: Scheduler) -> None:
    peer, other = _held(store, scheduler, "1"), _held(store, scheduler, "2")
    store.tx(bans.ban, peer.worker_id, "returns garbage", time.time())
    asyncio.run(dispatch(scheduler, Event("worker", worker=peer.worker_id)))
    assert peer.closed == [("banned by the operator: returns garbage", BANNED)]
    assert other.closed == [] and other.sent == []


def test_a_drain_heard_twice_tells_the_worker_once(store: Store, scheduler: Scheduler) -> None:
    peer = _held(store, scheduler, "1")
    event = Event("worker", worker=peer.worker_id)
    store.tx(bans.set_draining, peer.worker_id, True)
    asyncio.run(dispatch(scheduler, event))
    asyncio.run(dispatch(scheduler, event))  # its own notification, heard after acting on it
    assert peer.draining
    assert [type(m) for m in peer.sent] == [Idle] and "drained" in peer.sent[0].reason
    store.tx(bans.set_draining, peer.worker_id, False)
    asyncio.run(dispatch(scheduler, event))
    assert not peer.draining and peer.closed == []


@pytest.mark.parametrize("how", ["cancelled", "deleted", "failed"])
def test_a_cancel_heard_calls_back_that_jobs_leases_once(
    store: Store, scheduler: Scheduler, how: str
) -> None:
    peer = _held(store, scheduler, "1")
    doomed = _submit(store, 2)
    theirs = _lease(store, scheduler, peer, 2)
    _submit(store, 1)
    mine = _lease(store, scheduler, peer, 1)
    if how == "failed":
        store.tx(_fail, doomed)  # on another coordinator: this one's workers were not told
    else:
        store.tx(jobs_q.cancel_job, doomed, time.time())
    if how == "deleted":
        store.tx(jobs_q.retire_job, doomed)
    forgotten: list[int] = []
    scheduler.forget_job = forgotten.append  # type: ignore[method-assign]
    event = Event("job", job=doomed, state=how)  # type: ignore[arg-type]
    asyncio.run(dispatch(scheduler, event))
    asyncio.run(dispatch(scheduler, event))
    assert peer.sent == [Cancel(leases=sorted(theirs), reason=f"job {how}")]
    assert peer.leases == set(mine)
    assert forgotten == ([doomed, doomed] if how == "deleted" else [])


def test_a_pause_heard_leaves_the_leases_out(store: Store, scheduler: Scheduler) -> None:
    peer = _held(store, scheduler, "1")
    job = _submit(store, 1)
    held = _lease(store, scheduler, peer, 1)
    store.tx(job_controls.transition, job, "pause", time.time())
    asyncio.run(dispatch(scheduler, Event("job", job=job, state="paused")))
    assert peer.sent == [] and peer.leases == set(held)


def test_after_a_reconnect_everything_missed_is_applied(store: Store, scheduler: Scheduler) -> None:
    banned, drained, working = (_held(store, scheduler, str(i)) for i in range(3))
    job = _submit(store, 1)
    lease = _lease(store, scheduler, working, 1)
    store.tx(bans.ban, banned.worker_id, "cheats", time.time())
    store.tx(bans.set_draining, drained.worker_id, True)
    store.tx(jobs_q.cancel_job, job, time.time())
    asyncio.run(dispatch(scheduler, RESYNC))
    assert banned.closed == [("banned by the operator: cheats", BANNED)]
    assert drained.draining and [type(m) for m in drained.sent] == [Idle]
    assert working.sent == [Cancel(leases=lease, reason="job cancelled")]
    assert working.closed == [] and not working.draining


def test_an_event_that_cannot_be_acted_on_is_left_to_the_sweep(
    store: Store, scheduler: Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    peer = _held(store, scheduler, "1")
    store.close()  # the database went away
    asyncio.run(dispatch(scheduler, Event("worker", worker=peer.worker_id)))
    assert "the sweep will" in caplog.text
