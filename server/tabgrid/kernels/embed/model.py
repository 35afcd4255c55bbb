"""What the embed kernel knows of a BERT sentence encoder: its config and its weight names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tabgrid.runtime.gpu import MAX_STORAGE_BUFFER_BINDING_SIZE

# Shader limits (rows.wgsl, attention.wgsl): a row lives in one workgroup of 128 invocations
# holding 8 elements each; a head's keys fit one workgroup array of 512 scores; a head's
# columns are split evenly over 64 invocations.
MAX_HIDDEN = 1024
MAX_KEYS = 512
MAX_HEAD_DIM = 64
MAX_ROWS = 65535  # one workgroup per token row in a single dispatch dimension
MAX_LAYERS = 48

# The safetensors names (without a leading "bert.") of a model's float32 tensors. Pooler
# tensors ship with most checkpoints; mean pooling does not use them, so they may come along.
EMBEDDINGS = (
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias",
)
LAYER = (
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
)
UNUSED = ("pooler.dense.weight", "pooler.dense.bias")

_INTS = {
    "hidden_size": (1, MAX_HIDDEN),
    "num_hidden_layers": (1, MAX_LAYERS),
    "num_attention_heads": (1, MAX_HIDDEN),
    "intermediate_size": (1, 16384),
    "max_position_embeddings": (1, 1 << 16),
    "type_vocab_size": (1, 1 << 16),
    "vocab_size": (1, 1 << 24),
    "max_seq_length": (1, MAX_KEYS),
}


@dataclass(frozen=True, slots=True)
class Config:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    eps: float
    positions: int
    type_vocab: int
    vocab: int
    max_seq: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def max_tokens(self) -> int:
        """Token rows (texts x padded length) one unit may hold: every activation buffer
        must fit one storage binding, and each row is one workgroup of a dispatch."""
        widest = max(self.hidden, self.intermediate) * 4
        return min(MAX_ROWS, MAX_STORAGE_BUFFER_BINDING_SIZE // widest)

    @classmethod
    def parse(cls, raw: Any, errors: list[str]) -> Config | None:
        """The config, or None with the reasons appended to ``errors``."""
        if not isinstance(raw, Mapping):
            errors.append("param 'config' must be an object with the model's config")
            return None
        before = len(errors)
        for key, (lo, hi) in _INTS.items():
            value = raw.get(key)
            if type(value) is not int or not lo <= value <= hi:
                errors.append(f"config {key!r} must be an integer from {lo} to {hi}, not {value!r}")
        eps = raw.get("layer_norm_eps")
        if type(eps) not in (int, float) or not 0 < eps < 1:
            errors.append(f"config 'layer_norm_eps' must be a number in (0, 1), not {eps!r}")
        if raw.get("pooling") != "mean" or raw.get("normalize") is not True:
            errors.append("config: only mean pooling with normalize true is supported")
        if len(errors) > before:
            return None
        config = cls(
            raw["hidden_size"],
            raw["num_hidden_layers"],
            raw["num_attention_heads"],
            raw["intermediate_size"],
            float(eps),
            raw["max_position_embeddings"],
            raw["type_vocab_size"],
            raw["vocab_size"],
            raw["max_seq_length"],
        )
        config._check(errors)
        return None if len(errors) > before else config

    def _check(self, errors: list[str]) -> None:
        if self.hidden % self.heads:
            errors.append(f"config: hidden_size {self.hidden} is not a multiple of the heads")
        elif self.head_dim > MAX_HEAD_DIM or MAX_HEAD_DIM % self.head_dim:
            errors.append(f"config: head size {self.head_dim} must divide {MAX_HEAD_DIM}")
        if self.max_seq > self.positions:
            errors.append(
                f"config: max_seq_length {self.max_seq} exceeds max_position_embeddings "
                f"{self.positions}"
            )

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the forward pass reads, by name, with its shape."""
        return _shapes(self)


@lru_cache(maxsize=16)  # validate_unit asks once per unit; a job's units share a config
def _shapes(config: Config) -> dict[str, tuple[int, ...]]:
    h, i = config.hidden, config.intermediate
    embeddings = [(config.vocab, h), (config.positions, h), (config.type_vocab, h), (h,), (h,)]
    shapes: dict[str, tuple[int, ...]] = dict(zip(EMBEDDINGS, embeddings, strict=True))
    per_layer = [(h, h), (h,)] * 4 + [(h,), (h,), (i, h), (i,), (h, i), (h,), (h,), (h,)]
    layer = dict(zip(LAYER, per_layer, strict=True))
    for n in range(config.layers):
        shapes.update({f"encoder.layer.{n}.{name}": s for name, s in layer.items()})
    return shapes


def optional_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    h = config.hidden
    return {UNUSED[0]: (h, h), UNUSED[1]: (h,)}
