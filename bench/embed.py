"""Sentence embeddings with all-MiniLM-L6-v2, everything in one run:

1. the embed kernel's GFLOP/s on this machine's wgpu adapter (in process, weights resident),
   against the matmul kernel's GFLOP/s on the same adapter at the FFN's shape,
   (texts x tokens) x 384 @ 384 x 1536;
2. through a coordinator and two native workers (quorum 2): the first unit's time (each worker
   downloads the 91 MB of weights and uploads them to its GPU) apart from the steady state's
   texts/s;
3. through a browser tab (Chromium, WebGPU on SwiftShader) beside a native worker: the same two
   figures, and the tab's own texts/s by the GPU time it reported.

    ./dev bench embed [--texts 64] [--rounds 3] [--skip-tab]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "server"), str(ROOT / "tests"), str(ROOT / "e2e"), str(ROOT)]

import models  # noqa: E402
from integration.harness import Coordinator, WorkerProcess  # noqa: E402
from tabgrid import kernels  # noqa: E402
from tabgrid.client.sdk import Client  # noqa: E402
from tabgrid.runtime.array import Array  # noqa: E402
from tabgrid.runtime.loader import run_unit  # noqa: E402
from tabgrid.store import issue_token  # noqa: E402

SUBJECTS = ["The volunteer", "A browser tab", "The coordinator", "Every GPU", "The researcher"]
VERBS = ["computes", "checks", "downloads", "embeds", "validates", "shares"]
OBJECTS = [
    "a batch of sentences",
    "the weights of a small language model once",
    "results that two independent workers agree on",
    "matrix products on its graphics card",
    "units of a job submitted over HTTP",
]


def corpus(n: int) -> list[str]:
    """n short sentences (9 to 16 tokens), the same on every run."""
    rng = np.random.default_rng(10)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ({i})." for i in range(n)
    ]


def gflops(flop: float, seconds: float) -> float:
    return flop / seconds / 1e9


# ---- 1. the kernel against matmul, in process -----------------------------------------------


def _array(value: np.ndarray, digest: str = "") -> Array:
    value = np.ascontiguousarray(value)
    return Array(value.dtype.name, tuple(value.shape), value.tobytes(), digest=digest)


async def kernel_figures(texts: list[str], rounds: int) -> dict[str, Any]:
    import hashlib

    from tabgrid.runtime.gpu_native import NativeGpu

    model = models.minilm()
    params, tokens = model.unit(texts)
    params = model.params() | params
    weights = {
        n: _array(a, hashlib.sha256(a.tobytes()).hexdigest()) for n, a in model.weights.items()
    }
    inputs = weights | {"tokens": _array(tokens)}
    shapes = {n: (a.dtype, a.shape) for n, a in inputs.items()}
    flop = kernels.get("embed").flops(params, shapes)
    gpu = await NativeGpu.open()
    t0 = time.perf_counter()
    await run_unit(gpu, "embed", params, inputs)  # uploads the weights, compiles the shaders
    first = time.perf_counter() - t0
    embed_s = await _best(lambda: run_unit(gpu, "embed", params, inputs), rounds)

    rows = tokens.shape[0] * tokens.shape[1]
    rng = np.random.default_rng(0)
    a = _array(rng.standard_normal((rows, 384), dtype=np.float32))
    b = _array(rng.standard_normal((384, 1536), dtype=np.float32))
    mm = {"a": a, "b": b}
    await run_unit(gpu, "matmul", {}, mm)
    matmul_s = await _best(lambda: run_unit(gpu, "matmul", {}, mm), rounds)
    return {
        "texts": len(texts),
        "shape": tokens.shape,
        "first_s": first,
        "embed_s": embed_s,
        "embed_gflops": gflops(flop, embed_s),
        "matmul_shape": f"{rows}x384 @ 384x1536",
        "matmul_gflops": gflops(2.0 * rows * 384 * 1536, matmul_s),
    }


async def _best(run: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await run()
        times.append(time.perf_counter() - t0)
    return min(times)


# ---- 2 and 3. through a coordinator ---------------------------------------------------------


def _wait(client: Client, job: int, timeout: float = 3600) -> float:
    # Polled: a unit slower than the stall window (a minute) on a software GPU is not stalled.
    end = time.monotonic() + timeout
    while (status := client.job(job)).state == "running" and time.monotonic() < end:
        time.sleep(0.2)
    if status.state != "done":
        raise RuntimeError(f"job {job} {status.state}: {status.error}")
    return time.perf_counter()


def _timed_jobs(client: Client, texts: list[str]) -> tuple[float, float]:
    """Seconds of a one-unit job on cold workers, then texts/s of the whole corpus, warm."""
    t0 = time.perf_counter()
    first = client.submit_embeddings(texts[:32], model=models.NAME, name="bench: first unit")
    cold = _wait(client, first.job.id) - t0
    t0 = time.perf_counter()
    warm = client.submit_embeddings(texts, model=models.NAME, name="bench: steady")
    rate = len(texts) / (_wait(client, warm.job.id) - t0)
    return cold, rate


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.db_path = tmp / "tabgrid.db"
        db = f"sqlite:///{self.db_path}"
        self.token = issue_token(db, "submitter", "bench")
        operator = issue_token(db, "operator", "bench ops")
        self.coordinator = Coordinator(db, tmp, "--allow-same-address").start()
        self.url = self.coordinator.url
        with Client(self.url, operator, timeout=300) as ops:
            ops.import_model(models.model_dir(), name=models.NAME)
        self.workers: list[WorkerProcess] = []
        self.tmp = tmp

    def worker(self) -> None:
        n = len(self.workers)
        self.workers.append(WorkerProcess(self.url, self.tmp / f"worker{n}.log"))

    def busy_s(self, worker_id: str, job: int) -> float:
        with closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as conn:
            (ms,) = conn.execute(
                "SELECT coalesce(sum(elapsed_ms), 0) FROM replicas WHERE worker_id = ? "
                "AND job_id = ? AND state = 'valid'",
                (worker_id, job),
            ).fetchone()
        return ms / 1000

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.coordinator.stop()


def native_figures(texts: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.worker()
            cluster.worker()
            with Client(cluster.url, cluster.token) as client:
                cold, rate = _timed_jobs(client, texts)
        finally:
            cluster.stop()
    return {"first_unit_s": cold, "texts_per_s": rate}


def tab_figures(texts: list[str]) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    from volunteer import STARTED, Volunteer, launch, wait_until

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        cluster = Cluster(Path(tmp))
        browser = launch(p)
        try:
            tab = Volunteer(browser.new_context(), cluster.url + "/", "bench")
            tab.page.locator("#start").click()
            tab.wait_state(*STARTED, timeout=300)
            wait_until("the tab's worker id", lambda: tab.worker_id)
            cluster.worker()  # the second of the quorum
            with Client(cluster.url, cluster.token) as client:
                cold, rate = _timed_jobs(client, texts)
                steady = client.jobs()[0].id
            tab_rate = len(texts) / cluster.busy_s(tab.worker_id, steady)
        finally:
            browser.close()
            cluster.stop()
    return {"first_unit_s": cold, "texts_per_s": rate, "tab_texts_per_gpu_s": tab_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=64, help="texts in the steady-state job")
    parser.add_argument("--rounds", type=int, default=3, help="timed kernel runs (best kept)")
    parser.add_argument("--skip-tab", action="store_true", help="no browser part")
    args = parser.parse_args()
    texts = corpus(args.texts)

    k = asyncio.run(kernel_figures(texts[:32], args.rounds))
    print(f"kernel, in process: {k['texts']} texts as tokens {k['shape']}")
    print(f"  first run (weights uploaded, shaders compiled)  {k['first_s']:.2f} s")
    print(f"  embed, best of {args.rounds}                    {k['embed_s'] * 1e3:.0f} ms, "
          f"{k['embed_gflops']:.2f} GFLOP/s, {k['texts'] / k['embed_s']:.1f} texts/s")  # fmt: skip
    print(f"  matmul {k['matmul_shape']}            {k['matmul_gflops']:.2f} GFLOP/s")
    print(f"  ratio embed / matmul                            "
          f"{k['embed_gflops'] / k['matmul_gflops']:.2f} (target 0.6)")  # fmt: skip

    n = native_figures(texts)
    print(f"native workers (2, quorum 2): first unit {n['first_unit_s']:.1f} s (download and "
          f"upload of the weights), steady {n['texts_per_s']:.1f} texts/s")  # fmt: skip
    if args.skip_tab:
        return
    try:
        t = tab_figures(texts)
    except Exception as e:  # the other figures stand; say why this one is missing
        print(f"browser tab: failed: {type(e).__name__}: {str(e)[:500]}")
        return
    print(f"browser tab + a native worker (quorum 2): first unit {t['first_unit_s']:.1f} s, "
          f"steady {t['texts_per_s']:.1f} texts/s; the tab alone "
          f"{t['tab_texts_per_gpu_s']:.1f} texts per second of its GPU time")  # fmt: skip


if __name__ == "__main__":
    main()
