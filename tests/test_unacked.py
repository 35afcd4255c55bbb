"""The native worker keeps results until they are acknowledged and sends them again after a
reconnect (worker/unacked.py, worker/session.py), against the fake coordinator."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from tabgrid.protocol import (
    Ack,
    Cancel,
    Hello,
    JobSpec,
    Lease,
    Ready,
    Result,
    ResultItem,
    Welcome,
    coordinator_decoder,
    encoder,
    worker_decoder,
)
from tabgrid.worker.session import Worker
from tabgrid.worker.unacked import MAX_RESULTS, Unacked
from test_worker_unit import TIMEOUT, FakeCoordinator, check_output, lease, start_worker


def item(lease: int, error: str = "boom") -> ResultItem:
    return ResultItem(lease=lease, error=error)


def test_unacked_keeps_results_in_order_until_forgotten() -> None:
    kept = Unacked()
    assert kept.add([item(3), item(1), item(2)]) == []
    assert [i.lease for i in kept.items()] == [3, 1, 2] and len(kept) == 3
    assert kept.forget([1, 99]) == 1, "a lease never kept is no error"
    assert [i.lease for i in kept.items()] == [3, 2] and 1 not in kept
    kept.add([item(3, "again")])  # a copy sent again replaces the older one, at the end
    assert [(i.lease, i.error) for i in kept.items()] == [(2, "boom"), (3, "again")]
    assert kept.bytes == sum(len(encoder.encode(i)) for i in kept.items())
    kept.clear()
    assert len(kept) == 0 and kept.bytes == 0


def test_unacked_drops_the_oldest_over_its_bounds() -> None:
    by_count = Unacked(max_results=3)
    assert by_count.add(item(n) for n in range(5)) == [0, 1]
    assert [i.lease for i in by_count.items()] == [2, 3, 4]
    one = len(encoder.encode(item(0, "x" * 100)))
    by_bytes = Unacked(max_bytes=2 * one)
    assert by_bytes.add([item(n, "x" * 100) for n in range(3)]) == [0]
    assert by_bytes.bytes == 2 * one
    assert by_bytes.add([item(9, "x" * 3000)]) == [1, 2, 9], "one over the bound is not kept"
    assert len(by_bytes) == 0 and by_bytes.bytes == 0
    assert MAX_RESULTS == 128
    with pytest.raises(ValueError, match="positive"):
        Unacked(max_results=0)


def test_a_dropped_result_is_logged() -> None:
    logs: list[str] = []
    worker = Worker("http://127.0.0.1:9", gpu=object(), log=logs.append)
    worker.unacked = Unacked(max_results=2)
    worker._keep([item(1), item(2), item(3)])
    assert [i.lease for i in worker.unacked.items()] == [2, 3]
    assert any("dropped 1 unacknowledged results" in line for line in logs), logs


def test_ack_and_the_flags_on_the_wire() -> None:
    ack = coordinator_decoder.decode(b'{"type":"ack","leases":[4,5]}')
    assert ack == Ack(leases=[4, 5])
    assert msgspec.json.decode(encoder.encode(ack)) == {"type": "ack", "leases": [4, 5]}
    # Peers that predate acknowledgements say nothing of them: then there are none.
    old_hello = worker_decoder.decode(b'{"type":"hello","kind":"native"}')
    assert isinstance(old_hello, Hello) and old_hello.acks is False
    old_welcome = b'{"type":"welcome","worker_id":"w","secret":"s","max_inline":1,"max_message":9}'
    assert coordinator_decoder.decode(old_welcome).acks is False
    with pytest.raises(msgspec.ValidationError):
        coordinator_decoder.decode(b'{"type":"ack","leases":["x"]}')


def acking(worker_id: str = "w-1") -> Welcome:
    secret = "s-" + worker_id
    return Welcome(worker_id, secret, max_inline=4096, max_message=1 << 20, acks=True)


async def resends_what_was_not_acknowledged() -> list[str]:
    stop, logs = asyncio.Event(), []
    async with FakeCoordinator() as fake:
        task = start_worker(fake.url, stop, logs)
        peer = await fake.next_peer()
        assert (await peer.recv(Hello)).acks is True
        await peer.send(acking())
        assert (await peer.recv(Ready)).n == 2
        await peer.send(JobSpec(job=1, kernel="checksum", params={}, inputs={}))
        await peer.send(Lease([lease(10, 1, {"k": 1}), lease(11, 1, {"k": 2})]))
        first = (await peer.recv(Result)).results
        assert [r.lease for r in first] == [10, 11]
        assert (await peer.recv(Ready)).n == 2, "a result sent is out of flight"
        await peer.send(Ack(leases=[10]))
        await asyncio.sleep(0.05)
        await peer.ws.close()

        # After the welcome, before anything else: the one result no Ack named.
        again = await fake.next_peer()
        await again.recv(Hello)
        await again.send(acking())
        (resent,) = (await again.recv(Result)).results
        assert resent == first[1]
        check_output(resent, {"k": 2}, {})
        assert (await again.recv(Ready)).n == 2, "a resend asks for no more units"
        await again.send(Ack(leases=[11]))
        await again.send(Lease([lease(12, 1, {"k": 3})]))
        assert [r.lease for r in (await again.recv(Result)).results] == [12]
        assert (await again.recv(Ready)).n == 1
        await again.send(Cancel(leases=[12], reason="job cancelled"))  # not wanted any more
        await asyncio.sleep(0.05)
        await again.ws.close()

        third = await fake.next_peer()
        await third.recv(Hello)
        await third.send(acking())
        assert (await third.recv(Ready)).n == 2, "nothing left to send again"
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
    return logs


def test_worker_sends_unacknowledged_results_again_after_a_reconnect() -> None:
    logs = asyncio.run(resends_what_was_not_acknowledged())
    assert sum("sending 1 unacknowledged results again" in line for line in logs) == 1, logs


async def forgets_them_under_a_new_identity() -> list[str]:
    stop, logs = asyncio.Event(), []
    async with FakeCoordinator() as fake:
        task = start_worker(fake.url, stop, logs)
        peer = await fake.next_peer()
        await peer.recv(Hello)
        await peer.send(acking("w-1"))
        await peer.recv(Ready)
        await peer.send(JobSpec(job=1, kernel="checksum", params={}, inputs={}))
        await peer.send(Lease([lease(10, 1)]))
        await peer.recv(Result)
        await peer.recv(Ready)
        await peer.ws.close()
        again = await fake.next_peer()
        await again.recv(Hello)
        # Judged as a stranger's under another identity: not sent.
        await again.send(acking("w-2"))
        assert (await again.recv(Ready)).n == 2
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
    return logs


def test_unacknowledged_results_of_an_old_identity_are_dropped() -> None:
    logs = asyncio.run(forgets_them_under_a_new_identity())
    assert any("dropped 1 unacknowledged results of the old identity" in line for line in logs)


async def resends_within_the_coordinators_count() -> list[list[int]]:
    stop, logs = asyncio.Event(), []
    async with FakeCoordinator() as fake:
        task = start_worker(fake.url, stop, logs)
        peer = await fake.next_peer()
        await peer.recv(Hello)
        await peer.send(acking())
        await peer.recv(Ready)
        await peer.send(JobSpec(job=1, kernel="checksum", params={}, inputs={}))
        await peer.send(Lease([lease(n, 1, {"k": n}) for n in range(10, 15)]))
        got: list[int] = []
        while len(got) < 5:
            got += [r.lease for r in (await peer.recv(Result)).results]
        await peer.ws.close()  # none acknowledged

        # The next coordinator takes at most 2 results a message: five come in three.
        again = await fake.next_peer()
        await again.recv(Hello)
        welcome = acking()
        await again.send(msgspec.structs.replace(welcome, max_results=2))
        messages = [[r.lease for r in (await again.recv(Result)).results] for _ in range(3)]
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)
    return messages


def test_results_sent_again_keep_to_the_coordinators_count_per_message() -> None:
    """A coordinator refuses a message of more results than it says (Welcome.max_results) for
    good: a worker that kept more unacknowledged, from a coordinator that leases more, splits
    them."""
    messages = asyncio.run(resends_within_the_coordinators_count())
    assert [len(m) for m in messages] == [2, 2, 1]
    assert sorted(n for m in messages for n in m) == list(range(10, 15))
