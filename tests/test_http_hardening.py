"""What an attacker found against a live coordinator, each over a real server: uvicorn on a
loopback port, driven by httpx. Out-of-range numbers are 4xx problems, never 500s; a revoked
token loses its open streams within seconds; /status names jobs only to their owners; a
secret is never cacheable."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn

from tabgrid.api import jobs as api_jobs
from tabgrid.app import create_app
from tabgrid.protocol import INT32_MAX, INT64_MAX, JobSubmit, Output, Problem, UnitSpec
from tabgrid.settings import Settings
from tabgrid.store import jobs
from tabgrid.store.codec import dumps

PROBLEM = "application/problem+json"
DIGEST = "ab" * 32


class LiveServer:
    """The real app served by uvicorn from a thread, on a port of its own."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, args=([self.sock],), daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    @property
    def store(self) -> Any:
        return self.app.state.services.store

    def token(self, role: str, name: str) -> tuple[int, dict[str, str]]:
        token_id, secret = self.store.create_token(role, name)
        return token_id, {"authorization": f"Bearer {secret}"}

    def job(self, owner: int, name: str = "", units: int = 2) -> int:
        work = JobSubmit(
            kernel="checksum", name=name, units=[UnitSpec(params={"i": i}) for i in range(units)]
        )
        return self.store.tx(jobs.create_job, owner, work, time.time())


@dataclass
class Env:
    server: LiveServer
    http: httpx.Client
    operator_id: int
    operator: dict[str, str]


MakeEnv = Callable[..., Env]


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[MakeEnv]:
    opened: list[tuple[LiveServer, httpx.Client]] = []

    def make(db: str | None = None, **settings: Any) -> Env:
        data = tmp_path / f"data{len(opened)}"
        url = db or f"sqlite:///{data}/t.db"
        server = LiveServer(Settings(db=url, data_dir=data, **settings)).__enter__()
        http = httpx.Client(base_url=server.url, timeout=10)
        opened.append((server, http))
        op_id, op = server.token("operator", "root")
        return Env(server, http, op_id, op)

    yield make
    for server, http in opened:
        http.close()
        server.__exit__()


@pytest.fixture
def env(make_env: MakeEnv) -> Env:
    return make_env()


def problem(response: httpx.Response, status: int) -> Problem:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    doc = msgspec.json.decode(response.content, type=Problem)
    assert doc.status == status and doc.detail
    return doc


# ---- out-of-range numbers ---------------------------------------------------------------------

ID_ROUTES = (
    ("GET", "/api/v1/jobs/{}"),
    ("DELETE", "/api/v1/jobs/{}"),
    ("GET", "/api/v1/jobs/{}/units"),
    ("GET", "/api/v1/jobs/{}/results"),
    ("GET", "/api/v1/jobs/{}/events"),
    ("POST", "/api/v1/jobs/{}/cancel"),
    ("POST", "/api/v1/jobs/{}/pause"),
    ("POST", "/api/v1/jobs/{}/resume"),
    ("POST", "/api/v1/jobs/{}/priority"),
    ("GET", "/api/v1/jobs/{}/picture.png"),
    ("DELETE", "/api/v1/tokens/{}"),
)


def _body(path: str) -> dict[str, Any] | None:
    if path.endswith("/priority"):
        return {"priority": 1}
    return {} if path.endswith(("/pause", "/resume")) else None


# Past 2^31-1 (a SERIAL on PostgreSQL), past 2^63-1 (SQLite), not an id, not ASCII digits.
BAD_IDS = [str(INT32_MAX + 1), str(INT64_MAX + 1), str(2**70), "0", "²", "٣", "1_0"]


def test_every_id_route_refuses_an_id_no_column_holds(db_url: str, make_env: MakeEnv) -> None:
    env = make_env(db_url)  # db_url first: the server stops before its database goes
    for bad in BAD_IDS:
        for method, path in ID_ROUTES:
            url = path.format(bad)
            r = env.http.request(method, url, headers=env.operator, json=_body(path))
            doc = problem(r, 400)
            assert f"from 1 to {INT32_MAX}" in doc.detail, (method, url, doc.detail)
    for method, path in ID_ROUTES:  # the largest id is looked up, and names nothing
        url = path.format(INT32_MAX)
        problem(env.http.request(method, url, headers=env.operator, json=_body(path)), 404)
    job = env.server.job(env.operator_id, units=1)
    for q in (f"after={INT32_MAX}", "after=-1", f"limit={INT64_MAX}"):
        assert env.http.get(f"/api/v1/jobs/{job}/units?{q}", headers=env.operator).is_success
    r = env.http.get(f"/api/v1/jobs/{job}/results?after={INT32_MAX}", headers=env.operator)
    assert r.status_code == 200 and r.content == b""


BAD_QUERIES = [
    f"after={2**70}",
    f"after={INT32_MAX + 1}",
    "after=-2",
    "after=²",
    "after=%D9%A3",  # ARABIC-INDIC DIGIT THREE, which int() reads as 3
    "after=+1",
    "after=1_000",
    "after=%201",
    f"after={'9' * 5000}",  # int() itself refuses past 4300 digits
    "limit=0",
    "limit=%C2%B2",
    f"limit={INT64_MAX + 1}",
]


