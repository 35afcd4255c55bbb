"""Operator endpoints: roles, ban and drain with real worker sockets, jobs, tokens, audit,
/metrics, the console stream's cost, pictures."""

from __future__ import annotations

import asyncio
import json
import re
import time
import zlib

import pytest
from starlette.testclient import TestClient

from tabgrid import kernels
from tabgrid.api.picture import render
from tabgrid.app import create_app
from tabgrid.coordinator.console_hub import ConsoleHub, View
from tabgrid.coordinator.telemetry import Telemetry
from tabgrid.coordinator.validator import JobContext
from tabgrid.protocol import Policy
from tabgrid.settings import Settings
from tabgrid.store import Store, audit, bans, disagreements
from tabgrid.store.leases import Claimed
from tabgrid.store.migrations.legacy import add_missing_columns
from tabgrid.store.tables import Worker
from test_gateway import WS, hello, lease_one, send_output, submit


@pytest.fixture
def app(tmp_path):  # type: ignore[no-untyped-def]
    settings = Settings(
        db=f"sqlite:///{tmp_path / 't.db'}",
        data_dir=tmp_path,
        distinct_addresses=False,
        console_interval_s=0.05,
    )
    return create_app(settings)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    with TestClient(app) as c:
        store = app.state.services.store
        c.submitter = {"authorization": f"Bearer {store.create_token('submitter', 'sam')[1]}"}
        c.operator = {"authorization": f"Bearer {store.create_token('operator', 'olga')[1]}"}
        c.headers.update(c.submitter)  # what test_gateway's helpers submit with
        yield c


def op(client: TestClient, method: str, path: str, **kw):  # type: ignore[no-untyped-def]
    return client.request(method, path, headers=client.operator, **kw)


def only_worker(client: TestClient) -> dict:
    """The one worker's row, once a console tick has seen it."""
    deadline = time.monotonic() + 5
    while True:
        rows = op(client, "GET", "/api/v1/workers").json()["rows"]
        if rows or time.monotonic() > deadline:
            (row,) = rows
            return row
        time.sleep(0.05)


def rehello(ws, wid: str, secret: str) -> dict:  # type: ignore[no-untyped-def]
    ws.send_text(
        json.dumps({"type": "hello", "kind": "native", "worker_id": wid, "secret": secret})
    )
    return ws.receive_json()


def test_operator_endpoints_need_the_operator_role(client: TestClient) -> None:
    job = submit(client, 1)
    calls = [
        ("GET", "/api/v1/workers", None),
        ("POST", "/api/v1/workers/abc/ban", {"reason": "x"}),
        ("POST", "/api/v1/workers/abc/drain", {}),
        ("POST", f"/api/v1/jobs/{job}/pause", {}),
        ("POST", f"/api/v1/jobs/{job}/priority", {"priority": 3}),
        ("GET", "/api/v1/tokens", None),
        ("DELETE", "/api/v1/tokens/1", None),
        ("GET", "/api/v1/audit", None),
        ("GET", "/metrics", None),
        ("GET", "/api/v1/console/stream", None),
    ]
    for method, path, body in calls:
        anonymous = client.request(method, path, json=body, headers={"authorization": ""})
        assert anonymous.status_code == 401, (path, anonymous.text)
        refused = client.request(method, path, json=body, headers=client.submitter)
        assert refused.status_code == 403, (path, refused.text)
        assert "operator" in refused.json()["detail"]


