"""Credibility-based acceptance over real websockets: saboteur worker processes among honest
ones are caught by spot-checks, banned, and every result they gave is taken back."""

from __future__ import annotations

import httpx
import msgspec
import pytest
from sqlalchemy import select

from integration.test_faults import checksum_units, expected_checksum
from tabgrid.protocol import UnitResultLine
from tabgrid.store import Store
from tabgrid.store.tables import Replica, Worker

pytestmark = pytest.mark.integration

W = Worker.__table__  # type: ignore[attr-defined]
R = Replica.__table__  # type: ignore[attr-defined]
POLICY = {"error_rate": 1e-4, "max_replicas": 10}


def rows(db: str, table, *where):  # type: ignore[no-untyped-def]
    store = Store(db)
    try:
        return store.tx(
            lambda c: [dict(r) for r in c.execute(select(table).where(*where)).mappings()]
        )
    finally:
        store.close()


def run_job(cluster, units: int):  # type: ignore[no-untyped-def]
    with cluster.client() as client:
        job = client.submit("checksum", checksum_units(units), policy=POLICY)
        status = client.wait(job.id, progress=False, timeout=300)
        return status, client.results(job.id), list(client.units(job.id))


def assert_every_result_is_the_reference(results: dict, units: int) -> None:
    assert sorted(results) == list(range(units))
    wrong = [i for i, out in results.items() if (out["digest"] != expected_checksum(i)).any()]
    assert not wrong, f"units {wrong[:10]} hold a wrong result"


def assert_caught(db: str, name: str) -> list[dict]:
    caught = rows(db, W, W.c.name == name)
    assert caught, f"no {name} connected"
    for w in caught:
        assert w["banned"], f"{name} {w['id'][:8]} was not caught ({w})"
        assert "spot-check" in (w["ban_reason"] or "")
        assert w["checks_failed"] >= 1
        kept = rows(db, R, R.c.worker_id == w["id"], R.c.state.in_(("valid", "returned")))
        assert not kept, f"{len(kept)} results of a caught worker still count"
    return caught


def test_a_colluding_pair_is_caught_and_what_it_helped_accept_is_recomputed(cluster) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):  # few enough that early acceptances lean on the pair
        cluster.worker()
    cluster.rogue("colluder")
    cluster.rogue("colluder")
    units = 600
    status, results, infos = run_job(cluster, units)
    assert status.state == "done", status
    assert_every_result_is_the_reference(results, units)
    pair = assert_caught(cluster.db, "colluder")
    assert len(pair) == 2
    assert all(w["valid"] > 0 for w in pair), "the pair was right often enough to be trusted"
    reopened = [u for u in infos if u.revision > 0]
    assert reopened, "no unit the pair helped accept was decided again"
    # The results stream says which units changed after they were first accepted.
    body = httpx.get(
        f"{cluster.url}/api/v1/jobs/{status.id}/results",
        headers={"authorization": f"Bearer {cluster.token}"},
    ).text
    lines = [msgspec.json.decode(x, type=UnitResultLine) for x in body.splitlines()]
    assert {x.index for x in lines if x.revision} == {u.index for u in reopened}
    assert {u.accepted_by for u in infos} <= {"credibility", "reference"}
    assert all(u.credibility is None or u.credibility >= 1 - 1e-4 for u in infos)


def test_a_sleeper_that_defects_is_caught_the_same_way(cluster) -> None:  # type: ignore[no-untyped-def]
    for _ in range(5):
        cluster.worker()
    cluster.rogue("sleeper")
    units = 1500
    status, results, _ = run_job(cluster, units)
    assert status.state == "done", status
    assert_every_result_is_the_reference(results, units)
    (sleeper,) = assert_caught(cluster.db, "sleeper")
    assert sleeper["results"] > 60, "it behaved first, then defected"
