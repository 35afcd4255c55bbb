"""The SDK against a small in-memory coordinator behind httpx's mock transport."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest

from tabgrid.client.sdk import Client, TabgridError, decode_array, encode_array, iter_sse
from tabgrid.protocol import JobStatus, Output, Policy, UnitCounts, UnitResultLine, encoder


def status(state: str = "running", done: int = 0, total: int = 4) -> JobStatus:
    return JobStatus(
        id=1,
        name="",
        kernel="checksum",
        owner="me",
        state=state,  # type: ignore[arg-type]
        policy=Policy(),
        units=total,
        counts=UnitCounts(pending=total - done, done=done),
        fraction_done=done / total,
        created_at=0.0,
        updated_at=0.0,
        rate=2.0,
    )


def sse(*events: tuple[str, Any]) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {encoder.encode(body).decode()}\n\n".encode()
        for name, body in events
    )


class Api:
    """Answers the routes the SDK uses; records every request."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.submitted: dict[str, Any] | None = None
        self.events: Any = b""
        self.polls: list[JobStatus] = []
        self.results = b""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        self.requests.append((method, path))
        if path.startswith("/api/v1/blobs/"):
            return self.blob(request, path.rsplit("/", 1)[1])
        if (method, path) == ("POST", "/api/v1/jobs"):
            self.submitted = json.loads(request.content)
            return httpx.Response(201, content=encoder.encode(status()))
        if (method, path) == ("DELETE", "/api/v1/jobs/1"):
            return httpx.Response(204)
        if path == "/api/v1/jobs/1/events":
            return httpx.Response(200, content=self.events)
        if path == "/api/v1/jobs/1":
            return httpx.Response(200, content=encoder.encode(self.polls.pop(0)))
        if path == "/api/v1/jobs/1/results":
            return httpx.Response(200, content=self.results)
        if path == "/api/v1/jobs/1/units":
            return self.units(request)
        return httpx.Response(404, json={"title": "Not Found", "status": 404})

    def blob(self, request: httpx.Request, digest: str) -> httpx.Response:
        if request.method == "PUT":
            assert hashlib.sha256(request.content).hexdigest() == digest
            self.blobs[digest] = request.content
            return httpx.Response(201)
        if digest not in self.blobs:
            return httpx.Response(404)
        return httpx.Response(200, content=self.blobs[digest])

    def units(self, request: httpx.Request) -> httpx.Response:
        after = int(request.url.params.get("after", -1))
        indexes = [i for i in range(5) if i > after][:2]
        page = {
            "units": [{"index": i, "state": "done", "replicas": 2, "results": 2} for i in indexes],
            "next_after": indexes[-1] if indexes and indexes[-1] < 4 else None,
        }
        return httpx.Response(200, json=page)


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def client(api: Api) -> Iterator[Client]:
    with Client("http://tg.test/", "tok", transport=httpx.MockTransport(api)) as c:
        yield c


def test_arrays_travel_as_little_endian_c_order_bytes() -> None:
    big_endian = np.arange(6, dtype=">i4").reshape(2, 3).T
    little, dtype = encode_array(big_endian)
    assert dtype == "int32" and little.flags.c_contiguous
    assert little.tobytes() == np.ascontiguousarray(big_endian.astype("<i4")).tobytes()
    back = decode_array(little.tobytes(), "int32", [3, 2])
    np.testing.assert_array_equal(back, big_endian)
    assert encode_array(np.float32(2.0))[0].shape == ()
    with pytest.raises(TypeError, match="float32"):
        encode_array(np.zeros(2, np.float16))
    with pytest.raises(ValueError, match="needs 24 bytes"):
        decode_array(bytes(20), "int32", [3, 2])


def test_event_stream_parsing() -> None:
    lines = [": hello", "event: progress", "data: {", "data: }", "", "data: x", "", "event: end"]
    assert list(iter_sse(lines)) == [("progress", "{\n}"), ("message", "x")]


def test_problem_documents_become_readable_errors(client: Client, api: Api) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        problem = {
            "title": "Invalid job",
            "status": 422,
            "detail": "2 problems",
            "errors": ["unit 0: missing param 'n'", "unknown kernel 'x'"],
        }
        return httpx.Response(422, json=problem)

    bad = Client("http://tg.test", "tok", transport=httpx.MockTransport(refuse))
    with bad, pytest.raises(TabgridError) as caught:
        bad.submit("x", [{"params": {}}])
    error = caught.value
    assert (error.status, error.title) == (422, "Invalid job")
    assert str(error) == (
        "Invalid job (HTTP 422): 2 problems\n  - unit 0: missing param 'n'\n  - unknown kernel 'x'"
    )
    with pytest.raises(TabgridError, match=r"Not Found \(HTTP 404\)"):
        client.cancel(5)


