"""Embedding jobs over HTTP: texts in, an ordinary ``embed`` job out, tokenized and cut into
units here; where each text's row is; and what a job computes, for the volunteers computing it.

Like every job, an embedding job is its owner's (and operators'): another submitter's answers
404, as one that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from tabgrid.api import auth, submission
from tabgrid.api.io import decode, json_response, path_int, read_body, services
from tabgrid.api.problems import ProblemError, not_found
from tabgrid.blobs import BlobStore
from tabgrid.coordinator import embed_jobs
from tabgrid.protocol import EmbedAbout, EmbedJob, EmbedLayout, EmbedRequest, JobStatus, Policy
from tabgrid.settings import Limits
from tabgrid.store import jobs, models, tokens
from tabgrid.store.models import Embedding
from tabgrid.store.tokens import Principal
from tabgrid.store.uploads import Owner

DEFAULT_POLICY = {"quorum": 2, "compare": "kernel"}
_decoder = msgspec.json.Decoder(EmbedRequest)


async def create(request: Request) -> Response:
    who = auth.caller(request)
    svc = services(request)
    limits = svc.settings.limits
    body = await read_body(request, limits.max_body, "an embedding request")
    asked = await asyncio.to_thread(decode, body, EmbedRequest, _decoder)
    _check_texts(asked.texts, limits)
    policy = _policy(asked.policy)
    row = await svc.store.run(models.get, asked.model)
    if row is None:
        known = await svc.store.run(models.names)
        raise ProblemError(
            404,
            "Unknown Model",
            f"no model is registered as {asked.model!r}; registered: "
            f"{', '.join(known) or 'none'} (an operator adds one with: tabgrid model import PATH)",
        )
    model = row.record
    planned = await asyncio.to_thread(_plan, svc.tokenizers, model, asked, policy, limits)
    # The checks of any submitted job (the kernel's own, the policy); the token blobs are
    # not stored yet, so those are checked by their sizes as planned.
    errors = await asyncio.to_thread(
        submission.check,
        planned.submit,
        _Sizes(svc.blobs, planned),  # type: ignore[arg-type]
    )
    if errors:
        raise ProblemError(422, "Job Rejected", "the embedding job cannot run as asked", errors)
    made = Embedding(0, model.name, len(asked.texts), planned.truncated)
    job_id = await _store(request, who, planned, made)
    svc.scheduler.poke()
    status = await svc.store.run(_status, job_id, who, time.time())
    assert status is not None
    created = EmbedJob(
        job=status,
        model=model.name,
        texts=len(asked.texts),
        truncated=planned.truncated,
        max_tokens=model.config["max_seq_length"],
        tokens=planned.tokens,
    )
    return json_response(created, 201, {"Location": f"/api/v1/embeddings/{job_id}"})


class _Sizes:
    """Blob sizes as submission.check asks for them: the planned token blobs', else stored."""

    def __init__(self, blobs: BlobStore, planned: embed_jobs.Planned) -> None:
        self.blobs = blobs
        self.planned = {digest: len(data) for digest, data in planned.blobs}

    def size(self, digest: str) -> int:
        found = self.planned.get(digest)
        return found if found is not None else self.blobs.size(digest)


def _check_texts(texts: list[str], limits: Limits) -> None:
    if not texts:
        raise ProblemError(422, "No Texts", "texts is empty: give at least one text to embed")
    if len(texts) > limits.max_embed_texts:
        raise ProblemError(
            413,
            "Too Many Texts",
            f"an embedding job may have at most {limits.max_embed_texts} texts (max_embed_texts)"
            f"; this one has {len(texts)}: split them into several jobs",
        )
    long = [i for i, text in enumerate(texts) if len(text) > limits.max_text_chars]
    if long:
        raise ProblemError(
            413,
            "Text Too Long",
            f"a text may have at most {limits.max_text_chars} characters (max_text_chars); "
            f"{len(long)} have more. Texts are truncated to the model's max tokens anyway, so "
            "cut them first",
            [f"texts[{i}]: {len(texts[i])} characters" for i in long],
        )