def test_units_and_results_refuse_out_of_range_and_unicode_numbers(env: Env) -> None:
    job = env.server.job(env.operator_id)
    for query in BAD_QUERIES:
        for what in ("units", "results") if query.startswith("after") else ("units",):
            r = env.http.get(f"/api/v1/jobs/{job}/{what}?{query}", headers=env.operator)
            assert "ASCII digits" in problem(r, 400).detail, query
        if query.startswith("limit"):
            problem(env.http.get(f"/api/v1/jobs?{query}", headers=env.operator), 400)


def test_console_view_numbers_are_ascii_integers(env: Env) -> None:
    for query in ("page=²", "per_page=²", "page=%D9%A3", f"page={'1' * 5000}", "page=-1"):
        for path in ("/api/v1/workers", "/api/v1/console/stream"):
            problem(env.http.get(f"{path}?{query}", headers=env.operator), 400)
    problem(env.http.get("/api/v1/audit?limit=²", headers=env.operator), 400)
    r = env.http.get("/api/v1/workers?page=2000000&per_page=1000", headers=env.operator)
    assert r.status_code == 200  # in range: capped, as page sizes are


def test_worker_ids_are_ascii(env: Env) -> None:
    for wid in ("²", "ａｂｃ", "a" * 65, "a-b"):  # str.isalnum() takes the first two
        r = env.http.post(f"/api/v1/workers/{wid}/drain", headers=env.operator, json={})
        assert "not a worker id" in problem(r, 400).detail
    r = env.http.post(f"/api/v1/workers/{'a' * 64}/drain", headers=env.operator, json={})
    problem(r, 404)


def test_a_priority_no_column_holds_is_422_naming_the_field(db_url: str, make_env: MakeEnv) -> None:
    env = make_env(db_url)
    _, alice = env.server.token("submitter", "alice")
    for priority in (INT64_MAX + 1, INT32_MAX + 1, -INT32_MAX - 2, 2**70):
        policy = {"priority": priority}
        body = {"kernel": "checksum", "units": [{"params": {"i": 0}}], "policy": policy}
        doc = problem(env.http.post("/api/v1/jobs", headers=alice, json=body), 422)
        assert any(e.startswith("$.policy.priority") for e in doc.errors), doc.errors
    for priority in (INT32_MAX, -INT32_MAX - 1):  # the column's own bounds are stored
        body["policy"] = {"priority": priority}
        r = env.http.post("/api/v1/jobs", headers=alice, json=body)
        assert r.status_code == 201, r.text
        assert r.json()["policy"]["priority"] == priority


def test_the_schema_documents_the_bounds_the_server_enforces(env: Env) -> None:
    doc = env.http.get("/openapi.json").json()
    units = doc["paths"]["/api/v1/jobs/{id}/units"]["get"]
    params = {p["name"]: p["schema"] for p in units["parameters"]}
    assert params["id"] == {"type": "integer", "minimum": 1, "maximum": INT32_MAX}
    assert params["after"] == {"type": "integer", "minimum": -1, "maximum": INT32_MAX}
    assert params["limit"]["minimum"] == 1 and params["limit"]["maximum"] == INT64_MAX
    assert "400" in units["responses"]
    ban = doc["paths"]["/api/v1/workers/{id}/ban"]["post"]
    assert ban["parameters"][0]["schema"] == {"type": "string", "pattern": "^[0-9A-Za-z]{1,64}$"}
    for action in ("unban", "drain", "undrain"):  # NoBody refuses unknown fields: a 422
        assert "422" in doc["paths"][f"/api/v1/workers/{{id}}/{action}"]["post"]["responses"]
    priority = doc["components"]["schemas"]["Policy"]["properties"]["priority"]
    assert (priority["minimum"], priority["maximum"]) == (-INT32_MAX - 1, INT32_MAX)
    events = doc["paths"]["/api/v1/jobs/{id}/events"]["get"]["responses"]["200"]["content"]
    event = events["text/event-stream"]["schema"]
    assert event["properties"]["event"]["enum"] == ["progress", "end"]


# ---- revoked tokens lose their streams ----------------------------------------------------------

REVOKED_WITHIN_S = 3.0


def _revoke(env: Env, token_id: int) -> float:
    r = env.http.delete(f"/api/v1/tokens/{token_id}", headers=env.operator)
    assert r.status_code == 204, r.text
    return time.monotonic()


def _read_until_end(lines: Iterator[str], revoked_at: float) -> int:
    """Events read after the revocation, failing if the stream outlives it too long."""
    after = 0
    for line in lines:
        if line.startswith("event: "):
            after += 1
        assert time.monotonic() - revoked_at < REVOKED_WITHIN_S, "the stream outlived its token"
    assert time.monotonic() - revoked_at < REVOKED_WITHIN_S
    return after


