"""The worker websocket: protocol state machine, flow control, bad input, lease release."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tabgrid.app import create_app
from tabgrid.settings import Limits, Settings

WS = "/api/v1/worker"
HELLO = {"type": "hello", "kind": "native", "name": "t"}


@pytest.fixture
def client(tmp_path):  # type: ignore[no-untyped-def]
    settings = Settings(
        db=f"sqlite:///{tmp_path / 't.db'}",
        data_dir=tmp_path,
        distinct_addresses=False,
        limits=Limits(max_message=4096, max_bad_messages=3),
    )
    app = create_app(settings)
    with TestClient(app) as c:
        _, token = app.state.services.store.create_token("submitter", "t")
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def submit(client: TestClient, n: int, quorum: int = 2) -> int:
    body = {
        "kernel": "checksum",
        "units": [{"params": {"i": i}} for i in range(n)],
        "policy": {"quorum": quorum},
    }
    r = client.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def hello(ws) -> dict:  # type: ignore[no-untyped-def]
    ws.send_text(json.dumps(HELLO))
    welcome = ws.receive_json()
    assert welcome["type"] == "welcome"
    return welcome


def test_malformed_json_gets_an_error_and_the_socket_stays(client: TestClient) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_text("{not json")
        err = ws.receive_json()
        assert err["type"] == "error" and err["code"] == "bad_message"
        assert "decode" in err["message"]
        hello(ws)


def test_unknown_message_type_is_named(client: TestClient) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_text(json.dumps({"type": "gimme"}))
        err = ws.receive_json()
        assert err["code"] == "bad_message" and "gimme" in err["message"]


def test_messages_before_hello_are_refused(client: TestClient) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_text(json.dumps({"type": "ready", "n": 1}))
        err = ws.receive_json()
        assert err["code"] == "hello_first" and "expected hello" in err["message"]


def test_repeated_bad_messages_close_with_a_reason(client: TestClient) -> None:
    with client.websocket_connect(WS) as ws:
        for _ in range(3):
            ws.send_text("nope")
        msgs = [ws.receive_json() for _ in range(4)]
        assert msgs[-1]["type"] == "bye" and "bad messages" in msgs[-1]["reason"]
        with pytest.raises(WebSocketDisconnect) as e:
            ws.receive_json()
        assert e.value.code == 1008
    assert client.get("/healthz").status_code == 200


def test_oversized_message_closes_the_socket_not_the_server(client: TestClient) -> None:
    with client.websocket_connect(WS) as ws:
        hello(ws)
        ws.send_text(json.dumps({"type": "bye", "reason": "x" * 5000}))
        bye = ws.receive_json()
        assert bye["type"] == "bye" and "over 4096" in bye["reason"]
    assert client.get("/healthz").status_code == 200


def test_a_message_over_the_welcomes_count_of_results_is_refused(client: TestClient) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_text(json.dumps(HELLO | {"acks": True}))
        welcome = ws.receive_json()
        assert welcome["max_results"] == 2 * Limits().max_leases
        n = welcome["max_results"] + 1
        ws.send_text(json.dumps({"type": "result", "results": [{"lease": i} for i in range(n)]}))
        ack = ws.receive_json()
        assert ack["type"] == "ack" and len(ack["leases"]) == n, "refused for good"
        err = ws.receive_json()
        assert err["code"] == "too_many" and f"{n} results" in err["message"]


def test_flow_control_never_sends_more_than_asked(client: TestClient) -> None:
    submit(client, 5, quorum=2)
    with client.websocket_connect(WS) as ws:
        hello(ws)
        ws.send_text(json.dumps({"type": "ready", "n": 2}))
        spec = ws.receive_json()
        assert spec["type"] == "job" and spec["kernel"] == "checksum"
        lease = ws.receive_json()
        assert lease["type"] == "lease" and len(lease["leases"]) == 2
        ws.send_text(json.dumps({"type": "ready", "n": 1}))
        lease = ws.receive_json()
        assert lease["type"] == "lease" and len(lease["leases"]) == 1


def test_disconnect_releases_leases_to_the_next_worker(client: TestClient) -> None:
    submit(client, 3)
    with client.websocket_connect(WS) as ws:
        hello(ws)
        ws.send_text(json.dumps({"type": "ready", "n": 3}))
        ws.receive_json()
        assert len(ws.receive_json()["leases"]) == 3
    with client.websocket_connect(WS) as ws2:
        hello(ws2)
        ws2.send_text(json.dumps({"type": "ready", "n": 3}))
        ws2.receive_json()
        assert len(ws2.receive_json()["leases"]) == 3


def test_result_for_a_lease_never_given_is_refused(client: TestClient) -> None:
    with client.websocket_connect(WS) as ws:
        hello(ws)
        ws.send_text(json.dumps({"type": "result", "results": [{"lease": 999, "error": "x"}]}))
        err = ws.receive_json()
        assert err["code"] == "bad_result" and "999" in err["message"]


def lease_one(ws) -> dict:  # type: ignore[no-untyped-def]
    """Says hello, asks for one unit, returns its lease (after the job description)."""
    hello(ws)
    ws.send_text(json.dumps({"type": "ready", "n": 1}))
    assert ws.receive_json()["type"] == "job"
    (lease,) = ws.receive_json()["leases"]
    return lease


def send_output(ws, lease: dict, data: bytes, **claims: object) -> dict:  # type: ignore[no-untyped-def]
    """Sends one inline output (uint8, its true digest and shape unless `claims` say otherwise)
    as the lease's result; returns the coordinator's answer."""
    out = {
        "digest": hashlib.sha256(data).hexdigest(),
        "dtype": "uint8",
        "shape": [len(data)],
        "data": base64.b64encode(data).decode(),
    } | claims
    result = {"lease": lease["lease"], "outputs": {"y": out}}
    ws.send_text(json.dumps({"type": "result", "results": [result]}))
    return ws.receive_json()


def test_idle_worker_is_told_why(client: TestClient) -> None:
    submit(client, 1, quorum=2)
    with client.websocket_connect(WS) as ws:
        stats = send_output(ws, lease_one(ws), b"\x01")
        assert stats["type"] == "stats" and stats["results"] == 1 and stats["pending"] == 1
        ws.send_text(json.dumps({"type": "ready", "n": 1}))
        idle = ws.receive_json()
        assert idle["type"] == "idle" and "different worker" in idle["reason"]


def test_inline_output_that_lies_about_its_digest_is_an_error(client: TestClient) -> None:
    submit(client, 1, quorum=2)
    with client.websocket_connect(WS) as ws:
        stats = send_output(ws, lease_one(ws), b"\x01", digest="0" * 64)
        assert stats["type"] == "stats" and stats["errors"] == 1


def test_output_whose_bytes_do_not_fit_its_shape_is_an_error(client: TestClient) -> None:
    """A worker claiming float32 [1000] for one byte must not reach the comparators."""
    submit(client, 1, quorum=2)
    with client.websocket_connect(WS) as ws:
        stats = send_output(ws, lease_one(ws), b"\x01", dtype="float32", shape=[1000])
        assert stats["type"] == "stats" and stats["errors"] == 1
    assert client.get("/healthz").status_code == 200


def test_a_worker_that_asks_gets_each_result_acknowledged(client: TestClient) -> None:
    submit(client, 1, quorum=2)
    with client.websocket_connect(WS) as ws:
        ws.send_text(json.dumps(HELLO | {"acks": True}))
        assert ws.receive_json()["acks"] is True
        ws.send_text(json.dumps({"type": "result", "results": [{"lease": 999, "error": "x"}]}))
        assert ws.receive_json() == {"type": "ack", "leases": [999]}, "refused, and dealt with"
        assert ws.receive_json()["code"] == "bad_result"
        ws.send_text(json.dumps({"type": "ready", "n": 1}))
        assert ws.receive_json()["type"] == "job"
        (lease,) = ws.receive_json()["leases"]
        result = {"type": "result", "results": [{"lease": lease["lease"], "error": "boom"}]}
        ws.send_text(json.dumps(result))
        assert ws.receive_json() == {"type": "ack", "leases": [lease["lease"]]}
        stats = ws.receive_json()
        assert stats["type"] == "stats" and stats["results"] == 1 and stats["errors"] == 1
        ws.send_text(json.dumps(result))  # a copy: acknowledged again, counted once
        assert ws.receive_json() == {"type": "ack", "leases": [lease["lease"]]}
        ws.send_text(json.dumps({"type": "ready", "n": 1}))
        assert ws.receive_json()["type"] == "idle", "no stats: nothing changed"
