"""Every route of the table declares who may call it, and each refuses whom its role excludes:
anonymous, a wrong token, a worker's credentials, a submitter (its own job and another's) and
an operator, against every route of a real server."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from tabgrid.api.roles import Role
from tabgrid.api.routes import ENDPOINTS
from tabgrid.protocol import Hello
from tabgrid.settings import Settings
from tabgrid.store import workers
from test_http_hardening import LiveServer

REFUSED = {401, 403}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("roles")
    settings = Settings(db=f"sqlite:///{tmp / 't.db'}", data_dir=tmp, distinct_addresses=False)
    with LiveServer(settings) as server:
        yield server


@pytest.fixture(scope="module")
def people(live: LiveServer) -> dict[str, dict[str, str]]:
    _, alice = live.token("submitter", "alice")
    _, bob = live.token("submitter", "bob")
    _, olga = live.token("operator", "olga")
    wid, secret, _ = live.store.tx(
        workers.register, Hello(kind="native", name="w"), "127.0.0.1", time.time()
    )
    return {
        "anonymous": {},
        "wrong token": {"authorization": "Bearer not-a-token"},
        "worker": {"authorization": f"Worker {wid}:{secret}"},
        "alice": alice,
        "bob": bob,
        "olga": olga,
        "worker_id": {"id": wid},
    }


def test_every_route_declares_a_role() -> None:
    assert ENDPOINTS, "the table is empty"
    for ep in ENDPOINTS:
        assert isinstance(ep.role, Role), f"{ep.method} {ep.path} declares no role"
    roles = {ep.role for ep in ENDPOINTS}
    assert roles == set(Role), "every role is used by some route"
    steering = re.compile(r"/(tokens|workers|console|audit|metrics)\b|/(pause|resume|priority)$")
    for ep in ENDPOINTS:
        if steering.search(ep.path):
            assert ep.role is Role.OPERATOR, f"{ep.method} {ep.path} steers the network"
        if ep.path.startswith("/api/v1/jobs"):
            assert ep.role in (Role.SUBMITTER, Role.OPERATOR), f"{ep.method} {ep.path}"


def _url(live: LiveServer, people: dict, path: str) -> tuple[str, str]:
    """The route's URL with its parameters naming things alice owns; and the owner's name."""
    alice_id = live.store.tx(lambda c: _token_id(c, "alice"))
    if "{digest}" in path:
        data = f"alice's bytes {time.time_ns()}".encode()
        digest = hashlib.sha256(data).hexdigest()
        r = httpx.put(f"{live.url}/api/v1/blobs/{digest}", content=data, headers=people["alice"])
        assert r.status_code == 201, r.text
        return path.replace("{digest}", digest), "alice"
    if "/workers/{id}" in path:
        return path.replace("{id}", people["worker_id"]["id"]), "olga"
    if "/tokens/{id}" in path:
        token_id, _ = live.token("submitter", "spare")
        return path.replace("{id}", str(token_id)), "olga"
    if "{id}" in path:
        return path.replace("{id}", str(live.job(alice_id))), "alice"
    return path, ""


def _token_id(conn, name: str) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    return conn.execute(text("SELECT id FROM tokens WHERE name = :n"), {"n": name}).scalar_one()


def _call(live: LiveServer, method: str, path: str, headers: dict[str, str]) -> int:
    kw: dict = {"headers": headers, "timeout": 20}
    if method in ("POST", "PUT"):
        kw["content"] = b"x" if "/blobs/" in path else b"{}"
    with httpx.Client(base_url=live.url) as http, http.stream(method, path, **kw) as r:
        return r.status_code  # the status alone: event streams never end by themselves


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda ep: f"{ep.method} {ep.path}")
def test_each_route_refuses_whom_its_role_excludes(live: LiveServer, people: dict, ep) -> None:  # type: ignore[no-untyped-def]
    path, owner = _url(live, people, ep.path)
    got = {who: _call(live, ep.method, path, people[who]) for who in
           ("anonymous", "wrong token", "worker", "bob", "alice", "olga")}  # fmt: skip
    if ep.role is Role.ANONYMOUS:
        assert not REFUSED & set(got.values()), got
        return
    assert got["anonymous"] == 401 and got["wrong token"] == 401, got
    if ep.role is Role.WORKER:
        assert got["worker"] != 401, got  # admitted; what it may do with a blob is the route's
    else:
        assert got["worker"] == 401, got
    if ep.role is Role.OPERATOR:
        assert got["alice"] == 403 and got["bob"] == 403, got
        assert got["olga"] not in REFUSED, got
        return
    # SUBMITTER and WORKER: any token is admitted; another submitter's things are not found.
    assert got["olga"] not in REFUSED and got["alice"] not in REFUSED, got
    if owner == "alice" and re.search(r"{(id|digest)}", ep.path):
        if not (ep.role is Role.WORKER and ep.method == "PUT"):  # anyone may store bytes
            assert got["bob"] == 404, got
    else:
        assert got["bob"] not in REFUSED, got
