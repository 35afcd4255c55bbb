"""Big jobs through the SDK against the real app: the coordinator publishes its limits, the SDK
refuses a job over them before uploading anything, or splits it into a Batch of jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tabgrid.client.sdk import Batch, Client, TooLarge
from tabgrid.protocol import JobSubmit, Policy, UnitSpec, encoder
from tabgrid.settings import Limits, Settings
from tabgrid.store import jobs as jobs_q
from test_http_hardening import LiveServer


class Served:
    """The real app on a port of its own, and an SDK client that counts what it sends."""

    def __init__(self, tmp: Path, **limits: Any) -> None:
        settings = Settings(db=f"sqlite:///{tmp}/t.db", data_dir=tmp, limits=Limits(**limits))
        self.live = LiveServer(settings).__enter__()
        self.url = self.live.url
        self.store = self.live.store
        _, self.token = self.store.create_token("submitter", "alice")
        self.posts = 0

        def count(request: Any) -> None:
            if request.method in ("POST", "PUT"):
                self.posts += 1

        self.client = Client(self.url, self.token)
        self.client._http.event_hooks["request"].append(count)
        self.http = httpx.Client(base_url=self.url)

    def jobs(self) -> list[dict]:
        return self.store.tx(jobs_q.list_jobs, None, None, 100)

    def close(self) -> None:
        self.client.close()
        self.http.close()
        self.live.__exit__(None, None, None)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    made: list[Served] = []

    def make(**limits: Any) -> Served:
        s = Served(tmp_path / f"c{len(made)}", **limits)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def checksum_units(n: int, x: np.ndarray | None = None) -> list[dict]:
    inputs = {} if x is None else {"x": x}
    return [{"params": {"i": i}, "inputs": inputs} for i in range(n)]


def test_the_coordinator_publishes_its_limits(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(max_units=1234, max_body=5678, max_blob=910)
    got = s.client.limits()
    assert (got.max_units, got.max_body, got.max_blob) == (1234, 5678, 910)
    anonymous = s.http.get("/api/v1/limits")
    assert anonymous.status_code == 401


def test_500000_units_are_refused_before_anything_is_uploaded(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve()  # the default limits: 200,000 units a job
    x = np.arange(4, dtype=np.uint32)
    start = time.monotonic()
    with pytest.raises(TooLarge) as e:
        s.client.submit("checksum", checksum_units(500_000, x))
    assert time.monotonic() - start < 10
    assert str(e.value) == (
        f"this job has 500000 units, but the coordinator at {s.url} takes at most "
        "200000 units per job (max_units, GET /api/v1/limits); nothing was uploaded. Pass "
        "split=True to submit it as 3 jobs of one Batch, or submit at most 200000 units per job"
    )
    assert s.posts == 0, "not a blob, not a job was sent"
    assert s.jobs() == []


def test_a_job_over_max_units_splits_into_a_batch_in_input_order(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(max_units=2000)  # as 500,000 against 200,000, at a size that keeps the test fast
    batch = s.client.submit("checksum", checksum_units(5000), name="big", split=True)
    assert isinstance(batch, Batch)
    assert [j.units for j in batch.jobs] == [2000, 2000, 1000]
    assert batch.offsets == [0, 2000, 4000] and batch.units == 5000
    assert [j.name for j in batch.jobs] == ["big [1/3]", "big [2/3]", "big [3/3]"]
    assert sorted(j["id"] for j in s.jobs()) == sorted(batch.ids)
    # Unit k of the batch is unit k - offset of its part, in the order given.
    last = s.store.tx(jobs_q.list_units, batch.ids[2], Policy(quorum=2), None, -1, 1)
    assert last[0].index == 0
    assert s.client.job(batch.ids[2]).units == 1000


def test_a_body_over_max_body_is_split_by_bytes(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(max_body=4096)
    units = checksum_units(300)
    with pytest.raises(TooLarge) as e:
        s.client.submit("checksum", units)
    text = str(e.value)
    size = len(
        encoder.encode(
            JobSubmit(kernel="checksum", units=[UnitSpec(params=u["params"]) for u in units])
        )
    )
    assert text.startswith(
        f"this job's submission is {size} bytes, but the coordinator at {s.url} "
        "takes at most 4096 bytes per request (max_body, GET /api/v1/limits); the job was not "
        "sent. Pass split=True"
    )
    assert s.jobs() == []
    batch = s.client.submit("checksum", units, split=True)
    assert len(batch.jobs) > 1 and batch.units == 300
    assert batch.offsets[0] == 0
    assert [b - a for a, b in zip(batch.offsets, batch.offsets[1:], strict=False)] == [
        j.units for j in batch.jobs[:-1]
    ]
    # Each part was accepted by the coordinator, so each was within its max_body.
    assert len(s.jobs()) == len(batch.jobs)


def test_the_coordinators_own_413_says_what_to_do(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(max_body=4096)
    body = encoder.encode(
        JobSubmit(kernel="checksum", units=[UnitSpec(params={"i": i}) for i in range(300)])
    )
    r = s.http.post(
        "/api/v1/jobs",
        content=body,
        headers={"authorization": f"Bearer {s.token}", "content-type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["detail"] == (
        f"a job submission may be at most 4096 bytes (this one has {len(body)} bytes): split "
        "it into several smaller ones (the SDK's submit(split=True) does, within GET "
        "/api/v1/limits), or ask the coordinator's operator to raise max_body (or max_blob "
        "for a blob)"
    )


def test_a_unit_too_large_for_any_submission_is_named(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(max_body=2048)
    units = [{"params": {"i": 0}}, {"params": {"pad": "x" * 4000}}]
    with pytest.raises(TooLarge, match=r"^unit 1 alone is \d+ bytes, more than a submission"):
        s.client.submit("checksum", units, split=True)
    assert s.jobs() == []
