"""Two tabs embed texts with all-MiniLM-L6-v2: every unit validated by both, the array equal
to the numpy reference row by row, and the page said the model, for whom and the megabytes it
would fetch before it fetched them."""

from __future__ import annotations

import numpy as np

import models
from tabgrid import kernels
from tabgrid.client.sdk import Client
from volunteer import Site, Volunteer, wait_until

TEXTS = [
    "A volunteer's browser computes this sentence.",
    "GPUs in browser tabs.",
    "The cat sat on the mat.",
    "Sentence embeddings for semantic search",
    "Ünïcödé and 東京 are tokenized too.",
    "short",
    "Results count only when two independent GPUs agree.",
    "WebGPU compute shaders driven by Python.",
]


def _reference(texts: list[str]) -> np.ndarray:
    model = models.minilm()
    params, tokens = model.unit(texts)
    inputs = dict(model.weights) | {"tokens": tokens}
    return kernels.get("embed").reference(model.params() | params, inputs)["embeddings"]


def _showing_work(tabs: list[Volunteer]) -> Volunteer | None:
    return next((t for t in tabs if t.page.locator("#work").is_visible()), None)


def test_two_tabs_embed_texts_and_the_page_names_the_model_first(
    site: Site, fleet: list[Volunteer]
) -> None:
    with Client(site.url, site.operator_token) as ops:
        ops.import_model(models.model_dir(), name=models.NAME)
    tabs, bystander = fleet[:2], fleet[2]
    bystander.page.locator("#pause").click()  # two tabs compute, as a quorum of two needs
    bystander.wait_state("paused")
    try:
        with site.client() as client:
            made = client.submit_embeddings(TEXTS, model=models.NAME, name="e2e embeddings")
            tab = wait_until("a tab to say what it computes", lambda: _showing_work(tabs), 120)
            tab.screenshot("contribute-embedding")
            said = tab.text("#work")
            fetch = int(tab.page.locator("#work").get_attribute("data-fetch-bytes") or 0)
            status = client.wait(made.job.id, progress=False, timeout=900)
            assert status.state == "done", status.error
            got = client.embeddings(made.job.id)
            units = list(client.units(made.job.id))
    finally:
        bystander.page.locator("#resume").click()

    # Said before the download: what it would fetch is every weight, none yet cached.
    weights = sum(a.nbytes for n, a in models.minilm().weights.items() if "pooler" not in n)
    assert fetch == weights
    assert f"sentence embeddings with {models.NAME} for e2e (“e2e embeddings”, 8 texts)" in said
    assert f"downloads {fetch / 1e6:.1f} MB of model, once" in said

    expected = _reference(TEXTS)
    cosine = (got * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    assert got.shape == (8, 384) and cosine.min() >= 0.9999, cosine

    ids = {t.worker_id for t in tabs}
    for unit in units:
        valid = {w.worker for w in unit.workers if w.state == "valid"}
        assert valid == ids, f"unit {unit.index} validated by {valid}"
