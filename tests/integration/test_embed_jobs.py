"""Client.embed end to end: a real coordinator, two native workers on wgpu (lavapipe), a tiny
BERT encoder imported as data; the array comes back in input order and matches the numpy
reference text by text."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import tiny_bert
from tabgrid import kernels
from tabgrid.client.embeddings import TruncatedTexts
from tabgrid.client.model_files import read_model
from tabgrid.client.sdk import Client
from tabgrid.coordinator import embed_jobs
from tabgrid.store import issue_token

pytestmark = pytest.mark.integration

TEXTS = [
    "the cat sat on the mat",
    "gpu",
    "a fast dog",
    "the tab is slow " * 12,  # over the tiny model's 24 tokens: truncated
    "",
    "the cat sat on the mat",  # the same text twice: the same row twice
    "Ünïcödé 東京 café",
    "the dog sat",
]


def reference(root: Path, texts: list[str]) -> np.ndarray:
    """Each text alone through the kernel's numpy reference (float64 accumulation)."""
    files = read_model(root)
    checked = tiny_bert.config(max_seq=24)
    config = {k: checked[k] for k in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "layer_norm_eps", "max_position_embeddings", "type_vocab_size", "vocab_size",
    )} | {"max_seq_length": 24, "pooling": "mean", "normalize": True}  # fmt: skip
    tokenizer = embed_jobs.parse(files.tokenizer, 24)
    embed = kernels.get("embed").reference
    rows = []
    for text in texts:
        ids = tokenizer.encode(text).ids
        inputs = dict(files.tensors) | {"tokens": np.array([ids], dtype=np.int32)}
        params = {"model": "tiny", "config": config, "lengths": [len(ids)], "rows": [0]}
        rows.append(embed(params, inputs)["embeddings"][0])
    return np.array(rows)


def test_embed_returns_input_order_rows_that_match_the_reference(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tiny_bert.write(tmp_path / "tiny", seed=5)
    with Client(cluster.url, issue_token(cluster.db, "operator", "ops")) as ops:
        ops.import_model(root)
    cluster.worker()
    cluster.worker()
    with cluster.client() as client, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = client.embed(TEXTS, model="tiny", progress=False, timeout=300)
        (job,) = client.jobs()
        units = list(client.units(job.id))
    assert [str(w.message) for w in caught if w.category is TruncatedTexts] == [
        f"1 of 8 texts were longer than 24 tokens and were truncated to them (as "
        f"sentence-transformers does); job {job.id}"
    ]
    assert got.shape == (8, 16) and got.dtype == np.float32
    expected = reference(root, TEXTS)
    cosine = (got * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9999, cosine
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(got[0], got[5], atol=1e-6)
    assert all(u.state == "done" and u.replicas >= 2 for u in units)
    assert len({w.worker for u in units for w in u.workers if w.state == "valid"}) == 2
