"""Embedding results put back in the researcher's order, and the texts to embed read from a
file (one per line, or JSON lines with a "text" field)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tabgrid.protocol import EmbedJob, EmbedLayout

OUTPUT = "embeddings"  # the embed kernel's one output, float32 (n, dims)


class TruncatedTexts(UserWarning):
    """Some texts were longer than the model's max tokens and were cut to it, as
    sentence-transformers does; their embeddings describe the beginning only."""


def truncation_note(job: EmbedJob) -> str | None:
    if not job.truncated:
        return None
    return (
        f"{job.truncated} of {job.texts} texts were longer than {job.max_tokens} tokens and "
        f"were truncated to them (as sentence-transformers does); job {job.job.id}"
    )


def assemble(layout: EmbedLayout, results: Mapping[int, Mapping[str, np.ndarray]]) -> np.ndarray:
    """The (texts, dims) float32 array in input order from each unit's rows; raises ValueError
    naming the units without a validated result, or a result of the wrong shape."""
    out = np.empty((layout.texts, layout.dims), dtype=np.float32)
    missing = [unit for unit in range(len(layout.rows)) if unit not in results]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"job {layout.job}: {len(missing)} of {len(layout.rows)} units have no validated "
            f"result yet (units {shown}); wait for the job to finish"
        )
    filled = np.zeros(layout.texts, dtype=bool)
    for unit, rows in enumerate(layout.rows):
        got = results[unit][OUTPUT]
        if got.shape != (len(rows), layout.dims):
            raise ValueError(
                f"job {layout.job}: unit {unit} returned {OUTPUT} of shape {got.shape}, "
                f"expected {(len(rows), layout.dims)}"
            )
        out[rows] = got
        filled[rows] = True
    if not filled.all():
        raise ValueError(f"job {layout.job}: {int((~filled).sum())} texts are in no unit")
    return out


def read_texts(path: Path) -> list[str]:
    """One text per line (blank lines skipped), or with a .jsonl/.ndjson name one JSON object
    per line with a "text" field. Raises ValueError naming the line at fault."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        return [line for line in lines if line.strip()]
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{number}: not JSON: {e}") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise ValueError(f'{path}:{number}: expected an object with a "text" string')
        texts.append(item["text"])
    return texts