def test_ban_releases_leases_discards_unvalidated_results_and_closes_the_socket(
    client: TestClient,
) -> None:
    job = submit(client, 2, quorum=2)
    with client.websocket_connect(WS) as bad:
        lease = lease_one(bad)
        send_output(bad, lease, b"\x07")  # returned, waiting for a second result
        bad.send_text(json.dumps({"type": "ready", "n": 1}))
        held = bad.receive_json()["leases"]  # the second unit, still computing
        wid = only_worker(client)["id"]
        r = op(client, "POST", f"/api/v1/workers/{wid}/ban", json={"reason": "wrong answers"})
        assert r.status_code == 200, r.text
        assert r.json() == {"id": wid, "action": "ban", "released": len(held), "discarded": 1}
        bye = bad.receive_json()
        assert bye["type"] == "bye" and "wrong answers" in bye["reason"]
        assert bye["code"] == "banned"
    units = client.get(f"/api/v1/jobs/{job}/units").json()["units"]
    assert [u["results"] for u in units] == [0, 0], "the banned worker's result no longer counts"
    (entry,) = op(client, "GET", "/api/v1/audit").json()["entries"]
    assert entry["action"] == "ban" and entry["actor"] == "olga"
    assert entry["target"] == f"worker {wid}" and "wrong answers" in entry["detail"]


def test_banned_worker_reconnecting_is_refused(client: TestClient, app) -> None:  # type: ignore[no-untyped-def]
    with client.websocket_connect(WS) as ws:
        welcome = hello(ws)
    wid, secret = welcome["worker_id"], welcome["secret"]
    assert op(client, "POST", f"/api/v1/workers/{wid}/ban", json={"reason": "r"}).status_code == 200
    with client.websocket_connect(WS) as ws:
        ws.send_text(
            json.dumps({"type": "hello", "kind": "native", "worker_id": wid, "secret": secret})
        )
        assert ws.receive_json() == {
            "type": "bye",
            "reason": "this worker is banned by the operator",
            "code": "banned",
        }
    assert op(client, "POST", f"/api/v1/workers/{wid}/unban", json={}).status_code == 200
    with client.websocket_connect(WS) as ws:
        ws.send_text(
            json.dumps({"type": "hello", "kind": "native", "worker_id": wid, "secret": secret})
        )
        assert ws.receive_json()["worker_id"] == wid


def test_a_ban_made_through_another_coordinator_takes_effect_at_the_next_claim(
    client: TestClient,
    app,  # type: ignore[no-untyped-def]
) -> None:
    submit(client, 2, quorum=2)
    store = app.state.services.store
    with client.websocket_connect(WS) as ws:
        wid = hello(ws)["worker_id"]
        # Written to the shared database only, as another coordinator's ban would be.
        store.tx(bans.ban, wid, "seen elsewhere", time.time())
        ws.send_text(json.dumps({"type": "ready", "n": 1}))
        bye = ws.receive_json()
        assert bye["type"] == "bye" and "banned" in bye["reason"]
    with client.websocket_connect(WS) as ws:
        other = hello(ws)["worker_id"]
        store.tx(bans.set_draining, other, True)
        ws.send_text(json.dumps({"type": "ready", "n": 1}))
        idle = ws.receive_json()
        assert idle["type"] == "idle" and "drained" in idle["reason"]


def test_results_sent_after_a_ban_do_not_count(client: TestClient, app) -> None:  # type: ignore[no-untyped-def]
    job = submit(client, 1, quorum=2)
    with client.websocket_connect(WS) as ws:
        lease = lease_one(ws)
        wid = only_worker(client)["id"]
        app.state.services.store.tx(bans.ban, wid, "elsewhere", time.time())
        answer = send_output(ws, lease, b"\x01")  # computed before it heard of the ban
        assert answer["type"] == "error" and "banned" in answer["message"]
    (unit,) = client.get(f"/api/v1/jobs/{job}/units").json()["units"]
    assert unit["results"] == 0 and unit["state"] == "pending"


def test_hold_drops_the_credit_a_paused_worker_asked_for(client: TestClient) -> None:
    with client.websocket_connect(WS) as ws:
        hello(ws)
        ws.send_text(json.dumps({"type": "ready", "n": 1}))
        assert ws.receive_json()["type"] == "idle"  # nothing to do: the credit waits
        assert only_worker(client)["state"] == "active"
        ws.send_text(json.dumps({"type": "hold"}))
        deadline = time.monotonic() + 5
        while only_worker(client)["state"] != "paused":
            assert time.monotonic() < deadline, "the worker never showed as paused"
            time.sleep(0.05)
        submit(client, 1, quorum=2)
        time.sleep(0.3)
        assert only_worker(client)["leases"] == 0  # the held ask got no lease


