"""The embed kernel without a GPU: its checks, its comparator and the resident-buffer cache."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_fixture import to_array
from tabgrid.kernels import embed
from tabgrid.kernels.embed.forward import check_ids
from tabgrid.kernels.embed.model import Config
from tabgrid.runtime.errors import KernelError
from tabgrid.runtime.resident import ResidentCache

CONFIG = {
    "hidden_size": 8,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 16,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 16,
    "type_vocab_size": 2,
    "vocab_size": 50,
    "max_seq_length": 12,
    "pooling": "mean",
    "normalize": True,
}
JOB = {"model": "tiny", "config": CONFIG}


def weights() -> dict[str, tuple[str, tuple[int, ...]]]:
    errors: list[str] = []
    config = Config.parse(CONFIG, errors)
    assert config is not None, errors
    return {name: ("float32", shape) for name, shape in config.shapes().items()}


def unit(n: int = 2, width: int = 5, **params: object) -> tuple[dict, dict]:
    p = JOB | {"lengths": [width] * n, "rows": list(range(n))} | params
    return p, weights() | {"tokens": ("int32", (n, width))}


def unit_rows(rng: np.random.Generator, n: int = 4, hidden: int = 384) -> np.ndarray:
    rows = rng.standard_normal((n, hidden))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


# ---- checks ----------------------------------------------------------------------------------


def test_a_complete_job_and_unit_pass() -> None:
    assert embed.validate_job(JOB, weights()) == []
    assert embed.validate_unit(*unit()) == []


def test_the_job_names_missing_and_misshapen_tensors() -> None:
    inputs = weights()
    del inputs["encoder.layer.1.output.dense.weight"]
    inputs["embeddings.LayerNorm.bias"] = ("float32", (9,))
    inputs["decoder.weight"] = ("float32", (8,))
    errors = embed.validate_job(JOB, inputs)
    assert any("missing" in e and "encoder.layer.1.output.dense.weight" in e for e in errors)
    assert any("'embeddings.LayerNorm.bias' must be float32 [8]" in e for e in errors)
    assert any("unknown input 'decoder.weight'" in e for e in errors)


def test_the_pooler_may_come_along_unused() -> None:
    inputs = weights() | {"pooler.dense.weight": ("float32", (8, 8))}
    assert embed.validate_job(JOB, inputs | {"pooler.dense.bias": ("float32", (8,))}) == []


def test_a_bad_config_is_refused_by_key() -> None:
    config = CONFIG | {"num_attention_heads": 3, "max_seq_length": 0, "pooling": "cls"}
    errors = embed.validate_job({"model": "tiny", "config": config}, weights())
    assert any("'max_seq_length' must be an integer from 1" in e for e in errors)
    assert any("mean pooling" in e for e in errors)
    heads = embed.validate_job({"model": "tiny", "config": CONFIG | {"num_attention_heads": 3}}, {})
    assert any("not a multiple of the heads" in e for e in heads)


def test_lengths_must_fit_the_tokens() -> None:
    assert any("'lengths' must be 2 integers from 1 to 5" in e for e in
               embed.validate_unit(*unit(lengths=[5, 6])))  # fmt: skip
    assert any("'lengths'" in e for e in embed.validate_unit(*unit(lengths=[5])))
    assert any("'lengths'" in e for e in embed.validate_unit(*unit(lengths=[0, 5])))
    assert any("'rows'" in e for e in embed.validate_unit(*unit(rows=[0])))


def test_tokens_over_max_seq_length_are_refused() -> None:
    errors = embed.validate_unit(*unit(width=13))
    assert any("over the model's max_seq_length 12" in e for e in errors)


def test_missing_weights_show_once_per_unit() -> None:
    params, inputs = unit()
    for name in list(inputs)[:7]:
        del inputs[name]
    errors = embed.validate_unit(params, inputs)
    assert len([e for e in errors if "missing" in e]) == 1


def test_token_ids_outside_the_vocabulary_are_refused() -> None:
    check_ids(to_array(np.array([[0, 49]], dtype=np.int32)), 50)
    for bad in (50, -1):
        with pytest.raises(KernelError, match="from 0 to 49"):
            check_ids(to_array(np.array([[1, bad]], dtype=np.int32)), 50)


def test_flops_count_the_products() -> None:
    params, inputs = unit(n=2, width=5)
    h, i, layers = 8, 16, 2
    linear = 2 * 10 * (4 * h * h + 2 * h * i)
    attention = 2 * 4 * 5 * 5 * h
    assert embed.flops(params, inputs) == layers * (linear + attention)


# ---- compare ---------------------------------------------------------------------------------


def test_rows_within_rounding_agree() -> None:
    rng = np.random.default_rng(0)
    a = unit_rows(rng)
    b = a + rng.uniform(-2e-7, 2e-7, a.shape).astype(np.float32)
    assert embed.compare({"embeddings": a}, {"embeddings": b})


def test_one_row_off_disagrees() -> None:
    rng = np.random.default_rng(1)
    a = unit_rows(rng)
    b = a.copy()
    b[2] = unit_rows(rng, 1)[0]  # another text's embedding in row 2
    assert not embed.compare({"embeddings": a}, {"embeddings": b})


def test_one_element_off_disagrees_though_the_cosine_is_high() -> None:
    rng = np.random.default_rng(2)
    a = unit_rows(rng)
    b = a.copy()
    b[1, 7] += 5 * embed.MAX_ABS
    cosine = float(a[1] @ b[1] / np.linalg.norm(a[1]) / np.linalg.norm(b[1]))
    assert cosine >= embed.MIN_COSINE
    assert not embed.compare({"embeddings": a}, {"embeddings": b})
    assert embed.compare({"embeddings": a}, {"embeddings": b}, atol=10 * embed.MAX_ABS)


def test_non_finite_or_misshapen_results_disagree() -> None:
    a = unit_rows(np.random.default_rng(3))
    b = a.copy()
    b[0, 0] = np.nan
    assert not embed.compare({"embeddings": a}, {"embeddings": b})
    assert not embed.compare({"embeddings": a}, {"embeddings": a[:3]})
    assert not embed.compare({"embeddings": a}, {})


# ---- the resident cache ----------------------------------------------------------------------


class Buf:
    destroyed = False


def cache(max_bytes: int) -> ResidentCache:
    def destroy(buf: Buf) -> None:
        buf.destroyed = True

    return ResidentCache(max_bytes, destroy)


def test_resident_buffers_are_uploaded_once_and_evicted_least_recently_used_first() -> None:
    c = cache(100)
    a, b, d = Buf(), Buf(), Buf()
    c.add("a", a, 40)
    c.add("b", b, 40)
    assert c.give_back("a", a) and c.give_back("b", b)
    assert c.take("a") is a  # a is now the more recently used
    c.give_back("a", a)
    c.add("d", d, 40)  # over 100 bytes: b goes
    assert b.destroyed and "b" not in c
    assert "a" in c and "d" in c and c.size == 80 and c.uploads == 3


def test_a_pinned_buffer_is_never_evicted() -> None:
    c = cache(50)
    a, b = Buf(), Buf()
    c.add("a", a, 40)  # pinned by its unit
    c.add("b", b, 40)
    assert not a.destroyed and c.size == 80  # over the bound while both are in use
    c.give_back("a", a)
    assert a.destroyed and "a" not in c and c.size == 40


def test_an_unknown_buffer_is_the_callers_own() -> None:
    c = cache(50)
    a = Buf()
    c.add("a", a, 10)
    assert not c.give_back("a", Buf())
    c.clear()  # a lost device: nothing left to destroy, nothing known
    assert not c.give_back("a", a) and len(c) == 0 and not a.destroyed
