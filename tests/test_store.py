"""Store and lease logic on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import time
from types import SimpleNamespace

import pytest

from tabgrid.blobs import BlobStore, FileBlobStore
from tabgrid.coordinator.batch import IN_ROW_BYTES
from tabgrid.coordinator.validator import Incoming, JobContext, Validator
from tabgrid.protocol import Hello, JobSubmit, Output, Policy, ResultItem, UnitSpec
from tabgrid.store import Store, blob_rows, disagreements
from tabgrid.store import jobs as jobs_q
from tabgrid.store import leases as leases_q
from tabgrid.store import workers as workers_q

KERNEL = SimpleNamespace(NAME="test", flops=lambda params, shapes: 2e9)


def submit(store: Store, n: int, **policy) -> int:  # type: ignore[no-untyped-def]
    spec = JobSubmit(
        kernel="test", units=[UnitSpec(params={"i": i}) for i in range(n)], policy=Policy(**policy)
    )
    return store.tx(jobs_q.create_job, None, spec, time.time())


def worker(store: Store, name: str) -> str:
    wid, _, _ = store.tx(workers_q.register, Hello(kind="native", name=name), "10.0.0." + name, 0.0)
    return wid


def claim(store: Store, wid: str, n: int, addr: str | None = None, distinct: bool = True):  # type: ignore[no-untyped-def]
    taker = leases_q.Taker(wid, addr or wid, "test-coordinator")
    return store.tx(leases_q.claim, taker, n, distinct, time.time())


def out(value: str, data: bool = False) -> dict[str, Output]:
    raw = value.encode()
    digest = hashlib.sha256(raw).hexdigest()
    return {"y": Output(digest=digest, dtype="uint8", shape=[len(raw)], data=raw if data else None)}


@pytest.fixture
def blobs(tmp_path):  # type: ignore[no-untyped-def]
    return FileBlobStore(tmp_path / "blobs")


def validator(store: Store, blobs: BlobStore) -> Validator:
    def ctx(conn, job_id):  # type: ignore[no-untyped-def]
        row = jobs_q.get_job(conn, job_id)
        return JobContext(KERNEL, row.policy, row.params, row.inputs)  # type: ignore[arg-type]

    return Validator(blobs, ctx)


def report(store: Store, v: Validator, wid: str, lease: int, value: str | None):  # type: ignore[no-untyped-def]
    if value:
        item = ResultItem(lease=lease, outputs=out(value, data=True))
    else:
        item = ResultItem(lease=lease, error="boom")
    return store.tx(v.record, [Incoming(wid, item)], time.time())


def status(store: Store, job: int):  # type: ignore[no-untyped-def]
    return store.tx(lambda c: jobs_q.status_of(c, jobs_q.job_record(c, job), "", time.time()))


def test_claim_never_gives_one_worker_two_replicas_of_a_unit(
    store: Store, blobs: BlobStore
) -> None:
    submit(store, 3, quorum=2)
    a, b = worker(store, "1"), worker(store, "2")
    first = claim(store, a, 10)
    assert sorted(c.index for c in first) == [0, 1, 2]
    assert claim(store, a, 10) == []
    assert sorted(c.index for c in claim(store, b, 10)) == [0, 1, 2]


def test_distinct_address_rule(store: Store, blobs: BlobStore) -> None:
    submit(store, 2, quorum=2)
    a, b = worker(store, "1"), worker(store, "2")
    assert len(claim(store, a, 10, addr="1.2.3.4")) == 2
    assert claim(store, b, 10, addr="1.2.3.4") == []
    assert len(claim(store, b, 10, addr="1.2.3.4", distinct=False)) == 2


def test_flow_control_claims_at_most_n(store: Store, blobs: BlobStore) -> None:
    submit(store, 50, quorum=1)
    a = worker(store, "1")
    assert len(claim(store, a, 7)) == 7


def test_quorum_two_validates_and_credits(store: Store, blobs: BlobStore) -> None:
    job = submit(store, 1, quorum=2)
    a, b = worker(store, "1"), worker(store, "2")
    v = validator(store, blobs)
    (la,) = claim(store, a, 1)
    report(store, v, a, la.lease, "x")
    assert status(store, job).counts.validating == 1, "one result in, waiting for a second"
    (lb,) = claim(store, b, 1)
    o = report(store, v, b, lb.lease, "x")
    assert o.units_done == 1
    st = status(store, job)
    assert st.state == "done" and st.counts.done == 1
    assert o.stats[b].valid == 1 and o.stats[b].credit == pytest.approx(2.0)


def test_saboteur_is_outvoted_and_marked_invalid(store: Store, blobs: BlobStore) -> None:
    job = submit(store, 1, quorum=2, max_replicas=4)
    honest1, bad, honest2 = worker(store, "1"), worker(store, "2"), worker(store, "3")
    v = validator(store, blobs)
    (l1,), (l2,) = claim(store, honest1, 1), claim(store, bad, 1)
    report(store, v, honest1, l1.lease, "right")
    o = report(store, v, bad, l2.lease, "wrong")
    assert o.new_work, "a disagreement asks for one more replica"
    (l3,) = claim(store, honest2, 1)
    o = report(store, v, honest2, l3.lease, "right")
    assert o.stats[bad].invalid == 1 and o.stats[honest2].valid == 1
    units = store.tx(jobs_q.list_units, job, Policy(quorum=2), None, -1, 10)
    assert units[0].state == "done" and units[0].outputs == out("right", data=True)
    # exact comparison keeps only the canonical bytes: small ones in the unit's row, no blob
    assert store.tx(blob_rows.read, out("right")["y"].digest) is None
    assert store.tx(blob_rows.read, out("wrong")["y"].digest) is None


@pytest.mark.parametrize("size", [IN_ROW_BYTES, IN_ROW_BYTES + 1])
def test_small_canonical_outputs_live_in_their_unit_row_and_larger_ones_in_blob_rows(
    store: Store, blobs: BlobStore, size: int
) -> None:
    job = submit(store, 1, quorum=2)
    a, b = worker(store, "1"), worker(store, "2")
    v = validator(store, blobs)
    value = "v" * size
    for wid in (a, b):
        (lease,) = claim(store, wid, 1)
        report(store, v, wid, lease.lease, value)
    ((index, outputs, _),) = store.tx(jobs_q.done_outputs, job, -1, 10)
    row = store.tx(blob_rows.read, out(value)["y"].digest)
    if size <= IN_ROW_BYTES:
        assert outputs == out(value, data=True) and row is None
    else:
        assert outputs == out(value) and row == value.encode()


def test_a_unit_accepted_again_on_the_same_small_answer_after_backtracking_keeps_its_bytes(
    store: Store, blobs: BlobStore
) -> None:
    """Its bytes lived only in the unit's row, which reopening clears; nor is an unchanged
    answer counted as changed (its revision goes up once, for being decided again)."""
    job = submit(store, 1, quorum=2, max_replicas=4)
    a, b, c = worker(store, "1"), worker(store, "2"), worker(store, "3")
    v = validator(store, blobs)
    (la,) = claim(store, a, 1)
    store.tx(leases_q.release_worker, a, time.time())  # a's result comes late, and counts
    (lb,), (lc,) = claim(store, b, 1), claim(store, c, 1)
    for wid, lease in ((b, lb), (c, lc), (a, la)):
        report(store, v, wid, lease.lease, "right")

    def catch_c(conn):  # type: ignore[no-untyped-def]
        # What a failed spot-check does at the end of a batch: c's results are taken back.
        r = v._round(conn, time.time())
        r._verdicts.caught = {c: "failed a spot-check"}
        r._backtrack(conn, {})
        return r._outcome.reopened

    assert store.tx(catch_c) == 0, "a and b still agree on the same answer"
    (unit,) = store.tx(jobs_q.list_units, job, Policy(quorum=2), None, -1, 10)
    assert unit.state == "done" and unit.outputs == out("right", data=True)
    assert unit.revision == 1


def test_a_unit_whose_honest_answer_backtracking_brings_back_gets_its_bytes_from_one_more_result(
    store: Store, blobs: BlobStore
) -> None:
    """Colluders b and c had their wrong answer accepted; a's and d's right ones were judged
    invalid and, under exact comparison, their bytes not kept. Once c is caught, the right
    answer stands, but nobody has its bytes: the unit asks for one more result."""
    job = submit(store, 1, quorum=2, max_replicas=6)
    a, b, c, d, e = (worker(store, str(n)) for n in range(1, 6))
    v = validator(store, blobs)
    (lb,), (ld,) = claim(store, b, 1), claim(store, d, 1)
    store.tx(leases_q.release_worker, d, time.time())  # d's result comes late
    (la,) = claim(store, a, 1)
    report(store, v, b, lb.lease, "wrong")
    report(store, v, a, la.lease, "right")
    (lc,) = claim(store, c, 1)
    report(store, v, c, lc.lease, "wrong")
    report(store, v, d, ld.lease, "right")
    (unit,) = store.tx(jobs_q.list_units, job, Policy(quorum=2), None, -1, 10)
    assert unit.state == "done" and unit.outputs == out("wrong", data=True)

    def catch_c(conn):  # type: ignore[no-untyped-def]
        r = v._round(conn, time.time())
        r._verdicts.caught = {c: "failed a spot-check"}
        r._backtrack(conn, {})
        return r._outcome

    assert store.tx(catch_c).new_work
    (unit,) = store.tx(jobs_q.list_units, job, Policy(quorum=2), None, -1, 10)
    assert unit.state != "done", unit
    (le,) = claim(store, e, 1)
    report(store, v, e, le.lease, "right")
    (unit,) = store.tx(jobs_q.list_units, job, Policy(quorum=2), None, -1, 10)
    assert unit.state == "done" and unit.outputs == out("right", data=True)


def test_disagreements_are_recorded_for_the_console(store: Store, blobs: BlobStore) -> None:
    job = submit(store, 1, quorum=2, max_replicas=4)
    honest1, bad, honest2 = worker(store, "1"), worker(store, "2"), worker(store, "3")
    v = validator(store, blobs)
    (l1,), (l2,) = claim(store, honest1, 1), claim(store, bad, 1)
    report(store, v, honest1, l1.lease, "right")
    report(store, v, bad, l2.lease, "wrong")
    (first,) = store.tx(disagreements.recent, 10)
    assert (
        first["job_id"] == job and "1 of 2 results differ from the first result" in first["summary"]
    )
    assert {r["worker"] for r in first["replicas"]} == {honest1, bad}
    (l3,) = claim(store, honest2, 1)
    o = report(store, v, honest2, l3.lease, "right")
    latest, _ = store.tx(disagreements.recent, 10)
    assert f"worker {bad[:8]}" in latest["summary"] and "canonical" in latest["summary"]
    states = {r["worker"]: r["state"] for r in latest["replicas"]}
    assert states == {honest1: "valid", bad: "invalid", honest2: "valid"}
    assert (o.valid, o.invalid, o.errors, o.units_done, len(o.latencies)) == (2, 1, 0, 1, 1)


def test_disconnect_releases_leases_for_others(store: Store, blobs: BlobStore) -> None:
    job = submit(store, 2, quorum=1)
    a, b = worker(store, "1"), worker(store, "2")
    claim(store, a, 2)
    assert claim(store, b, 2) == []
    assert store.tx(leases_q.release_worker, a, time.time()) == 2
    assert len(claim(store, b, 2)) == 2
    assert status(store, job).counts.running == 2


def test_expired_lease_is_reissued(store: Store, blobs: BlobStore) -> None:
    submit(store, 1, quorum=1, deadline_s=0.01)
    a, b = worker(store, "1"), worker(store, "2")
    claim(store, a, 1)
    time.sleep(0.05)
    assert store.tx(leases_q.expire, time.time()) == 1
    assert len(claim(store, b, 1)) == 1


def test_unit_fails_after_max_replicas_errors(store: Store, blobs: BlobStore) -> None:
    job = submit(store, 1, quorum=1, max_replicas=2)
    v = validator(store, blobs)
    for name in ("1", "2"):
        w = worker(store, name)
        (lease,) = claim(store, w, 1)
        report(store, v, w, lease.lease, None)
    st = status(store, job)
    assert st.state == "failed" and st.counts.failed == 1
    units = store.tx(jobs_q.list_units, job, Policy(quorum=1), None, -1, 10)
    assert "boom" in (units[0].error or "")


def test_result_for_someone_elses_lease_is_rejected(store: Store, blobs: BlobStore) -> None:
    submit(store, 1, quorum=1)
    a, b = worker(store, "1"), worker(store, "2")
    (lease,) = claim(store, a, 1)
    o = report(store, validator(store, blobs), b, lease.lease, "x")
    assert o.rejected and "not held by you" in o.rejected[0][1]


def test_late_result_is_checked_against_the_canonical_one(store: Store, blobs: BlobStore) -> None:
    submit(store, 1, quorum=2, max_replicas=3)
    a, b, c = worker(store, "1"), worker(store, "2"), worker(store, "3")
    v = validator(store, blobs)
    (la,), (lb,) = claim(store, a, 1), claim(store, b, 1)
    report(store, v, a, la.lease, "x")
    report(store, v, b, lb.lease, "y")
    (lc,) = claim(store, c, 1)
    assert report(store, v, c, lc.lease, "x").stats[c].valid == 1
    # b's disagreeing result was judged when the canonical one appeared
    assert store.tx(workers_q.get, b)["invalid"] == 1


def test_two_colluding_saboteurs_win_a_quorum_two_unit_by_the_check_set_rule(
    store: Store, blobs: BlobStore
) -> None:
    """Expected, and why: check_set accepts the first result that agrees with `quorum` results.
    Two saboteurs that return the same wrong answer before the honest worker form that quorum,
    so the wrong answer is canonical and the honest late result is judged invalid against it.
    Quorum 2 stops lone cheaters; collusion needs a higher quorum, the distinct-address rule,
    or a verifier (matmul's Freivalds check)."""
    job = submit(store, 1, quorum=2, max_replicas=3, deadline_s=0.05)
    s1, s2, honest = worker(store, "1"), worker(store, "2"), worker(store, "3")
    v = validator(store, blobs)
    (l1,), (l3,) = claim(store, s1, 1), claim(store, honest, 1)
    time.sleep(0.1)  # both leases pass their deadline; the unit is reissued to s2
    store.tx(leases_q.expire, time.time())
    (l2,) = claim(store, s2, 1)
    report(store, v, s1, l1.lease, "wrong")
    report(store, v, s2, l2.lease, "wrong")
    o = report(store, v, honest, l3.lease, "right")
    (unit,) = store.tx(jobs_q.list_units, job, Policy(quorum=2), None, -1, 10)
    assert unit.state == "done" and unit.outputs == out("wrong", data=True)
    assert o.stats[honest].invalid == 1
    assert store.tx(workers_q.get, s1)["valid"] == 1


def test_an_honest_majority_outvotes_two_colluders_when_it_returns_first(
    store: Store, blobs: BlobStore
) -> None:
    """The same rule with the honest pair first: the right answer is canonical and both
    saboteurs' results are invalid."""
    job = submit(store, 1, quorum=2, max_replicas=4)
    h1, s1, h2 = worker(store, "1"), worker(store, "2"), worker(store, "3")
    v = validator(store, blobs)
    (a,), (b,) = claim(store, h1, 1), claim(store, s1, 1)
    report(store, v, h1, a.lease, "right")
    report(store, v, s1, b.lease, "wrong")
    (c,) = claim(store, h2, 1)  # the disagreement asked for a third replica
    report(store, v, h2, c.lease, "right")
    (unit,) = store.tx(jobs_q.list_units, job, Policy(quorum=2), None, -1, 10)
    assert unit.outputs == out("right", data=True)
    assert store.tx(workers_q.get, s1)["invalid"] == 1


def test_cancel_releases_leases_and_closes_the_job(store: Store) -> None:
    job = submit(store, 3, quorum=2)
    a = worker(store, "1")
    leases = claim(store, a, 2)
    pairs = store.tx(jobs_q.cancel_job, job, time.time())
    assert sorted(pairs) == sorted((c.lease, a) for c in leases)
    st = status(store, job)
    assert st.state == "cancelled" and st.counts.cancelled == 3
    assert claim(store, worker(store, "2"), 5) == []