def test_a_hold_that_lands_while_a_claim_runs_leaves_no_negative_credit(
    client: TestClient,  # runs the app's lifespan, which closes its store
    app,  # type: ignore[no-untyped-def]
) -> None:
    scheduler = app.state.services.scheduler
    peer = _Peer("w")
    peer.posted = []  # type: ignore[attr-defined]
    peer.post = peer.posted.append  # type: ignore[attr-defined]
    scheduler.validator._contexts[1] = JobContext(kernels.get("checksum"), Policy(), {}, {}, "k1")
    peer.jobs_sent, peer.idle_reason, peer.leases = {"k1"}, None, set()
    peer.credit = 0  # the hold came in after the tick read a credit of 1
    scheduler._send_leases(peer, [Claimed(7, 1, 1, 0, "{}", "{}", 0.0)])
    assert peer.credit == 0 and peer.leases == {7}
    scheduler.ready(peer, 1)
    assert peer.credit == 1, "a later ready must be heard"


def test_hello_fields_are_bounded(client: TestClient) -> None:
    with client.websocket_connect(WS) as ws:
        ws.send_text(json.dumps({"type": "hello", "kind": "native", "name": "x" * 10_000}))
        error = ws.receive_json()
        assert error["type"] == "error" and "200" in error["message"]


def test_unknown_http_methods_share_one_metrics_label(client: TestClient) -> None:
    for i in range(3):
        client.request(f"FOO{i}", "/healthz")
    text = op(client, "GET", "/metrics").text
    assert 'method="other"' in text and "FOO" not in text


def test_the_disagreement_feed_keeps_the_newest_rows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = Store(f"sqlite:///{tmp_path / 't.db'}")
    row = {"at": 0.0, "job_id": 1, "unit_id": 1, "idx": 0, "kernel": "k", "summary": "s"}
    try:
        for _ in range(12):
            store.tx(disagreements.record, [row | {"replicas": []}] * 100)
        count = store.tx(lambda c: len(disagreements.recent(c, 5000)))
    finally:
        store.close()
    assert disagreements.KEEP <= count <= disagreements.KEEP + 100


def test_ban_needs_a_reason_and_a_known_worker(client: TestClient) -> None:
    assert op(client, "POST", "/api/v1/workers/abc/ban", json={}).status_code == 422
    assert op(client, "POST", "/api/v1/workers/abc/ban", json={"reason": ""}).status_code == 422
    missing = op(client, "POST", "/api/v1/workers/abc/ban", json={"reason": "x"})
    assert missing.status_code == 404 and "abc" in missing.json()["detail"]
    assert op(client, "POST", "/api/v1/workers/a-b/drain", json={}).status_code == 400


def test_a_drained_worker_finishes_its_lease_and_gets_no_more(client: TestClient) -> None:
    submit(client, 3, quorum=2)
    with client.websocket_connect(WS) as ws:
        lease = lease_one(ws)
        wid = only_worker(client)["id"]
        assert op(client, "POST", f"/api/v1/workers/{wid}/drain", json={}).status_code == 200
        idle = ws.receive_json()
        assert idle["type"] == "idle" and "drained" in idle["reason"]
        assert send_output(ws, lease, b"\x01")["type"] == "stats"  # its result still counts
        ws.send_text(json.dumps({"type": "ready", "n": 2}))
        time.sleep(0.3)
        row = only_worker(client)
        assert row["state"] == "draining" and row["leases"] == 0
        assert op(client, "POST", f"/api/v1/workers/{wid}/undrain", json={}).status_code == 200
        assert len(ws.receive_json()["leases"]) == 2


