"""An embedding job from texts: tokenized here (Hugging Face's tokenizers), truncated as
sentence-transformers truncates, sorted by length and cut into units of similar length.

A unit is the contract of the ``embed`` kernel: inputs {"tokens": int32 (n, L)}, the ids of n
texts padded with 0 to the longest, L; params {"lengths": [n], "rows": [n]}, rows being each
text's position in the researcher's input. The job's inputs are the model's weights.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from tabgrid.protocol import BlobRef, JobSubmit, Policy, UnitSpec
from tabgrid.store.models import ModelRecord

KERNEL = "embed"
KEPT_TOKENIZERS = 8


@dataclass(frozen=True)
class Tokenized:
    ids: list[list[int]]
    truncated: int  # texts that were longer than max_seq_length tokens

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.ids]


@dataclass(frozen=True)
class Planned:
    """A job ready to store: the submission and the token blobs its units name."""

    submit: JobSubmit
    blobs: list[tuple[str, bytes]]  # (digest, bytes) of each unit's tokens
    truncated: int
    tokens: int


class Tokenizers:
    """Tokenizers by tokenizer.json digest and length, each parsed once; a few are kept."""

    def __init__(self, read: Callable[[str], bytes]) -> None:
        self._read = read
        self._kept: OrderedDict[tuple[str, int], Tokenizer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ref: BlobRef, max_length: int) -> Tokenizer:
        key = (ref.digest, max_length)
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                return found
        tokenizer = parse(self._read(ref.digest), max_length)
        with self._lock:
            self._kept[key] = tokenizer
            while len(self._kept) > KEPT_TOKENIZERS:
                self._kept.popitem(last=False)
        return tokenizer


def parse(data: bytes, max_length: int) -> Tokenizer:
    """tokenizer.json as sentence-transformers uses it: truncated at max_length tokens (special
    tokens included), never padded (units pad to their own longest). Raises ValueError."""
    try:
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # the Rust side raises its own Exception type
        raise ValueError(f"tokenizer.json does not load with tokenizers: {e}") from None
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def tokenize(tokenizer: Tokenizer, texts: Sequence[str], lowercase: bool) -> Tokenized:
    if lowercase:
        texts = [text.lower() for text in texts]
    encodings = tokenizer.encode_batch(list(texts))
    truncated = sum(1 for e in encodings if e.overflowing)
    return Tokenized([e.ids for e in encodings], truncated)


def plan_units(lengths: Sequence[int], max_texts: int, max_tokens: int) -> list[list[int]]:
    """Text positions grouped into units: shortest first, each unit at most max_texts texts and
    max_tokens tokens once padded to its longest (a text alone may exceed it)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)  # stable: ties keep order
    units: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]  # sorted: the newest text is the longest
        if current and (len(current) >= max_texts or (len(current) + 1) * longest > max_tokens):
            units.append(current)
            current = []
        current.append(i)
    if current:
        units.append(current)
    return units


def token_blob(ids: Sequence[Sequence[int]]) -> tuple[bytes, list[int]]:
    """The ids as int32 (n, L), padded with 0 to the longest; its bytes and shape."""
    width = max(len(row) for row in ids)
    array = np.zeros((len(ids), width), dtype="<i4")
    for r, row in enumerate(ids):
        array[r, : len(row)] = row
    return array.tobytes(), [len(ids), width]


def plan(
    model: ModelRecord,
    tokenized: Tokenized,
    policy: Policy,
    name: str,
    max_texts: int,
    max_tokens: int,
) -> Planned:
    lengths = tokenized.lengths
    units: list[UnitSpec] = []
    blobs: list[tuple[str, bytes]] = []
    for rows in plan_units(lengths, max_texts, max_tokens):
        data, shape = token_blob([tokenized.ids[i] for i in rows])
        digest = hashlib.sha256(data).hexdigest()
        blobs.append((digest, data))
        tokens = BlobRef(digest=digest, dtype="int32", shape=shape)
        params = {"lengths": [lengths[i] for i in rows], "rows": rows}
        units.append(UnitSpec(params=params, inputs={"tokens": tokens}))
    submit = JobSubmit(
        kernel=KERNEL,
        units=units,
        params={"model": model.name, "config": model.config},
        inputs=dict(model.tensors),
        policy=policy,
        name=name or f"embeddings of {len(lengths)} texts with {model.name}",
    )
    return Planned(submit, blobs, tokenized.truncated, sum(lengths))
