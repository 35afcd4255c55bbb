"""Models over HTTP: an operator imports one (its weights uploaded first as blobs), anyone with
a token lists them."""

from __future__ import annotations

import asyncio
import time

import msgspec
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from tabgrid import kernels
from tabgrid.api import auth
from tabgrid.api.io import decode, json_response, read_body, services
from tabgrid.api.problems import ProblemError
from tabgrid.api.submission import shapes_of
from tabgrid.blobs import BlobStore
from tabgrid.coordinator import embed_jobs, model_check
from tabgrid.coordinator.embed_jobs import Tokenizers
from tabgrid.protocol import ModelImport, ModelImported, ModelInfo, ModelList
from tabgrid.settings import MiB
from tabgrid.store import audit, models
from tabgrid.store.models import ModelConflict, ModelRecord, ModelRow
from tabgrid.store.tokens import Principal

MAX_IMPORT_BODY = 4 * MiB  # the JSON files and one reference per tensor
_decoder = msgspec.json.Decoder(ModelImport)


def info(row: ModelRow) -> ModelInfo:
    config = row.record.config
    return ModelInfo(
        name=row.record.name,
        architecture=row.record.architecture,
        dims=config["hidden_size"],
        max_tokens=config["max_seq_length"],
        layers=config["num_hidden_layers"],
        tensors=len(row.record.tensors),
        bytes=row.total_bytes,
        created_at=row.created_at,
    )


async def list_models(request: Request) -> Response:
    rows = await services(request).store.run(models.list_models)
    return json_response(ModelList(models=[info(row) for row in rows]))


async def import_model(request: Request) -> Response:
    who = auth.caller(request)
    svc = services(request)
    body = await read_body(request, MAX_IMPORT_BODY, "a model import")
    spec = await asyncio.to_thread(decode, body, ModelImport, _decoder)
    checked = await asyncio.to_thread(model_check.check, spec, _sizes(svc.blobs))
    record = checked.record
    errors = checked.errors or _kernel_errors(record)
    errors = errors or await asyncio.to_thread(_tokenizer_errors, svc.tokenizers, record)
    if errors or record is None:
        raise ProblemError(
            422,
            "Model Rejected",
            f"{len(errors)} problem(s) with model {spec.name!r}; nothing was registered",
            errors,
        )
    try:
        row, created = await svc.store.run(_register, who, record, time.time())
    except ModelConflict as e:
        raise ProblemError(
            409,
            "Name Taken",
            f"a model named {e} with other weights or config is registered already; import "
            "this one under another name (tabgrid model import PATH --name NAME)",
        ) from None
    imported = ModelImported(model=info(row), created=created, ignored=checked.ignored)
    return json_response(imported, 201 if created else 200)


def _sizes(blobs: BlobStore):  # type: ignore[no-untyped-def]
    def size_of(digest: str) -> int | None:
        try:
            return blobs.size(digest)
        except FileNotFoundError:
            return None

    return size_of


def _kernel_errors(record: ModelRecord | None) -> list[str]:
    """What the embed kernel says of a job on this model: a model it cannot run (too wide for
    its shaders, say) is refused now, not at every submission."""
    assert record is not None
    params = {"model": record.name, "config": record.config}
    kernel = kernels.get(embed_jobs.KERNEL)
    return [f"embed kernel: {e}" for e in kernel.validate_job(params, shapes_of(record.tensors))]


def _tokenizer_errors(tokenizers: Tokenizers, record: ModelRecord | None) -> list[str]:
    assert record is not None
    try:
        tokenizer = tokenizers.get(record.tokenizer, record.config["max_seq_length"])
    except ValueError as e:
        return [f"tokenizer: {e}"]
    vocab, rows = tokenizer.get_vocab_size(), record.config["vocab_size"]
    if vocab > rows:
        return [f"tokenizer: its vocabulary has {vocab} tokens, the embeddings only {rows} rows"]
    return []


def _register(
    conn: Connection, who: Principal, record: ModelRecord, now: float
) -> tuple[ModelRow, bool]:
    row, created = models.register(conn, record, now, uploader=f"token:{who.id}")
    if created:
        detail = f"{len(record.tensors)} tensors, {record.total_bytes} bytes"
        audit.record(conn, who, "import model", f"model {record.name}", detail, now)
    return row, created