def test_pause_resume_and_priority(client: TestClient) -> None:
    low, high = submit(client, 2, quorum=2), submit(client, 2, quorum=2)
    paused = op(client, "POST", f"/api/v1/jobs/{high}/pause", json={})
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    again = op(client, "POST", f"/api/v1/jobs/{high}/pause", json={})
    assert again.status_code == 409 and "paused" in again.json()["detail"]
    with client.websocket_connect(WS) as ws:
        hello(ws)
        ws.send_text(json.dumps({"type": "ready", "n": 1}))
        assert ws.receive_json()["job"] == low  # the paused job is not leased
        ws.receive_json()
        assert op(client, "POST", f"/api/v1/jobs/{high}/resume", json={}).json()["state"] == (
            "running"
        )
        r = op(client, "POST", f"/api/v1/jobs/{high}/priority", json={"priority": 5})
        assert r.status_code == 200 and r.json()["policy"]["priority"] == 5
        ws.send_text(json.dumps({"type": "ready", "n": 1}))
        assert ws.receive_json()["job"] == high  # higher priority first
    bad = op(client, "POST", f"/api/v1/jobs/{high}/priority", json={"priority": 10**6})
    assert bad.status_code == 422
    actions = [e["action"] for e in op(client, "GET", "/api/v1/audit").json()["entries"]]
    assert actions == ["priority", "resume", "pause"]


def test_tokens_listed_revoked_and_audited(client: TestClient) -> None:
    made = op(client, "POST", "/api/v1/tokens", json={"role": "submitter", "name": "eve"})
    assert made.status_code == 201
    token, tid = made.json()["token"], made.json()["id"]
    listed = {t["name"]: t for t in op(client, "GET", "/api/v1/tokens").json()["tokens"]}
    assert listed["eve"]["revoked_at"] is None and "token" not in listed["eve"]
    eve = {"authorization": f"Bearer {token}"}
    assert client.get("/api/v1/jobs", headers=eve).status_code == 200
    assert op(client, "DELETE", f"/api/v1/tokens/{tid}").status_code == 204
    assert client.get("/api/v1/jobs", headers=eve).status_code == 401
    assert op(client, "DELETE", f"/api/v1/tokens/{tid}").status_code == 404
    actions = [e["action"] for e in op(client, "GET", "/api/v1/audit").json()["entries"]]
    assert actions == ["revoke", "create token"]


def test_metrics_in_prometheus_text_format(client: TestClient) -> None:
    submit(client, 1, quorum=2)
    with client.websocket_connect(WS) as one, client.websocket_connect(WS) as two:
        send_output(one, lease_one(one), b"\x01")
        send_output(two, lease_one(two), b"\x01")
        time.sleep(0.3)  # a console tick sets the gauges
        text = op(client, "GET", "/metrics").text
    assert 'tabgrid_results_total{outcome="valid"} 2.0' in text
    assert "tabgrid_units_validated_total 1.0" in text
    assert 'tabgrid_workers_connected{kind="native"} 2.0' in text
    ticks = re.search(r"^tabgrid_tick_duration_seconds_count (\S+)$", text, re.MULTILINE)
    assert ticks is not None and float(ticks.group(1)) >= 2  # the two leases, the two results
    for name in (
        "tabgrid_leases_outstanding",
        "tabgrid_queue_depth",
        "tabgrid_validation_latency_seconds_bucket",
        'tabgrid_http_request_duration_seconds_count{method="POST",route="/api/v1/jobs"',
    ):
        assert name in text


class _Peer:
    def __init__(self, wid: str) -> None:
        self.worker_id, self.addr = wid, "10.0.0.1"
        self.connected_at, self.credit, self.draining = time.time(), 1, False
        self.leases: set[int] = {1}


