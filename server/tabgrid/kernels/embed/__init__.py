"""Sentence embeddings with a BERT encoder (all-MiniLM-L6-v2 first), the whole forward pass
in WGSL: embeddings and LayerNorm; per layer the QKV projections, masked softmax attention,
output projection, residual and LayerNorm, the GELU FFN, residual and LayerNorm; then mean
pooling over each text's tokens and L2 normalisation.

Job: params {"model": name, "config": {...}} (embed.model.Config.parse says which keys),
inputs every weight tensor by its safetensors name (without "bert."), float32. Unit: input
"tokens" int32 (n, L), the token ids of n texts padded with 0 to the longest, L <=
max_seq_length; params "lengths" (n ints: tokens that count, the attention and pooling mask)
and "rows" (n ints: the texts' places in the researcher's order, unused here). Output
"embeddings" float32 (n, hidden). Weights stay resident on the GPU across units (keyed by
their blob digests), so a worker uploads a model once.

GELU is BERT's exact erf form; WGSL has no erf, so linear.wgsl uses the rational
approximation of Eigen and XLA (6.5e-8 from erf in exact arithmetic, 4.2e-7 in float32).

Agreement (``compare``): every row's cosine >= MIN_COSINE and every element within MAX_ABS.
Measured against the float64 reference on all-MiniLM-L6-v2 (texts of 3 to 256 tokens, one
non-ASCII): native wgpu-py on lavapipe, 1 - cosine <= 7.6e-13 and max |difference| <=
2.4e-7; Chromium's WebGPU on SwiftShader, <= 7.2e-13 and <= 2.2e-7. Two honest replicas
then differ by about 5e-7. The bounds (1e-5 and 1e-4) leave room for GPUs whose exp and
division are less exact than these CPU backends' (WGSL allows exp 3 + 2|x| ULP, division
2.5 ULP), which were not measured here; a row within 1e-4 of the right one in every element
(about 0.2% of a typical element, 1/sqrt(384)) is that text's embedding for any search,
while another text's row fails by far: the closest pairs among six test sentences ("Hi" and
"Hello"; two "A man is eating ..." sentences) had cosines 0.81 and 0.76.
"""

from __future__ import annotations

from typing import Any

from tabgrid.kernels.embed.checks import validate_job, validate_unit
from tabgrid.kernels.embed.forward import embed
from tabgrid.kernels.embed.model import Config
from tabgrid.kernels.params import Described
from tabgrid.runtime.array import Array
from tabgrid.runtime.errors import KernelError
from tabgrid.runtime.gpu import Gpu

__all__ = ["compare", "flops", "reference", "run", "validate_job", "validate_unit"]

NAME = "embed"
VERSION = "1"
MIN_COSINE = 0.99999
MAX_ABS = 1e-4


def _config(params: dict[str, Any]) -> Config:
    errors: list[str] = []
    config = Config.parse(params.get("config"), errors)
    if config is None:
        raise KernelError("; ".join(errors))
    return config


async def run(gpu: Gpu, params: dict[str, Any], inputs: dict[str, Array]) -> dict[str, Array]:
    config = _config(params)
    return {"embeddings": await embed(gpu, config, inputs["tokens"], params["lengths"], inputs)}


def reference(params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from tabgrid.kernels.embed.numpy_forward import embeddings

    config = _config(params)
    ids = np.asarray(inputs["tokens"])
    if ids.size and not (ids.min() >= 0 and ids.max() < config.vocab):
        raise KernelError(f"token ids must be from 0 to {config.vocab - 1}")
    rows = embeddings(config, ids, params["lengths"], inputs)
    return {"embeddings": rows.astype(np.float32)}


def flops(params: dict[str, Any], inputs: Described) -> float:
    """The matrix products the GPU computes: the linear layers over all n x L token rows
    (padding too, as a dense product does), attention over each text's own length."""
    config = _config(params)
    n, seq = inputs["tokens"][1]
    h, i = config.hidden, config.intermediate
    linear = 2.0 * n * seq * (4 * h * h + 2 * h * i)
    attention = sum(4.0 * length * length * h for length in params["lengths"])
    return config.layers * (linear + attention)


def compare(a: dict[str, Any], b: dict[str, Any], rtol: float = 0.0, atol: float = 0.0) -> bool:
    """Two results agree when every row's cosine is at least MIN_COSINE (or 1 - rtol, if
    that is lower) and no element differs by more than MAX_ABS (or atol, if larger): a
    job's policy can loosen the measured bounds, not tighten them below honest rounding."""
    import numpy as np

    x = np.asarray(a.get("embeddings"), dtype=np.float64)
    y = np.asarray(b.get("embeddings"), dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.size == 0:
        return False
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return False
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    if not (norms > 0).all():
        return False
    cosine = (x * y).sum(axis=1) / norms
    floor = min(MIN_COSINE, 1.0 - rtol)
    bound = max(MAX_ABS, atol)
    return bool((cosine >= floor).all() and np.abs(x - y).max() <= bound)
