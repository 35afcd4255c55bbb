"""Schemathesis against the real app's /openapi.json, once with a submitter's token and once
with an operator's: no response may be a 5xx, and every status, content type and body must be
one the document promises (its built-in checks).

The app runs in-process over ASGI, lifespan included (scheduler, console hub), one fresh app
per operation, seeded with two running jobs (one the fuzzer's, one another submitter's), so
ids the fuzzer tries first (1, 2) name real rows, results have lines and streams stream.
Event streams are judged on their first events. Each run prints how many requests it made and
how long it took.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text, update
from starlette.exceptions import StarletteDeprecationWarning

from tabgrid.api import jobs as api_jobs
from tabgrid.api import routes as api
from tabgrid.app import create_app
from tabgrid.protocol import JobSubmit, Output, UnitResultLine, UnitSpec
from tabgrid.settings import Settings
from tabgrid.store import jobs
from tabgrid.store.codec import dumps
from tabgrid.store.tables import Unit

with warnings.catch_warnings():
    # The test client warns at import when it runs on httpx rather than its successor.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

pytestmark = pytest.mark.integration  # about 40 s on two cores

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
EXAMPLES = 20  # per operation and generation mode, besides the coverage phase's cases
ROLES = ("submitter", "operator")

# The document the app serves (test_the_served_document_is_the_one_fuzzed checks they agree):
# the pytest plugin needs the schema when the module is collected, before any app runs.
DOCUMENT = json.loads(api._openapi_bytes())
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.max_stream_events = 2  # event streams do not end: judge their first events


@dataclass
class Tally:
    requests: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)


TALLY = {role: Tally() for role in ROLES}


@dataclass
class Target:
    app: Any
    headers: dict[str, str]
    tally: Tally


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    for role, t in TALLY.items():
        if t.requests:
            shown = dict(sorted(t.statuses.items()))
            print(
                f"\nschemathesis, {role} token: {t.requests} requests in {t.seconds:.1f} s {shown}"
            )
            assert not any(status >= 500 for status in t.statuses)


@pytest.fixture(params=ROLES)
def target(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Target]:
    monkeypatch.setattr(api_jobs, "EVENT_INTERVAL_S", 0.02)
    app = create_app(
        Settings(db=f"sqlite:///{tmp_path}/t.db", data_dir=tmp_path, console_interval_s=0.02)
    )
    store = app.state.services.store
    other, _ = store.create_token("submitter", "other")
    # The fuzzer's own token gets an id it will not try, so DELETE /tokens/{id} revokes
    # another token, never the one it is using.
    store.tx(
        lambda c: c.execute(text("UPDATE sqlite_sequence SET seq = 999999 WHERE name = 'tokens'"))
    )
    me, token = store.create_token(request.param, "fuzz")
    work = JobSubmit(kernel="checksum", units=[UnitSpec(params={"i": i}) for i in range(3)])
    mine = store.tx(jobs.create_job, me, work, time.time())
    store.tx(jobs.create_job, other, work, time.time())
    store.tx(_finish, mine)
    tally = TALLY[request.param]
    start = time.monotonic()
    yield Target(app, {"authorization": f"Bearer {token}"}, tally)
    tally.seconds += time.monotonic() - start


def _finish(conn: Any, job: int) -> None:
    """Two of the job's units validated, as the validator leaves them: results have lines."""
    U = Unit.__table__  # type: ignore[attr-defined]
    out = dumps({"y": Output("ab" * 32, "uint8", [4])})
    conn.execute(
        update(U).where(U.c.job_id == job, U.c.idx < 2).values(state="done", want=0, outputs=out)
    )


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api(case, target: Target) -> None:  # type: ignore[no-untyped-def]
    response = case.call_and_validate(headers=target.headers, checks=CHECKS, app=target.app)
    t = target.tally
    t.requests += 1
    t.statuses[response.status_code] = t.statuses.get(response.status_code, 0) + 1
    # Schemathesis reads no NDJSON: each line must be a whole UnitResultLine (a 200 cut off
    # mid-body, as ?after=2^70 once gave, would fail here).
    if response.headers.get("content-type", [""])[0].startswith("application/x-ndjson"):
        for line in response.content.splitlines():
            msgspec.json.decode(line, type=UnitResultLine)


def test_the_served_document_is_the_one_fuzzed(tmp_path: Path) -> None:
    app = create_app(Settings(db=f"sqlite:///{tmp_path}/t.db", data_dir=tmp_path))
    with TestClient(app) as client:
        assert client.get("/openapi.json").json() == DOCUMENT
