"""The BERT forward pass on the GPU facade: 2 + 9 per layer dispatches, buffers reused."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from math import sqrt
from typing import Any

from tabgrid.kernels import shader_source
from tabgrid.kernels.embed.model import Config
from tabgrid.runtime.array import Array
from tabgrid.runtime.errors import KernelError
from tabgrid.runtime.gpu import Buffer, Gpu

TILE = 64  # linear.wgsl's output tile side
QUERY_TILE = 64  # attention.wgsl's query rows per workgroup
_ROWS = shader_source("embed/rows.wgsl")
EMBEDDINGS = _ROWS + shader_source("embed/embeddings.wgsl")
LAYERNORM = _ROWS + shader_source("embed/layernorm.wgsl")
POOL = _ROWS + shader_source("embed/pool.wgsl")
LINEAR = shader_source("embed/linear.wgsl")
ATTENTION = shader_source("embed/attention.wgsl")


def check_ids(tokens: Array, vocab: int) -> None:
    """Token ids index the embedding table: one out of range would read another tensor."""
    ids = memoryview(tokens.data).cast("i")
    if ids and not (min(ids) >= 0 and max(ids) < vocab):
        raise KernelError(f"token ids must be from 0 to {vocab - 1}, found {min(ids)}..{max(ids)}")


@dataclass
class _Pass:
    """One unit's buffers: the weights (resident), activations and uniform blocks."""

    gpu: Gpu
    config: Config
    texts: int
    seq: int
    held: list[Buffer]
    weights: dict[str, Buffer]

    @property
    def rows(self) -> int:
        return self.texts * self.seq

    async def buffer(self, size: int) -> Buffer:
        buf = await self.gpu.empty(size)
        self.held.append(buf)
        return buf

    async def uniform(self, fmt: str, *values: Any) -> Buffer:
        buf = await self.gpu.upload(struct.pack(fmt, *values), usage="uniform")
        self.held.append(buf)
        return buf

    async def linear(
        self, entry: str, x: Buffer, name: str, y: Buffer, dims: Buffer, out: int, **extra: Buffer
    ) -> None:
        w, b = self.weights[f"{name}.weight"], self.weights[f"{name}.bias"]
        bindings = {0: x, 1: w, 2: b, 3: y, 4: dims}
        if "residual" in extra:
            bindings[5] = extra["residual"]
        groups = (-(-out // TILE), -(-self.rows // TILE), 1)
        await self.gpu.dispatch(LINEAR, entry, bindings, groups)

    async def embeddings(self, ids: Buffer, x: Buffer) -> None:
        w, c = self.weights, self.config
        tables = ("word_embeddings", "position_embeddings", "token_type_embeddings")
        bindings = {0: ids} | {n + 1: w[f"embeddings.{t}.weight"] for n, t in enumerate(tables)}
        bindings |= {4: w["embeddings.LayerNorm.weight"], 5: w["embeddings.LayerNorm.bias"], 6: x}
        bindings[7] = await self.uniform("<3If", self.rows, self.seq, c.hidden, c.eps)
        await self.gpu.dispatch(EMBEDDINGS, "main", bindings, (self.rows, 1, 1))

    async def layer_norm(self, x: Buffer, name: str, y: Buffer, dims: Buffer) -> None:
        g, b = self.weights[f"{name}.weight"], self.weights[f"{name}.bias"]
        bindings = {0: x, 1: g, 2: b, 3: y, 4: dims}
        await self.gpu.dispatch(LAYERNORM, "main", bindings, (self.rows, 1, 1))


async def _weights(gpu: Gpu, config: Config, inputs: Mapping[str, Array], held: list[Buffer]):
    weights: dict[str, Buffer] = {}
    for name in config.shapes():
        array = inputs[name]
        if array.digest:
            buf = await gpu.resident(array.digest, array.data)
        else:  # a caller without blobs (a test, a script): this unit's own copy
            buf = await gpu.upload(array.data)
        held.append(buf)
        weights[name] = buf
    return weights


async def embed(
    gpu: Gpu, config: Config, tokens: Array, lengths: list[int], inputs: Mapping[str, Array]
) -> Array:
    """The (texts, hidden) float32 embeddings of one batch of token ids."""
    check_ids(tokens, config.vocab)
    texts, seq = tokens.shape
    held: list[Buffer] = []
    try:
        weights = await _weights(gpu, config, inputs, held)
        unit = _Pass(gpu, config, texts, seq, held, weights)
        out = await _forward(unit, tokens, lengths)
        return Array("float32", (texts, config.hidden), await gpu.read(out))
    finally:
        gpu.release(*held)


async def _forward(unit: _Pass, tokens: Array, lengths: list[int]) -> Buffer:
    c, rows, gpu = unit.config, unit.rows, unit.gpu
    h, i = c.hidden, c.intermediate
    ids = await gpu.upload(tokens.data)
    unit.held.append(ids)
    lens = await gpu.upload(struct.pack(f"<{len(lengths)}i", *lengths))
    unit.held.append(lens)
    x, tmp, ctx, q, k, v = [await unit.buffer(rows * h * 4) for _ in range(6)]
    ffn = await unit.buffer(rows * i * 4)
    out = await unit.buffer(unit.texts * h * 4)
    square = await unit.uniform("<4I", rows, h, h, 0)
    up = await unit.uniform("<4I", rows, i, h, 0)
    down = await unit.uniform("<4I", rows, h, i, 0)
    norm = await unit.uniform("<2IfI", rows, h, c.eps, 0)
    attention = await unit.uniform("<3If", unit.seq, h, c.head_dim, 1 / sqrt(c.head_dim))

    await unit.embeddings(ids, x)

    for layer in range(c.layers):
        p = f"encoder.layer.{layer}."
        for name, y in (("query", q), ("key", k), ("value", v)):
            await unit.linear("plain", x, f"{p}attention.self.{name}", y, square, h)
        groups = (-(-unit.seq // QUERY_TILE), c.heads, unit.texts)
        heads = {0: q, 1: k, 2: v, 3: lens, 4: ctx, 5: attention}
        await gpu.dispatch(ATTENTION, "main", heads, groups)
        a = f"{p}attention.output."
        await unit.linear("with_residual", ctx, f"{a}dense", tmp, square, h, residual=x)
        await unit.layer_norm(tmp, f"{a}LayerNorm", x, norm)
        await unit.linear("with_gelu", x, f"{p}intermediate.dense", ffn, up, i)
        await unit.linear("with_residual", ffn, f"{p}output.dense", tmp, down, h, residual=x)
        await unit.layer_norm(tmp, f"{p}output.LayerNorm", x, norm)

    pool = await unit.uniform("<4I", unit.texts, unit.seq, h, 0)
    await gpu.dispatch(POOL, "main", {0: x, 1: lens, 2: out, 3: pool}, (unit.texts, 1, 1))
    return out
