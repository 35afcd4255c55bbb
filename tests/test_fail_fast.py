"""Deterministic failures fail fast, and only when confirmed; stalled jobs say so. Real store
on both backends, the real validator."""

from __future__ import annotations

import json
import time

import msgspec
import pytest

from tabgrid.blobs import BlobStore, FileBlobStore
from tabgrid.coordinator.validator import Incoming, Validator
from tabgrid.protocol import JobSubmit, Policy, ResultItem, UnitSpec, worker_decoder
from tabgrid.runtime.errors import DETERMINISTIC, KernelError, ShaderError
from tabgrid.store import Store
from tabgrid.store import jobs as jobs_q
from tabgrid.store import leases as leases_q
from tabgrid.worker.results import Finished
from test_store import claim, status, validator, worker

COMPILE_ERROR = (
    "ShaderError: shader: Shader '' parsing error: no definition in scope for identifier: "
    "'workgroupBarier'\n  ┌─ wgsl:7:5"
)


@pytest.fixture
def blobs(tmp_path):  # type: ignore[no-untyped-def]
    return FileBlobStore(tmp_path / "blobs")


def submit(store: Store, n: int, unit_shaders: bool = False, **policy) -> int:  # type: ignore[no-untyped-def]
    units = [
        UnitSpec(params={"i": i} | ({"shader": f"// shader {i}"} if unit_shaders else {}))
        for i in range(n)
    ]
    params = {} if unit_shaders else {"shader": "// the job's shader"}
    spec = JobSubmit(kernel="test", units=units, params=params, policy=Policy(**policy))
    return store.tx(jobs_q.create_job, None, spec, time.time())


def fail(store: Store, v: Validator, wid: str, lease: int, text: str, kind: str = DETERMINISTIC):  # type: ignore[no-untyped-def]
    item = ResultItem(lease=lease, error=text, error_kind=kind)  # type: ignore[arg-type]
    return store.tx(v.record, [Incoming(wid, item)], time.time())


def units(store: Store, job: int):  # type: ignore[no-untyped-def]
    return store.tx(jobs_q.list_units, job, Policy(quorum=2), None, -1, 100)


def test_two_workers_reporting_a_compile_error_fail_the_unit_and_its_job_at_once(
    store: Store, blobs: BlobStore
) -> None:
    job = submit(store, 3)  # default policy: quorum 2, max_replicas 6
    v = validator(store, blobs)
    a, b, c = worker(store, "1"), worker(store, "2"), worker(store, "3")
    (la,) = claim(store, a, 1)
    (lb,) = claim(store, b, 1)
    held = claim(store, c, 2)  # units 1 and 2 computing on a third worker
    assert la.unit == lb.unit and {h.unit for h in held} != {la.unit}
    fail(store, v, a, la.lease, COMPILE_ERROR)
    first = units(store, job)[0]
    assert first.state != "failed", "one worker's word fails nothing"
    assert status(store, job).state == "running" and status(store, job).error is None
    out = fail(store, v, b, lb.lease, COMPILE_ERROR)
    st = status(store, job)
    assert st.state == "failed" and st.counts.failed == 3 and st.finished_at is not None
    got = units(store, job)
    assert got[0].state == "failed"
    assert got[0].error == (
        "every replica failed the same way on 2 different workers: the shader does not "
        "compile or validate, which no GPU and no retry can change; fix the shader and "
        "submit again. " + COMPILE_ERROR
    )
    assert "wgsl:7:5" in got[0].error, "the compiler's line and column reach the submitter"
    assert st.error == got[0].error, "the job's status (and so the console's row) carries it"
    for u in got[1:]:
        assert u.state == "failed"
        assert u.error == (
            "not run: unit 0 runs the same shader, which does not compile or validate. "
            + COMPILE_ERROR
        )
    assert sorted(out.cancelled) == sorted((h.lease, c) for h in held)
    # The third worker's late results change nothing, nor count against it: its leases were
    # called back (a blob GET it made meanwhile was refused, say).
    late = ResultItem(lease=held[0].lease, error="GET blob 1234: HTTP 403")
    out = store.tx(v.record, [Incoming(c, late)], time.time())
    assert status(store, job).counts.failed == 3
    assert out.errors == 0 and c not in out.stats
    rows = store.tx(
        lambda conn: conn.exec_driver_sql(
            f"SELECT state, error FROM replicas WHERE id = {held[0].lease:d}"
        ).all()
    )
    assert [tuple(r) for r in rows] == [("released", None)]