def test_submit_uploads_each_distinct_array_once(client: Client, api: Api) -> None:
    shared = np.ones((4, 4), np.float32)
    twin = shared.copy()  # same bytes, another object
    big = np.zeros(20_000, np.float32)  # above the size where the SDK asks before sending
    units = [{"params": {"k": k}, "inputs": {"a": shared, "b": twin}} for k in range(3)]
    job = client.submit("checksum", units, inputs={"big": big}, policy={"quorum": 1}, name="t")
    assert job.id == 1
    big_path = "/api/v1/blobs/" + hashlib.sha256(big.tobytes()).hexdigest()
    assert len([m for m, _ in api.requests if m == "PUT"]) == 2 and len(api.blobs) == 2
    assert [(m, p) for m, p in api.requests if m == "HEAD"] == [("HEAD", big_path)]
    body = api.submitted
    assert body is not None
    assert body["kernel"] == "checksum" and body["name"] == "t"
    assert body["policy"]["quorum"] == 1
    digest = hashlib.sha256(shared.tobytes()).hexdigest()
    expected = {"digest": digest, "dtype": "float32", "shape": [4, 4]}
    assert body["units"][2]["inputs"] == {"a": expected, "b": expected}
    assert body["units"][2]["params"] == {"k": 2}
    # A second upload of known bytes costs no request.
    before = len(api.requests)
    client.upload(shared)
    client.upload(big)
    assert len(api.requests) == before
    with pytest.raises(ValueError, match="unknown keys"):
        client.submit("checksum", [{"param": {}}])
    # Deleting a job may free its blobs, so the next upload sends them again.
    client.delete(1)
    client.upload(shared)
    assert api.requests[-1] == ("PUT", "/api/v1/blobs/" + digest)


def test_wait_follows_events_and_draws_a_bar(
    client: Client, api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    api.events = sse(("progress", status(done=1)), ("progress", status(done=3)))
    api.events += sse(("end", status("done", done=4)))
    final = client.wait(1, progress="always")
    assert final.state == "done" and final.counts.done == 4
    err = capsys.readouterr().err
    assert "1/4" in err and err.rstrip().endswith("done") and err.endswith("\n")
    assert ("GET", "/api/v1/jobs/1") not in api.requests


def test_wait_polls_when_the_stream_breaks(
    client: Client, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tabgrid.client.sdk.POLL_INTERVAL_S", 0.01)

    def broken() -> Iterator[bytes]:
        yield sse(("progress", status(done=1)))
        raise httpx.ReadError("connection reset")

    api.events = broken()
    api.polls = [status(done=2), status("done", done=4)]
    final = client.wait(1, progress=False)
    assert final.state == "done" and api.polls == []


def test_wait_gives_up_after_its_timeout(client: Client, api: Api) -> None:
    api.events = b""
    api.polls = [status(done=1)] * 10
    with pytest.raises(TimeoutError):
        client.wait(1, progress=False, timeout=0.2)


def test_results_come_back_as_arrays_checked_against_digests(client: Client, api: Api) -> None:
    inline = np.arange(3, dtype=np.uint32)
    stored = np.full((2, 2), 7.5, np.float32)
    api.blobs[hashlib.sha256(stored.tobytes()).hexdigest()] = stored.tobytes()

    def out(a: np.ndarray, data: bool) -> Output:
        digest = hashlib.sha256(a.tobytes()).hexdigest()
        return Output(digest, a.dtype.name, list(a.shape), a.tobytes() if data else None)  # type: ignore[arg-type]

    lines = [
        UnitResultLine(0, {"y": out(inline, True)}),
        UnitResultLine(2, {"y": out(stored, False)}),
    ]
    api.results = b"\n".join(encoder.encode(line) for line in lines) + b"\n"
    results = client.results(1)
    assert sorted(results) == [0, 2]
    np.testing.assert_array_equal(results[0]["y"], inline)
    np.testing.assert_array_equal(results[2]["y"], stored)
    api.blobs[lines[1].outputs["y"].digest] = bytes(16)
    with pytest.raises(TabgridError, match="digest mismatch"):
        client.results(1)


def test_units_are_fetched_page_by_page(client: Client, api: Api) -> None:
    assert [u.index for u in client.units(1, state="done", page=2)] == [0, 1, 2, 3, 4]
    pages = [p for m, p in api.requests if p.endswith("/units")]
    assert len(pages) == 3


def test_policy_mistakes_are_caught_before_sending(client: Client) -> None:
    with pytest.raises(msgspec.ValidationError, match="quorum"):
        client.submit("checksum", [{}], policy={"quorum": 0})
