"""A tiny BERT sentence encoder on disk, in the files sentence-transformers writes: a real
WordPiece tokenizer (made with tokenizers) and random weights (saved with safetensors). Small
enough that a native worker on lavapipe embeds a few texts in a moment."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "dog", "sat", "on", "mat", "gpu", "tab", "is", "a", "fast", "slow"]
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {
        "idx": 2,
        "name": "2",
        "path": "2_Normalize",
        "type": "sentence_transformers.models.Normalize",
    },
]
POOLING = {
    "word_embedding_dimension": 16,
    "pooling_mode_cls_token": False,
    "pooling_mode_mean_tokens": True,
    "pooling_mode_max_tokens": False,
    "pooling_mode_mean_sqrt_len_tokens": False,
}


def vocabulary() -> dict[str, int]:
    letters = list(string.ascii_lowercase + string.digits)
    tokens = SPECIAL + WORDS + letters + [f"##{c}" for c in letters]
    return {token: i for i, token in enumerate(tokens)}


def tokenizer() -> Tokenizer:
    vocab = vocabulary()
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return tok


def config(hidden: int = 16, layers: int = 2, heads: int = 2, max_seq: int = 24) -> dict[str, Any]:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": max_seq + 8,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "type_vocab_size": 2,
        "vocab_size": len(vocabulary()),
        "position_embedding_type": "absolute",
    }


def weights(cfg: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, i = cfg["hidden_size"], cfg["intermediate_size"]

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    def ones_ish(n: int) -> np.ndarray:
        return (1 + rng.standard_normal(n) * 0.05).astype(np.float32)

    w = {
        "embeddings.word_embeddings.weight": normal(cfg["vocab_size"], h),
        "embeddings.position_embeddings.weight": normal(cfg["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": normal(cfg["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": ones_ish(h),
        "embeddings.LayerNorm.bias": normal(h),
        "pooler.dense.weight": normal(h, h),
        "pooler.dense.bias": normal(h),
    }
    for n in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        for part in ("query", "key", "value"):
            w[f"{p}attention.self.{part}.weight"] = normal(h, h)
            w[f"{p}attention.self.{part}.bias"] = normal(h)
        w[f"{p}attention.output.dense.weight"] = normal(h, h)
        w[f"{p}attention.output.dense.bias"] = normal(h)
        w[f"{p}attention.output.LayerNorm.weight"] = ones_ish(h)
        w[f"{p}attention.output.LayerNorm.bias"] = normal(h)
        w[f"{p}intermediate.dense.weight"] = normal(i, h)
        w[f"{p}intermediate.dense.bias"] = normal(i)
        w[f"{p}output.dense.weight"] = normal(h, i)
        w[f"{p}output.dense.bias"] = normal(h)
        w[f"{p}output.LayerNorm.weight"] = ones_ish(h)
        w[f"{p}output.LayerNorm.bias"] = normal(h)
    return w


def write(root: Path, *, seed: int = 0, max_seq: int = 24, **changes: Any) -> Path:
    """The model's files under ``root``; ``changes`` override config.json's fields."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = config(max_seq=max_seq)
    save_file(weights(cfg, seed), str(root / "model.safetensors"))
    cfg.update(changes)
    (root / "config.json").write_text(json.dumps(cfg))
    (root / "modules.json").write_text(json.dumps(MODULES))
    (root / "1_Pooling").mkdir(exist_ok=True)
    (root / "1_Pooling" / "config.json").write_text(json.dumps(POOLING))
    sbert = {"max_seq_length": max_seq, "do_lower_case": False}
    (root / "sentence_bert_config.json").write_text(json.dumps(sbert))
    tokenizer().save(str(root / "tokenizer.json"))
    return root