def _policy(given: dict) -> Policy:
    try:
        return msgspec.convert(DEFAULT_POLICY | given, Policy)
    except msgspec.ValidationError as e:
        raise ProblemError(422, "Job Rejected", f"policy: {e}") from None


def _plan(
    tokenizers: embed_jobs.Tokenizers,
    model: models.ModelRecord,
    asked: EmbedRequest,
    policy: Policy,
    limits: Limits,
) -> embed_jobs.Planned:
    tokenizer = tokenizers.get(model.tokenizer, model.config["max_seq_length"])
    tokenized = embed_jobs.tokenize(tokenizer, asked.texts, model.lowercase)
    return embed_jobs.plan(
        model, tokenized, policy, asked.name, limits.embed_unit_texts, limits.embed_unit_tokens
    )


async def _store(
    request: Request, who: Principal, planned: embed_jobs.Planned, made: Embedding
) -> int:
    """Writes the token blobs, then the job in one transaction. While landing, no sweep removes
    the files of the blobs being registered (blobs.py)."""
    svc = services(request)
    with contextlib.ExitStack() as landing:
        for digest, _ in planned.blobs:
            landing.enter_context(svc.blobs.landing(digest))
        for digest, data in planned.blobs:
            await asyncio.to_thread(svc.blobs.put, data, digest)
        sizes = [(digest, len(data)) for digest, data in planned.blobs]
        return await svc.store.run(
            models.create_embedding, who.id, planned.submit, sizes, made, time.time()
        )


def _status(conn: Connection, job_id: int, who: Principal, now: float) -> JobStatus | None:
    job = _visible(conn, job_id, who)
    if job is None:
        return None
    return jobs.status_of(conn, job, tokens.name_of(conn, job["owner_id"]), now)


def _visible(conn: Connection, job_id: int, who: Principal) -> dict | None:
    job = jobs.job_record(conn, job_id)
    if job is None or not (who.is_operator or job["owner_id"] == who.id):
        return None
    return job


# ---- reading -----------------------------------------------------------------------------------


async def layout(request: Request) -> Response:
    who = auth.caller(request)
    job_id = path_int(request, "id")
    found = await services(request).store.run(_layout, job_id, who)
    if found is None:
        raise _missing(job_id)
    return json_response(found)


def _layout(conn: Connection, job_id: int, who: Principal) -> EmbedLayout | None:
    made = models.embedding(conn, job_id)
    if made is None or _visible(conn, job_id, who) is None:
        return None
    row = models.get(conn, made.model)
    dims = row.record.config["hidden_size"] if row is not None else 0
    return EmbedLayout(
        job=job_id,
        model=made.model,
        texts=made.texts,
        truncated=made.truncated,
        dims=dims,
        rows=models.unit_rows(conn, job_id),
    )


async def about(request: Request) -> Response:
    who = auth.blob_caller(request)
    job_id = path_int(request, "id")
    found = await services(request).store.run(_about, job_id, who)
    if found is None:
        raise _missing(job_id)
    return json_response(found)


def _about(conn: Connection, job_id: int, who: Owner) -> EmbedAbout | None:
    made = models.embedding(conn, job_id)
    if made is None:
        return None
    if who.kind == "worker":
        if not models.worker_holds(conn, who.id, job_id):
            return None
    elif who.principal is None or _visible(conn, job_id, who.principal) is None:
        return None
    job = jobs.job_record(conn, job_id)
    if job is None:
        return None
    return EmbedAbout(
        job=job_id,
        model=made.model,
        name=job["name"],
        owner=tokens.name_of(conn, job["owner_id"]),
        texts=made.texts,
    )


def _missing(job_id: int) -> ProblemError:
    return not_found(
        f"embedding job {job_id} does not exist, belongs to someone else, or is not an "
        "embedding job (POST /api/v1/embeddings makes one)"
    )
