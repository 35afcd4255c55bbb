"""The claim's plan on PostgreSQL, on the statistics a new database meets: none yet, until
autovacuum first looks (a minute at best), so the planner guesses how many rows match."""

from __future__ import annotations

import json

from sqlalchemy import text

from tabgrid.store import Store
from tabgrid.store.sql import _CLAIM_PG, One, in_id_order
from tabgrid.store.trust import _KNOWN_PG
from test_store import claim, submit, worker

UNITS = 3000
N = 64


def _nodes(plan: dict):  # type: ignore[no-untyped-def]
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _explain(store: Store, stmt, params: dict) -> list[dict]:  # type: ignore[no-untyped-def]
    def run(conn):  # type: ignore[no-untyped-def]
        explain = text("EXPLAIN (ANALYZE, FORMAT JSON) " + stmt.text)
        (raw,) = in_id_order(conn, One(explain), params)  # as the claims run it
        conn.rollback()  # the claim's row locks
        return raw

    raw = store.tx(run)
    doc = raw if isinstance(raw, list) else json.loads(raw)
    return list(_nodes(doc[0]["Plan"]))


def test_a_claim_walks_only_the_units_it_needs_on_stale_statistics(pg_url: str) -> None:
    store = Store(pg_url)
    try:
        store.tx(
            lambda c: c.exec_driver_sql(
                "ALTER TABLE units SET (autovacuum_enabled = false);"
                "ALTER TABLE replicas SET (autovacuum_enabled = false)"
            )
        )
        # A worker with a long history: every unit of an earlier job.
        old = worker(store, "1")
        submit(store, UNITS, quorum=1)
        while claim(store, old, 500):
            pass
        job = submit(store, UNITS, quorum=2)
        params = {"job": job, "worker": old, "addr": "10.0.0.1", "distinct": False, "n": N}
        nodes = _explain(store, _CLAIM_PG, params)
        # Not every replica the worker ever had, for each candidate unit...
        assert not [n for n in nodes if n.get("Index Name") == "replicas_worker_state"], nodes
        # ...and not every leasable unit of the job filtered before they are sorted.
        scans = [n for n in nodes if n.get("Relation Name") == "units"]
        assert scans and all(n["Actual Rows"] <= 2 * N for n in scans), scans
        spot = _explain(store, _KNOWN_PG, params | {"start": 0})
        assert not [n for n in spot if n.get("Index Name") == "replicas_worker_state"]
    finally:
        store.close()