def test_a_revoked_token_ends_its_job_event_stream(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_jobs, "EVENT_INTERVAL_S", 0.1)
    alice_id, alice = env.server.token("submitter", "alice")
    job = env.server.job(alice_id)
    url = f"/api/v1/jobs/{job}/events"
    with env.http.stream("GET", url, headers=alice) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(lines) == "event: progress"
        after = _read_until_end(lines, _revoke(env, alice_id))
    assert after <= 15  # about RECHECK_S (1 s) of 0.1 s events, then nothing
    problem(env.http.get(url, headers=alice), 401)
    # The job is still running: the stream ended for the token, not because the job did.
    assert env.http.get(f"/api/v1/jobs/{job}", headers=env.operator).json()["state"] == "running"


def test_a_revoked_operator_token_ends_its_console_stream(env: Env) -> None:
    watcher_id, watcher = env.server.token("operator", "watcher")
    with env.http.stream("GET", "/api/v1/console/stream", headers=watcher) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(lines) == "event: snapshot"
        _read_until_end(lines, _revoke(env, watcher_id))
    problem(env.http.get("/api/v1/console/stream", headers=watcher), 401)


def test_a_revoked_token_breaks_off_a_long_results_stream(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A results stream is cut, not ended: a client must not take a short answer for all."""
    monkeypatch.setattr(api_jobs, "RESULTS_PAGE", 1)
    alice_id, alice = env.server.token("submitter", "alice")
    job = env.server.job(alice_id, units=30)
    _finish(env.server, job, range(30))
    whole = env.http.get(f"/api/v1/jobs/{job}/results", headers=alice)
    assert [line["index"] for line in _lines(whole.content)] == list(range(30))

    real = jobs.done_outputs

    def slow(*args: Any) -> Any:  # one page each 0.2 s: a long download
        time.sleep(0.2)
        return real(*args)

    monkeypatch.setattr(jobs, "done_outputs", slow)
    got: list[bytes] = []
    with env.http.stream("GET", f"/api/v1/jobs/{job}/results", headers=alice) as r:
        assert r.status_code == 200
        chunks = r.iter_raw()
        got.append(next(chunks))
        revoked = _revoke(env, alice_id)
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in chunks:
                got.append(chunk)
    assert time.monotonic() - revoked < REVOKED_WITHIN_S
    indexes = [line["index"] for line in _lines(b"".join(got))]
    assert 1 <= len(indexes) < 30 and indexes == list(range(len(indexes)))


# ---- /status ------------------------------------------------------------------------------------


def test_status_shows_visitors_counts_owners_their_jobs_operators_all(env: Env) -> None:
    alice_id, alice = env.server.token("submitter", "alice")
    bob_id, bob = env.server.token("submitter", "bob")
    env.server.job(alice_id, "alice-secret-project", units=3)
    env.server.job(bob_id, "bob-secret-project", units=4)

    anonymous = env.http.get("/status")
    assert anonymous.status_code == 200
    assert "2 jobs (2 running); 0 of 7 units done." in anonymous.text
    assert "secret-project" not in anonymous.text and "running</td>" not in anonymous.text
    assert "Authorization: Bearer" in anonymous.text
    assert anonymous.headers["vary"] == "Authorization"

    mine = env.http.get("/status", headers=alice)
    assert "alice-secret-project" in mine.text and "bob-secret-project" not in mine.text
    assert "2 jobs (2 running)" in mine.text  # the figures are everyone's
    assert mine.headers["cache-control"] == "private, no-store"

    everything = env.http.get("/status", headers=env.operator)
    assert "alice-secret-project" in everything.text and "bob-secret-project" in everything.text

    problem(env.http.get("/status", headers={"authorization": "Bearer tg_nope"}), 401)


# ---- secrets are not cached ---------------------------------------------------------------------


def test_a_created_token_is_never_cacheable(env: Env) -> None:
    r = env.http.post("/api/v1/tokens", headers=env.operator, json={"role": "submitter"})
    assert r.status_code == 201 and r.json()["token"].startswith("tg_")
    assert r.headers["cache-control"] == "no-store"
    documented = env.http.get("/openapi.json").json()["paths"]["/api/v1/tokens"]["post"]
    assert documented["responses"]["201"]["headers"]["Cache-Control"]["schema"]["const"] == (
        "no-store"
    )


# ---- helpers ------------------------------------------------------------------------------------


def _finish(server: LiveServer, job: int, indexes: range) -> None:
    """What the validator writes for a canonical result, for each unit."""
    from sqlalchemy import update

    from tabgrid.store.tables import Unit

    U = Unit.__table__  # type: ignore[attr-defined]
    out = dumps({"y": Output(DIGEST, "uint8", [1])})

    def finish(conn: Any) -> None:
        for i in indexes:
            conn.execute(
                update(U)
                .where(U.c.job_id == job, U.c.idx == i)
                .values(state="done", want=0, outputs=out)
            )

    server.store.tx(finish)


def _lines(body: bytes) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in body.splitlines() if line]