def test_console_stream_costs_one_aggregation_a_tick_and_a_page_per_viewer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = Store(f"sqlite:///{tmp_path / 't.db'}")
    now = time.time()
    rows = [
        {"id": f"{i:032x}", "secret_hash": "", "kind": "browser", "created_at": now,
         "last_seen": now, "credit": float(i)}
        for i in range(10_000)
    ]  # fmt: skip
    store.tx(lambda conn: conn.execute(Worker.__table__.insert(), rows))  # type: ignore[attr-defined]
    scheduler = type("S", (), {"peers": {r["id"]: _Peer(r["id"]) for r in rows}})()
    hub = ConsoleHub(store, scheduler, Telemetry())  # type: ignore[arg-type]

    async def watch() -> list[bytes]:
        await hub.tick()
        views = [View(), View(sort="id", order="asc", page=3), View(q="0000ff")]
        first = [hub.snapshot(v, None) for v in views for _ in range(20)]  # 60 viewers
        await hub.tick()
        return first + [hub.snapshot(View(), hub.latest.t - 1)]  # type: ignore[union-attr]

    bodies = asyncio.run(watch())
    store.close()
    assert hub.aggregations == hub.ticks == 2, "one aggregation per tick, not per viewer"
    top = json.loads(bodies[0])
    assert top["network"]["workers"]["connected"] == 10_000
    assert top["workers"]["total"] == 10_000 and len(top["workers"]["rows"]) == 50
    assert top["workers"]["rows"][0]["credit"] == 9_999  # sorted by credit, descending
    assert json.loads(bodies[20])["workers"]["rows"][0]["id"] == f"{150:032x}"
    matching = sum("0000ff" in f"{i:032x}" for i in range(10_000))
    assert json.loads(bodies[40])["workers"]["total"] == matching
    # The payload is bounded by the page, not by the 10,000 workers.
    assert max(len(b) for b in bodies) < 40_000


def test_view_parameters_are_checked() -> None:
    assert View.parse({"sort": "leases", "per_page": "500"}).per_page == 100
    for bad in ({"sort": "secret"}, {"order": "up"}, {"page": "-1"}, {"state": "x"}):
        with pytest.raises(Exception, match="must be"):
            View.parse(bad)


def test_picture_draws_validated_tiles_and_greys_the_rest() -> None:
    import numpy as np

    def tile(x0: float) -> dict:
        return {"x0": x0, "x1": x0 + 1, "y0": 0.0, "y1": 1.0, "width": 4, "height": 2,
                "max_iter": 10}  # fmt: skip

    png = render([(tile(0.0), np.full((2, 4), 10, np.uint32)), (tile(1.0), None)])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (8, 2)
    start = png.index(b"IDAT") + 4
    raw = zlib.decompress(png[start : start + int.from_bytes(png[start - 8 : start - 4], "big")])
    row = raw[1 : 1 + 8 * 3]
    assert row[:3] == b"\0\0\0" and row[-3:] == bytes((42, 47, 58))  # in the set / pending


def test_old_database_gets_the_new_columns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE workers (id VARCHAR PRIMARY KEY, banned BOOLEAN)")
    conn.close()
    store = Store(f"sqlite:///{path}")  # opening it upgrades it, adding what is missing
    try:
        assert store.tx(add_missing_columns) == []
        store.tx(audit.recent, 1)
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        cols = {row[1] for row in conn.execute("PRAGMA table_info(workers)")}
    conn.close()
    assert {"ban_reason", "draining"} <= cols


def test_an_operator_deleting_someones_job_is_audited_as_delete(client: TestClient) -> None:
    cancelled, deleted = submit(client, 1), submit(client, 1)
    assert op(client, "POST", f"/api/v1/jobs/{cancelled}/cancel").status_code == 200
    assert op(client, "DELETE", f"/api/v1/jobs/{deleted}").status_code == 204
    entries = op(client, "GET", "/api/v1/audit").json()["entries"]
    assert [(e["action"], e["target"]) for e in entries] == [
        ("delete", f"job {deleted}"),
        ("cancel", f"job {cancelled}"),
    ]