def test_one_lying_worker_cannot_fail_a_unit(store: Store, blobs: BlobStore) -> None:
    job = submit(store, 1)
    v = validator(store, blobs)
    liar = worker(store, "1")
    (lease,) = claim(store, liar, 1)
    fail(store, v, liar, lease.lease, COMPILE_ERROR)
    (u,) = units(store, job)
    assert u.state == "pending" and u.error is None
    assert status(store, job).state == "running"
    # An honest worker computes it and the unit goes on (quorum 2 wants one more).
    honest = worker(store, "2")
    assert len(claim(store, honest, 1)) == 1


def test_a_claim_that_is_not_a_shader_error_keeps_its_retries(
    store: Store, blobs: BlobStore
) -> None:
    job = submit(store, 1)
    v = validator(store, blobs)
    for name in ("1", "2"):
        w = worker(store, name)
        (lease,) = claim(store, w, 1)
        fail(store, v, w, lease.lease, "KernelError: out of memory")
    (u,) = units(store, job)
    assert u.state == "pending" and u.error is None, "an ordinary error is retried"


def test_shader_errors_without_the_claim_are_ordinary(store: Store, blobs: BlobStore) -> None:
    """An old worker that does not label its errors: retries, then max_replicas as before."""
    job = submit(store, 1, max_replicas=2)
    v = validator(store, blobs)
    for name in ("1", "2"):
        w = worker(store, name)
        (lease,) = claim(store, w, 1)
        fail(store, v, w, lease.lease, COMPILE_ERROR, kind="")
    (u,) = units(store, job)
    assert u.state == "failed"
    assert u.error == "every replica failed or was lost; last error: " + COMPILE_ERROR


def test_a_unit_with_its_own_shader_fails_alone(store: Store, blobs: BlobStore) -> None:
    job = submit(store, 2, unit_shaders=True)
    v = validator(store, blobs)
    a, b = worker(store, "1"), worker(store, "2")
    (la,) = claim(store, a, 1)
    (lb,) = claim(store, b, 1)
    fail(store, v, a, la.lease, COMPILE_ERROR)
    fail(store, v, b, lb.lease, COMPILE_ERROR)
    first, second = units(store, job)
    assert first.state == "failed" and COMPILE_ERROR in (first.error or "")
    assert second.state != "failed" and second.error is None
    st = status(store, job)
    assert st.state == "running" and st.counts.failed == 1


def test_error_kind_is_bounded_at_decode() -> None:
    ok = b'{"type":"result","results":[{"lease":1,"error":"x","error_kind":"deterministic"}]}'
    assert worker_decoder.decode(ok).results[0].error_kind == DETERMINISTIC
    bad = ok.replace(b'"deterministic"', b'"trust me"')
    with pytest.raises(
        msgspec.ValidationError,
        match=r"^Invalid enum value 'trust me' - at `\$.results\[0\].error_kind`$",
    ):
        worker_decoder.decode(bad)


def test_the_native_worker_labels_only_shader_errors() -> None:
    shader = Finished.failed(1, "w", ShaderError("shader: parsing error at wgsl:3:1"), 1.0)
    assert shader.item(0).error_kind == DETERMINISTIC
    assert shader.item(0).error == "ShaderError: shader: parsing error at wgsl:3:1"
    other = Finished.failed(2, "w", KernelError("no GPU"), 1.0)
    assert other.item(0).error_kind == ""


def test_a_job_no_worker_can_take_says_it_is_stalled(store: Store, blobs: BlobStore) -> None:
    job = submit(store, 1)
    v = validator(store, blobs)
    w = worker(store, "1")
    (lease,) = claim(store, w, 1)
    fail(store, v, w, lease.lease, "KernelError: device lost", kind="")
    now = time.time()

    def stalled(at: float) -> str | None:
        return store.tx(lambda c: jobs_q.status_of(c, jobs_q.job_record(c, job), "", at)).stalled

    assert stalled(now + 5) is None, "a moment without a lease is not a stall"
    # The only worker already computed the unit; a minute on, nothing can take it.
    later = now + jobs_q.STALL_AFTER_S + 1
    text = stalled(later)
    assert text is not None
    assert text.startswith("no unit of this job was leased or returned for 6")
    assert text.endswith(
        "1 unit(s) wait for a worker that has not computed them yet (1 different worker(s) "
        "have worked on this job; quorum 2 needs 2 different workers, each on its own client "
        "address by default). Connect another worker, or cancel the job"
    )


