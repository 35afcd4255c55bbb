"""The embed kernel's forward pass in numpy, float64 throughout: what replicas are held to.

Coordinator and tests only (numpy is imported inside the functions: kernels load in Pyodide).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tabgrid.kernels.embed.model import Config


def _layer_norm(x: Any, g: Any, b: Any, eps: float) -> Any:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / (var + eps) ** 0.5 * g + b


def _gelu(x: Any) -> Any:
    import numpy as np

    # numpy has no erf; math.erf element by element is exact and fast enough for tests.
    erf = np.frompyfunc(math.erf, 1, 1)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)).astype(np.float64))


def embeddings(config: Config, tokens: Any, lengths: list[int], weights: Mapping[str, Any]) -> Any:
    """(texts, hidden) float64: mean-pooled over each text's length and L2-normalised."""
    import numpy as np

    w = {name: np.asarray(weights[name], dtype=np.float64) for name in config.shapes()}
    ids = np.asarray(tokens, dtype=np.int64)
    texts, seq = ids.shape
    heads, d = config.heads, config.head_dim

    def norm(v: Any, name: str) -> Any:
        return _layer_norm(v, w[name + ".weight"], w[name + ".bias"], config.eps)

    e = "embeddings."
    x = w[e + "word_embeddings.weight"][ids] + w[e + "position_embeddings.weight"][:seq]
    x = norm(x + w[e + "token_type_embeddings.weight"][0], e + "LayerNorm")
    mask = np.arange(seq)[None, :] < np.asarray(lengths)[:, None]  # (texts, seq)
    bias = np.where(mask, 0.0, -np.inf)[:, None, None, :]

    def linear(v: Any, name: str) -> Any:
        return v @ w[name + ".weight"].T + w[name + ".bias"]

    for layer in range(config.layers):
        p = f"encoder.layer.{layer}."

        def split(v: Any) -> Any:
            return v.reshape(texts, seq, heads, d).transpose(0, 2, 1, 3)

        q, k, v = (split(linear(x, f"{p}attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        ctx = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        ctx = ctx.transpose(0, 2, 1, 3).reshape(texts, seq, config.hidden)
        x = linear(ctx, f"{p}attention.output.dense") + x
        x = norm(x, f"{p}attention.output.LayerNorm")
        y = linear(_gelu(linear(x, f"{p}intermediate.dense")), f"{p}output.dense") + x
        x = norm(y, f"{p}output.LayerNorm")

    pooled = (x * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
