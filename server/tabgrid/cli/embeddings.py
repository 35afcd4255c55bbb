"""``tabgrid model import PATH``, ``tabgrid models`` and ``tabgrid embed FILE -o emb.npy``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabgrid.cli.common import CliError, add_client_options, find_token

if TYPE_CHECKING:
    from tabgrid.client.sdk import Client
    from tabgrid.protocol import ModelInfo

OPERATOR_TOKEN_FILE = "operator-token"  # the demo saves one beside its submitter token
MB = 1e6


def cmd_model_import(args: argparse.Namespace) -> int:
    from tabgrid.client.model_files import ModelFileError
    from tabgrid.client.sdk import Client

    token = args.token or os.environ.get("TABGRID_TOKEN") or _saved(args.data)
    with Client(args.url, find_token(token, args.data)) as client:
        try:
            imported = client.import_model(args.path, name=args.name)
        except (ModelFileError, OSError) as e:
            raise CliError(f"{args.path}: {e}") from None
    model = imported.model
    what = "imported" if imported.created else "already registered, unchanged:"
    print(f"{what} {model.name} ({format_models([model]).splitlines()[-1].strip()})")
    if imported.ignored:
        print(f"not stored (the encoder does not use them): {', '.join(imported.ignored)}")
    return 0


def _saved(data: Path) -> str | None:
    """The operator token the demo saved, if any: importing a model is an operator's act."""
    try:
        return (data / OPERATOR_TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def cmd_models(args: argparse.Namespace) -> int:
    from tabgrid.cli.common import open_client

    with open_client(args) as client:
        print(format_models(client.models()))
    return 0


def format_models(models: Sequence[ModelInfo]) -> str:
    if not models:
        return "no models registered (an operator adds one with: tabgrid model import PATH)"
    rows = [("name", "architecture", "dims", "max tokens", "layers", "tensors", "MB")]
    for m in models:
        rows.append(
            (
                m.name,
                m.architecture,
                str(m.dims),
                str(m.max_tokens),
                str(m.layers),
                str(m.tensors),
                f"{m.bytes / MB:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def cmd_embed(args: argparse.Namespace) -> int:
    from tabgrid.cli.common import open_client
    from tabgrid.client.embeddings import read_texts, truncation_note

    if args.job is None and args.file is None:
        raise CliError("give a FILE of texts to embed, or --job ID of an embedding job")
    if (args.wait or args.job is not None) and args.output is None:
        raise CliError("say where to save the array: -o emb.npy")
    with open_client(args) as client:
        job_id = args.job
        if job_id is None:
            try:
                texts = read_texts(args.file)
            except (OSError, UnicodeDecodeError, ValueError) as e:
                raise CliError(str(e)) from None
            model = args.model or _only_model(client)
            job = client.submit_embeddings(texts, model=model, name=args.name or args.file.name)
            job_id = job.job.id
            print(job_id, flush=True)
            note = truncation_note(job)
            if note:
                print(f"note: {note}", file=sys.stderr)
            if not args.wait:
                print(f"save it when done with: tabgrid embed --job {job_id} -o emb.npy")
                return 0
            if not _waited(client, job_id, progress=not args.no_progress):
                return 1
        return _save(client, job_id, args.output)


def _waited(client: Client, job_id: int, *, progress: bool) -> bool:
    from tabgrid.client.sdk import JobFailed, JobStalled

    try:
        status = client.wait(job_id, progress=progress, check=True)
    except (JobFailed, JobStalled, TimeoutError) as e:
        print(str(e), file=sys.stderr)
        return False
    if status.state != "done":
        print(f"job {job_id} ended {status.state}; nothing to save", file=sys.stderr)
    return status.state == "done"


def _only_model(client: Client) -> str:
    names = [m.name for m in client.models()]
    if len(names) == 1:
        return names[0]
    known = ", ".join(names) or "none"
    raise CliError(f"say which model with --model NAME (registered: {known})")


def _save(client: Client, job_id: int, out: Path) -> int:
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the truncation note was printed at submission
        array = client.embeddings(job_id)
    if out.suffix != ".npy":
        raise CliError(f"{out}: the array is saved as .npy; name the file FILE.npy")
    np.save(out, array)
    print(f"saved {array.shape[0]} x {array.shape[1]} float32 embeddings to {out}")
    return 0


# ---- parsers ---------------------------------------------------------------------------------


def add_parsers(sub: Any) -> None:
    model = sub.add_parser("model", help="models as data: import one (operators)")
    actions = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    about = "register a sentence-transformers model directory, zip or wheel (operators)"
    token = f"with an operator's token: --token, $TABGRID_TOKEN or DATA/{OPERATOR_TOKEN_FILE}"
    imp = actions.add_parser("import", help=about, description=f"{about}, {token}")
    imp.set_defaults(run=cmd_model_import)
    imp.add_argument("path", type=Path, help="model directory, .zip, or a wheel holding one")
    imp.add_argument("--name", help="register under this name (default: from the path)")
    add_client_options(imp)

    about = "list the registered models"
    models = sub.add_parser("models", help=about, description=about)
    models.set_defaults(run=cmd_models)
    add_client_options(models)

    about = "embed texts (one per line, or JSON lines with a 'text' field) into FILE.npy"
    embed = sub.add_parser("embed", help=about, description=about)
    embed.set_defaults(run=cmd_embed)
    embed.add_argument("file", type=Path, nargs="?", help="texts: .txt lines or .jsonl")
    embed.add_argument("--model", help="model name (default: the only one registered)")
    embed.add_argument("-o", "--output", type=Path, help="where to save the array (.npy)")
    embed.add_argument("--wait", action="store_true", help="wait until done, then save")
    embed.add_argument("--job", type=int, help="save the array of this finished embedding job")
    embed.add_argument("--name", default="", help="the job's name (default: the file's)")
    embed.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_client_options(embed)
