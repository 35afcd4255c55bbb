"""Trust at low cost: error rate and results per accepted unit, three policies, one table.

Drives the real scheduler tick (claims, spot-checks, validation, backtracking) and the real
store on SQLite, with simulated workers in this process and no network. Time is simulated: an
honest worker takes about 1 s a unit, a saboteur about 0.1 s (it skips the work, as it would
live), each keeps two units in flight. Policies, each on the same workers and units:

  (a) plain 2-of-2 voting            Policy(quorum=2)
  (b) BOINC's adaptive replication   Policy(quorum=2, replication="adaptive")
  (c) tabgrid's credibility          Policy(error_rate=1e-4)

"err" is wrong accepted / accepted at the end of the run (after any backtracking); where none
was seen it prints the 95% upper bound 3/n. "res/unit" counts every result a worker computed,
spot-checks included, per accepted unit. "reopened" (c only): accepted units that
backtracking opened again. "ref/u" (c only): units the coordinator computed itself with the
kernel's reference (known answers for spot-checks, and disagreements it settled), per accepted
unit: coordinator work, not counted in res/unit.

    ./dev bench trust [--scale 1.0] [--workers 20] [--jobs 2]
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "server")]

from sqlalchemy import func, select  # noqa: E402

from tabgrid.blobs import FileBlobStore  # noqa: E402
from tabgrid.coordinator.scheduler import Scheduler  # noqa: E402
from tabgrid.coordinator.telemetry import Telemetry  # noqa: E402
from tabgrid.coordinator.validator import Incoming  # noqa: E402
from tabgrid.kernels import checksum  # noqa: E402
from tabgrid.protocol import Hello, JobSubmit, Output, Policy, ResultItem, UnitSpec  # noqa: E402
from tabgrid.settings import Settings  # noqa: E402
from tabgrid.store import jobs as jobs_q  # noqa: E402
from tabgrid.store import leases as leases_q  # noqa: E402
from tabgrid.store import open_store  # noqa: E402
from tabgrid.store import workers as workers_q  # noqa: E402
from tabgrid.store.tables import Unit  # noqa: E402

U = Unit.__table__  # type: ignore[attr-defined]
POLICIES = {
    "a": Policy(quorum=2, max_replicas=10),
    "b": Policy(quorum=2, max_replicas=10, replication="adaptive"),
    "c": Policy(error_rate=1e-4, max_replicas=10),
}
SLOTS = 8
RECONSIDER_EVERY = 20  # ticks between sweeps that judge waiting units again
WINDOW_S = 1.0  # results due within this much simulated time come back in one tick


@dataclass(frozen=True)
class Scenario:
    name: str
    f: float  # fraction of saboteurs
    s: float  # chance a saboteur answers wrong, once it sabotages
    colluding: bool
    units: int
    sleeper_after: int = 0  # behaves for this many results first
    churn_every: int = 0  # takes a new id after this many results


def scenarios(scale: float) -> list[Scenario]:
    def n(units: int) -> int:
        return max(1000, int(units * scale))

    out = [Scenario("f=0", 0.0, 0.0, False, n(100_000))]
    for f in (0.05, 0.2, 0.4):
        for s in (1.0, 0.1):
            for colluding in (True, False):
                big = f == 0.2 and colluding
                units = n(100_000 if big else 10_000)
                name = f"f={f:g} s={s:g} {'colluding' if colluding else 'independent'}"
                out.append(Scenario(name, f, s, colluding, units))
    out.append(Scenario("sleeper f=0.2 after 500", 0.2, 1.0, True, n(10_000), sleeper_after=500))
    out.append(Scenario("churn f=0.2 every 20", 0.2, 1.0, True, n(10_000), churn_every=20))
    return out


@dataclass
class SimWorker:
    seat: int
    saboteur: bool
    wid: str = ""
    addr: str = ""
    done: int = 0  # results under the current id
    total: int = 0
    busy: int = 0
    gone: bool = False


@dataclass
class Run:
    results: int = 0
    accepted: int = 0
    wrong: int = 0
    failed: int = 0
    caught: int = 0
    taken_back: int = 0
    references: int = 0  # units the coordinator answered itself
    seconds: float = 0.0
    cpu_s: float = 0.0
    ticks: int = 0
    notes: list[str] = field(default_factory=list)


def truth(params: dict) -> bytes:
    return checksum.digest(params, [])


def simulate(sc: Scenario, policy_key: str, workers: int, seed: int) -> Run:
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    tmp = Path(tempfile.mkdtemp(prefix="trust-", dir=os.environ.get("TRUST_TMP")))
    store = open_store(f"sqlite:///{tmp / 'tabgrid.db'}")
    blobs = FileBlobStore(tmp / "blobs")
    sched = Scheduler(store, blobs, Settings(data_dir=tmp), Telemetry())
    rng = random.Random(seed)
    sched.validator.rng = random.Random(seed + 1)
    if policy_key == "c-":  # as a kernel without a reference: workers' results alone
        sched.validator.reference = lambda *_: None  # type: ignore[method-assign]
    policy = POLICIES[policy_key.rstrip("-")]
    submit = JobSubmit(
        kernel="checksum", units=[UnitSpec(params={"i": i}) for i in range(sc.units)], policy=policy
    )
    job = store.tx(jobs_q.create_job, None, submit, 0.0)
    n_bad = round(sc.f * workers)
    sims = [SimWorker(i, i < n_bad) for i in range(workers)]
    now = 0.0

    def new_id(w: SimWorker) -> None:
        w.addr = f"10.0.{w.seat // 250}.{w.seat % 250}"  # a new id, the same machine
        w.wid, _, _ = store.tx(workers_q.register, Hello(kind="native"), w.addr, now)
        w.done = 0

    for w in sims:
        new_id(w)
    by_id = {w.wid: w for w in sims}
    events: list[tuple[float, int, str, int, bytes]] = []  # (when, seq, worker, lease, answer)
    seq = 0
    run = Run()
    pending: list[Incoming] = []
    idle_ticks = 0
    while True:
        wanted = {w.wid: (w.addr, SLOTS - w.busy) for w in sims if not w.gone and w.busy < SLOTS}
        res = store.tx(sched._work, pending, wanted, now)
        run.ticks += 1
        pending = []
        caught = list(res.outcome.caught)
        if run.ticks % RECONSIDER_EVERY == 0 or not events:  # the coordinator's sweep
            caught += list(store.tx(sched.reconsider, now).caught)
        for wid in caught:
            w = by_id.get(wid)
            if w is not None and not w.gone:
                run.caught += 1
                if sc.churn_every:
                    w.busy = 0
                    new_id(w)
                    by_id[w.wid] = w
                else:
                    w.gone = True
        got_any = False
        for wid, claimed in res.claims.items():
            w = by_id[wid]
            if w.gone or w.wid != wid:
                continue
            for c in claimed:
                got_any = True
                w.busy += 1
                answer = truth(c.params)
                wrong = w.saboteur and w.total >= sc.sleeper_after and rng.random() < sc.s
                if wrong:
                    tag = b"collude" if sc.colluding else wid.encode()
                    answer = hashlib.sha256(tag + answer).digest()
                took = rng.uniform(0.05, 0.15) if w.saboteur else rng.uniform(0.8, 1.2)
                seq += 1
                heapq.heappush(events, (now + took, seq, wid, c.lease, answer))
        if not events:
            if got_any:
                continue
            open_units = store.tx(lambda c: jobs_q.get_job(c, job))
            idle_ticks += 1
            if idle_ticks > 3:
                if open_units is not None and open_units.state == "running":
                    run.notes.append("stopped: the job's open units found no worker")
                break
            continue
        idle_ticks = 0
        # Everything due by the next event's time comes back in one tick.
        now = events[0][0]
        while events and events[0][0] <= now + WINDOW_S:
            _, _, wid, lease, answer = heapq.heappop(events)
            w = by_id[wid]
            if w.wid != wid:
                continue  # the worker took a new id meanwhile: its old leases are released
            w.busy -= 1
            w.done += 1
            w.total += 1
            run.results += 1
            out = Output(digest=hashlib.sha256(answer).hexdigest(), dtype="uint8", shape=[32])
            out = Output(out.digest, out.dtype, out.shape, answer)
            pending.append(Incoming(wid, ResultItem(lease=lease, outputs={"digest": out})))
            if sc.churn_every and w.saboteur and w.done >= sc.churn_every:
                store.tx(leases_q.release_worker, wid, now)
                w.busy = 0
                new_id(w)
                by_id[w.wid] = w
        row = store.tx(lambda c: jobs_q.get_job(c, job))
        if row is not None and row.state != "running" and not events:
            store.tx(sched._work, pending, {}, now)
            pending = []
            break
    if pending:
        store.tx(sched._work, pending, {}, now)
    tally(store, job, run)
    run.seconds = time.perf_counter() - t_wall
    run.cpu_s = time.process_time() - t_cpu
    store.engine.dispose()
    return run


def tally(store, job: int, run: Run) -> None:  # type: ignore[no-untyped-def]
    def read(conn):  # type: ignore[no-untyped-def]
        rows = conn.execute(
            select(U.c.params, U.c.outputs, U.c.state, U.c.revision, U.c.accepted_by).where(
                U.c.job_id == job
            )
        ).all()
        return rows

    import json

    for params, outputs, state, _, by in store.tx(read):
        run.references += by == "reference"
        if state == "done":
            run.accepted += 1
            digest = json.loads(outputs)["digest"]["digest"]
            if digest != hashlib.sha256(truth(json.loads(params))).hexdigest():
                run.wrong += 1
        elif state == "failed":
            run.failed += 1
    # Units whose accepted result backtracking took back (each reopen had a wrong one in it).
    run.taken_back = store.tx(
        lambda c: c.execute(
            select(func.coalesce(func.sum(U.c.revision), 0)).where(U.c.job_id == job)
        ).scalar_one()
    )


def print_table(scs: list[Scenario], done: dict[tuple[str, str], Run]) -> None:
    head = (
        f"{'scenario':<30} {'units':>7} | {'(a) err':>9} {'res/u':>5} | {'(b) err':>9} "
        f"{'res/u':>5} | {'(c) err':>9} {'res/u':>5} {'ref/u':>6} {'caught':>6} "
        f"{'reopened':>8} {'failed':>6}"
    )
    print(head)
    print("-" * len(head))
    for sc in scs:
        cells = []
        for key in POLICIES:
            r = done[(sc.name, key)]
            per = r.results / r.accepted if r.accepted else float("nan")
            cells.append(f"{err_text(r):>9} {per:>5.2f}")
        c = done[(sc.name, "c")]
        print(
            f"{sc.name:<30} {sc.units:>7} | {cells[0]} | {cells[1]} | {cells[2]} "
            f"{c.references / max(c.accepted, 1):>6.3f} {c.caught:>6} {c.taken_back:>8} "
            f"{c.failed:>6}"
        )


def print_checked(scs: list[Scenario], done: dict[tuple[str, str], Run]) -> None:
    """(c) with no reference: known answers only from units accepted by credibility."""
    head = (
        f"{'scenario':<30} {'units':>7} | {'(c) err':>9} {'res/u':>5} {'caught':>6} "
        f"{'reopened':>8} {'failed':>6}"
    )
    print(head)
    print("-" * len(head))
    for sc in scs:
        c = done[(sc.name, "c-")]
        per = c.results / c.accepted if c.accepted else float("nan")
        print(
            f"{sc.name:<30} {sc.units:>7} | {err_text(c):>9} {per:>5.2f} {c.caught:>6} "
            f"{c.taken_back:>8} {c.failed:>6}"
        )


def err_text(run: Run) -> str:
    if run.accepted == 0:
        return "-"
    if run.wrong == 0:
        return f"<{3 / run.accepted:.1e}"
    return f"{run.wrong / run.accepted:.1e}"


def one(args: tuple[Scenario, str, int, int]) -> tuple[str, str, Run]:
    sc, key, workers, seed = args
    return sc.name, key, simulate(sc, key, workers, seed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="units per scenario, scaled")
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2, help="scenarios run side by side")
    ap.add_argument("--only", default="", help="only scenarios whose name starts so")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--without-reference",
        action="store_true",
        help="(c) only, as for a kernel with no reference the coordinator could compute",
    )
    args = ap.parse_args()
    scs = [s for s in scenarios(args.scale) if not args.only or s.name.startswith(args.only)]
    keys = ["c-"] if args.without_reference else list(POLICIES)
    work = [(sc, key, args.workers, args.seed) for sc in scs for key in keys]
    work.sort(key=lambda w: -w[0].units)  # the long ones first, so the pool ends together
    t0 = time.perf_counter()
    done: dict[tuple[str, str], Run] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for name, key, run in pool.map(one, work):
            done[(name, key)] = run
            print(
                f"  {name} ({key}): {run.results} results, {run.accepted} accepted, "
                f"{run.wrong} wrong, {run.cpu_s:.0f} s CPU {' '.join(run.notes)}",
                file=sys.stderr,
                flush=True,
            )
    print(f"{args.workers} workers, {SLOTS} units in flight each; units per scenario in the table")
    cpu = sum(r.cpu_s for r in done.values())
    if args.without_reference:
        print_checked(scs, done)
    else:
        print_table(scs, done)
    wall = time.perf_counter() - t0
    results = sum(r.results for r in done.values())
    print(
        f"\n{results} results in {wall:.0f} s wall, {cpu:.0f} s CPU "
        f"({1e6 * cpu / max(results, 1):.0f} us CPU per result, validator + scheduler + store)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
