"""Submission throughput: one job of 100,000 units through the HTTP API.

Prints units/s accepted by POST /api/v1/jobs (decode, validation, bulk insert, commit) and, measured
in the same run on the same disk, a bare sqlite3 executemany of the same rows into the same table,
and the ratio of the two.

    ./dev bench submit [--units 100000]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "server"), str(ROOT)]

from tests.integration.harness import Coordinator  # noqa: E402

from tabgrid.protocol import JobSubmit, Policy, UnitSpec  # noqa: E402
from tabgrid.store import issue_token, upgrade  # noqa: E402
from tabgrid.store.codec import dumps  # noqa: E402


def api_rate(n: int, tmp: Path) -> float:
    data = tmp / "api"
    data.mkdir()
    db = f"sqlite:///{data / 'tabgrid.db'}"
    token = issue_token(db, "submitter", "bench")
    coord = Coordinator(db, data).start()
    try:
        body = msgspec.json.encode(
            JobSubmit(
                kernel="checksum",
                units=[UnitSpec(params={"i": i}) for i in range(n)],
                policy=Policy(quorum=2),
            )
        )
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        t0 = time.perf_counter()
        r = httpx.post(coord.url + "/api/v1/jobs", content=body, headers=headers, timeout=600)
        elapsed = time.perf_counter() - t0
        r.raise_for_status()
        assert r.json()["units"] == n
        return n / elapsed
    finally:
        coord.stop()


def bare_rate(n: int, tmp: Path) -> float:
    path = tmp / "bare.db"
    upgrade(f"sqlite:///{path}")  # the same schema and indexes
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(
        "INSERT INTO jobs (name, kernel, params, inputs, policy, state, priority, n_units,"
        " open_units, done_units, failed_units, created_at, updated_at) VALUES"
        " ('', 'checksum', '{}', '{}', '{}', 'running', 0, ?, ?, 0, 0, 0, 0)",
        (n, n),
    )
    rows = [(1, i, dumps({"i": i}), "{}", "pending", 2, 0, 0, 0, 0.0) for i in range(n)]
    t0 = time.perf_counter()
    con.executemany(
        "INSERT INTO units (job_id, idx, params, inputs, state, want, issued, inflight, results,"
        " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    con.commit()
    elapsed = time.perf_counter() - t0
    con.close()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bare = bare_rate(args.units, tmp)
        api = api_rate(args.units, tmp)
    print(f"units submitted:        {args.units}")
    print(f"API accepted:           {api:,.0f} units/s")
    print(f"bare executemany:       {bare:,.0f} rows/s (same rows, same table, same run)")
    print(f"ratio API / bare:       {api / bare:.2f}")
    print(f"target >= 20,000 units/s: {'met' if api >= 20_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
