"""all-MiniLM-L6-v2 on native workers (wgpu-py, lavapipe here) against a real coordinator.

Two workers run in this process, each with its own GPU device, so the test can count what
each uploads to its device: the model's weights go up once per worker across units and
jobs, and again after the device is lost. Every unit is computed by both and accepted only
when the kernel's comparator says they agree; each row is held to the numpy reference.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models import Model, minilm
from tabgrid.kernels import embed
from tabgrid.runtime.gpu_native import NativeGpu
from tabgrid.worker.session import Worker

pytestmark = pytest.mark.integration

SHORT = [
    "A man is eating food.",
    "Ünïcödé: 東京は日本の首都です — naïve café",
    "Volunteers lend their GPUs.",
    "Hi",
]
LONG = "the quick brown fox jumps over the lazy dog " * 40  # ~360 tokens: cut to 256
POLICY = {"quorum": 2, "compare": "kernel"}
TIMEOUT_S = 600


def submit(client: Any, model: Model, batches: list[list[str]]) -> int:
    units, first = [], 0
    for texts in batches:
        params, tokens = model.unit(texts, first)
        units.append({"params": params, "inputs": {"tokens": tokens}})
        first += len(texts)
    job = client.submit("embed", units, params=model.params(), inputs=model.weights, policy=POLICY)
    return job.id


def finished(client: Any, job: int) -> dict[int, np.ndarray]:
    assert client.wait(job, progress=False, timeout=TIMEOUT_S).state == "done"
    return {i: out["embeddings"] for i, out in client.results(job).items()}


def assert_matches_reference(model: Model, batches: list[list[str]], rows: dict) -> None:
    for index, texts in enumerate(batches):
        params, tokens = model.unit(texts)
        inputs = dict(model.weights) | {"tokens": tokens}
        expected = embed.reference(model.params() | params, inputs)["embeddings"]
        got = rows[index].astype(np.float64)
        assert got.shape == (len(texts), 384)
        cosine = (got * expected).sum(axis=1) / (
            np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
        )
        assert (cosine >= 0.9999).all(), (texts, cosine)
        assert embed.compare({"embeddings": got}, {"embeddings": expected})


async def serve(url: str, gpus: list[NativeGpu], body: Any) -> Any:
    stop = asyncio.Event()
    logs: list[str] = []
    workers = [Worker(url, gpu=g, concurrency=1, stop=stop, log=logs.append) for g in gpus]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        return await body()
    except BaseException:
        print("worker logs:", *logs, sep="\n  ")  # shown with the failure
        raise
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)


def test_minilm_on_native_workers_matches_the_reference_with_weights_uploaded_once(
    cluster,  # type: ignore[no-untyped-def]
) -> None:
    model = minilm()
    tensors = len(embed.Config.parse(model.config, []).shapes())  # type: ignore[union-attr]
    long_tokens, _ = model.tokenize([LONG])
    assert long_tokens.shape[1] == 256  # truncated as sentence-transformers does
    first = [SHORT, [LONG]]
    second = [SHORT[:2], SHORT[2:]]
    gpus = [NativeGpu(), NativeGpu()]

    async def body() -> None:
        with cluster.client() as client:
            one = await asyncio.to_thread(submit, client, model, first)
            two = await asyncio.to_thread(submit, client, model, second)
            rows_one = await asyncio.to_thread(finished, client, one)
            rows_two = await asyncio.to_thread(finished, client, two)
            assert_matches_reference(model, first, rows_one)
            assert_matches_reference(model, second, rows_two)
            # Four units of two jobs on each worker, one upload of each tensor.
            assert [g.residents.uploads for g in gpus] == [tensors, tensors]
            for g in gpus:
                g.lose_device()
            three = await asyncio.to_thread(submit, client, model, [SHORT[1:3]])
            rows_three = await asyncio.to_thread(finished, client, three)
            assert_matches_reference(model, [SHORT[1:3]], rows_three)
            assert [g.residents.uploads for g in gpus] == [2 * tensors, 2 * tensors]

    try:
        asyncio.run(serve(cluster.url, gpus, body))
    except BaseException:
        show_state(cluster.db, cluster.coordinator.log)
        raise


def show_state(db_url: str, log: Path) -> None:
    """Every unit and replica, and the coordinator's log: printed with a failure, since a
    stall here has many possible causes."""
    db = sqlite3.connect(db_url.split("///", 1)[1])
    try:
        for row in db.execute("SELECT id, job_id, idx, state, want, issued, inflight FROM units"):
            print("unit", row)
        for row in db.execute("SELECT id, unit_id, worker_id, state, error FROM replicas"):
            print("replica", row)
    finally:
        db.close()
    print(log.read_text()[-5000:])