def test_a_job_queued_behind_another_is_not_stalled(store: Store, blobs: BlobStore) -> None:
    busy = submit(store, 1)
    queued = submit(store, 1)
    w = worker(store, "1")
    (lease,) = claim(store, w, 1)
    assert lease.job == busy
    later = time.time() + jobs_q.STALL_AFTER_S + 1

    def stalled(at: float) -> str | None:
        return store.tx(lambda c: jobs_q.status_of(c, jobs_q.job_record(c, queued), "", at)).stalled

    # The worker still computes its lease, however long that takes: the job waits behind it.
    assert stalled(later) is None
    assert stalled(time.time() + 30) is None
    # Once that worker is gone (its lease released) nobody active can take the job: stalled.
    store.tx(leases_q.release_worker, w, time.time())
    text = stalled(later)
    assert text is not None and "0 different worker(s)" in text


@pytest.fixture
def live(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    from tabgrid.settings import Settings
    from test_http_hardening import LiveServer

    monkeypatch.setattr(jobs_q, "STALL_AFTER_S", 1.0)  # a minute, shortened for the test
    with LiveServer(Settings(db=f"sqlite:///{tmp_path}/t.db", data_dir=tmp_path)) as server:
        _, token = server.store.create_token("submitter", "alice")
        server.secret = token  # type: ignore[attr-defined]
        yield server


def test_wait_reports_a_stalled_job_instead_of_waiting_silently(live, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tabgrid.cli import main
    from tabgrid.client.sdk import Client, JobStalled

    with Client(live.url, live.secret) as client:
        job = client.submit("checksum", [{"params": {"i": 0}}])  # no worker is connected
        start = time.monotonic()
        with pytest.raises(JobStalled) as e:
            client.wait(job.id, progress=False, timeout=60)
        assert time.monotonic() - start < 30
    assert str(e.value).startswith(
        f"job {job.id} is stalled: no unit of this job was leased or returned for "
    )
    assert str(e.value).endswith(
        "1 unit(s) wait for a worker that has not computed them yet (0 different worker(s) "
        "have worked on this job; quorum 2 needs 2 different workers, each on its own client "
        "address by default). Connect another worker, or cancel the job"
    )
    assert e.value.status.state == "running", "the job keeps its place"
    # The CLI's --wait likewise: exit status 1 and the reason, not a silent wait.
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"kernel": "checksum", "units": [{"params": {"i": 1}}]}))
    capsys.readouterr()
    args = ["submit", str(spec), "--wait", "--url", live.url, "--token", live.secret]
    assert main(args) == 1
    out, err = capsys.readouterr()
    stalled_id = int(out.strip())
    lines = err.splitlines()
    # Progress into a pipe: a plain line, then the last status with why it stalled.
    bar = f"job {stalled_id} [" + "." * 64 + "]   0.0% 0/1 0.00/s ETA --:--"
    assert lines[0] == bar and lines[1] == bar
    assert lines[2].startswith("  stalled: no unit of this job was leased or returned for ")
    assert lines[3].startswith(f"job {stalled_id} is stalled: no unit of this job was leased")
    assert lines[3].endswith("Connect another worker, or cancel the job")
    assert lines[4:] == ["the job keeps its place; wait again once it can progress"]


def test_wait_times_out_with_what_to_do(live) -> None:  # type: ignore[no-untyped-def]
    from tabgrid.client.sdk import Client

    with Client(live.url, live.secret) as client:
        job = client.submit("checksum", [{"params": {"i": 0}}])
        with pytest.raises(TimeoutError) as e:
            client.wait(job.id, progress=False, timeout=0.3)
    assert str(e.value) == (
        f"job {job.id} did not finish within 0.3 s; it keeps running: wait again, or pass a "
        "larger timeout (None: no limit)"
    )
