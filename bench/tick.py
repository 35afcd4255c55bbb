"""The scheduler's tick alone: CPU per validated unit of recording results and leasing units,
without websockets or workers, so that a change to the tick's statements can be measured
apart from everything else (bench/dispatch.py measures the whole coordinator).

Two simulated workers keep ``--slots`` units each in flight on a checksum job of quorum 2;
every tick records the results of the previous one and leases as many units again. The
second worker starts one tick after the first, so that a unit's two results come in
different ticks, as from real workers. Prints
the CPU time (this process's rusage) per validated unit, and with ``--profile`` the top of a
cProfile of the same run.

    ./dev bench tick [--units 20000] [--slots 64] [--db sqlite|postgresql://...] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "server"), str(ROOT)]

from tabgrid.blobs import FileBlobStore  # noqa: E402
from tabgrid.coordinator.scheduler import Scheduler  # noqa: E402
from tabgrid.coordinator.telemetry import Telemetry  # noqa: E402
from tabgrid.coordinator.validator import Incoming  # noqa: E402
from tabgrid.kernels import checksum  # noqa: E402
from tabgrid.protocol import Hello, JobSubmit, Output, Policy, ResultItem, UnitSpec  # noqa: E402
from tabgrid.settings import Settings  # noqa: E402
from tabgrid.store import jobs as jobs_q  # noqa: E402
from tabgrid.store import open_store  # noqa: E402
from tabgrid.store import workers as workers_q  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def answer(params: dict) -> Output:
    data = checksum.reference(params, {})["digest"].tobytes()
    return Output(hashlib.sha256(data).hexdigest(), "uint32", [len(data) // 4], data)


def run(db: str, units: int, slots: int, profile: bool) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="tick-"))
    store = open_store(db if db != "sqlite" else f"sqlite:///{tmp / 'tabgrid.db'}")
    sched = Scheduler(store, FileBlobStore(tmp / "blobs"), Settings(data_dir=tmp), Telemetry())
    spec = JobSubmit(
        kernel="checksum",
        units=[UnitSpec(params={"i": i}) for i in range(units)],
        policy=Policy(quorum=2),
    )
    job = store.tx(jobs_q.create_job, None, spec, time.time())
    workers = {}
    for n in range(2):
        wid, _, _ = store.tx(workers_q.register, Hello(kind="native"), f"10.0.0.{n}", 0.0)
        workers[wid] = (f"10.0.0.{n}", slots)
    # The workers' answers are computed before the clock starts: only the tick is measured.
    answers = {i: answer({"i": i}) for i in range(units)}
    pending: list[Incoming] = []
    prof = cProfile.Profile() if profile else None
    start = cpu()
    if prof:
        prof.enable()
    # The second worker starts a tick later: a unit's two results then come in different
    # ticks, as they do from real workers (the first is stored, judged when the second comes).
    wanted = dict(list(workers.items())[:1])
    while True:
        res = store.tx(sched._work, pending, wanted, time.time())
        wanted = workers
        pending = []
        for wid, got in res.claims.items():
            for c in got:
                out = answers[c.index]  # unit i has params {"i": i}
                pending.append(Incoming(wid, ResultItem(lease=c.lease, outputs={"digest": out})))
        if not pending:
            break
    if prof:
        prof.disable()
    spent = cpu() - start
    done = store.tx(lambda c: jobs_q.get_job(c, job))
    store.close()
    assert done is not None and done.state == "done", done
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return spent / units


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=20_000)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--db", default="sqlite")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    per_unit = run(args.db, args.units, args.slots, args.profile)
    print(f"tick CPU per validated unit ({args.units} units, quorum 2): {per_unit * 1e6:,.0f} us")


if __name__ == "__main__":
    main()
