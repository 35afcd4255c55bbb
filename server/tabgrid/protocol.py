"""Every websocket message and HTTP body, as msgspec Structs.

Websocket messages are JSON text frames tagged by a lower-case ``type`` field; the browser
worker speaks the same tags. New fields always get defaults so old peers keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

PROTOCOL_VERSION = 1

Digest = Annotated[str, Meta(pattern="^[0-9a-f]{64}$", description="sha256 of the bytes, hex")]
DType = Literal["float32", "int32", "uint32", "uint8", "float64", "int64"]
Params = dict[str, Any]


MAX_DIMS = 8
# One dimension of an array: 2^40 elements is far past any blob limit, and products of eight of
# them still fit in the integers numpy and the databases use.
Dim = Annotated[int, Meta(ge=0, le=1 << 40)]
Shape = Annotated[list[Dim], Meta(max_length=MAX_DIMS)]
# Every integer that reaches a column is bounded to what the column holds on both backends:
# ids, unit indexes and priorities are INTEGER columns, 64-bit on SQLite but 32-bit on
# PostgreSQL (SERIAL), where a larger value fails the query itself.
INT64_MAX = (1 << 63) - 1
INT32_MAX = (1 << 31) - 1
Id = Annotated[int, Meta(ge=0, le=INT32_MAX)]  # as a worker names a lease
NO_NUL = r"^[^\x00]*$"  # PostgreSQL's text cannot hold NUL: refused at decode, not in a statement
Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=NO_NUL)]


class BlobRef(Struct, frozen=True):
    """A typed array stored as a content-addressed blob (C order, little-endian)."""

    digest: Digest
    dtype: DType
    shape: Shape


class Output(Struct, frozen=True):
    """One named output of a unit: a blob reference, with the bytes inline when small."""

    digest: Digest
    dtype: DType
    shape: Shape
    data: bytes | None = None


# ---- worker -> coordinator ----------------------------------------------------------------


Short = Annotated[str, Meta(max_length=200, pattern=NO_NUL)]  # shown to operators, stored


class Adapter(Struct, frozen=True):
    vendor: Short = ""
    architecture: Short = ""
    description: Short = ""


class Hello(Struct, tag="hello", frozen=True):
    kind: Literal["native", "browser"]
    protocol: int = PROTOCOL_VERSION
    worker_id: Annotated[str, Meta(max_length=64)] | None = None
    secret: Annotated[str, Meta(max_length=200)] | None = None
    name: Short = ""
    adapter: Adapter = Adapter()
    kernels: Annotated[list[Short], Meta(max_length=64)] = []
    # The worker keeps each result it sent until an Ack names it, and sends the ones not
    # acknowledged again after reconnecting. A worker that does not say so gets no Ack.
    acks: bool = False


class Hold(Struct, tag="hold", frozen=True):
    """Send nothing more for now (the volunteer paused): the unused credit is dropped."""


class Ready(Struct, tag="ready", frozen=True):
    n: Annotated[int, Meta(ge=0, le=10_000)]


class ResultItem(Struct, frozen=True):
    """Untrusted: every field is bounded here, so a hostile value fails its own message at
    decode instead of the scheduler's round."""

    lease: Id
    outputs: Annotated[dict[Name, Output], Meta(max_length=32)] | None = None
    error: Annotated[str, Meta(max_length=4000, pattern=NO_NUL)] | None = None
    elapsed_ms: Annotated[float, Meta(ge=0, le=1e9)] = 0.0
    # "deterministic": the worker says the error is the shader's own (compile or validation),
    # the same on every GPU. A claim only: the validator confirms it before failing anything.
    error_kind: Literal["", "deterministic"] = ""


class Result(Struct, tag="result", frozen=True):
    results: Annotated[list[ResultItem], Meta(max_length=1024)]


class Bye(Struct, tag="bye", frozen=True):
    reason: Annotated[str, Meta(max_length=1000, pattern=NO_NUL)] = ""
    code: Short = ""  # from the coordinator, BANNED: reconnecting cannot help


BANNED = "banned"


WorkerMessage = Hello | Ready | Hold | Result | Bye


# ---- coordinator -> worker ----------------------------------------------------------------


class Welcome(Struct, tag="welcome", frozen=True):
    worker_id: str
    secret: str
    max_inline: int
    max_message: int
    acks: bool = False  # this coordinator acknowledges results (Ack)
    # The most results one Result message may carry here; 0 (a coordinator that does not say):
    # twice the default max_leases.
    max_results: Annotated[int, Meta(ge=0)] = 0


class JobSpec(Struct, tag="job", frozen=True):
    """Sent once per job and connection, before that job's first lease. Workers cache it by
    ``key``, a digest of what the job computes: a job id names a row, and a cache keyed by it
    would run whatever job once held that id."""

    job: int
    kernel: str
    params: Params
    inputs: dict[str, BlobRef]
    key: str = ""


class LeaseItem(Struct, frozen=True):
    lease: int
    job: int
    unit: int
    index: int
    params: Params
    inputs: dict[str, BlobRef]
    deadline: float
    spec: str = ""  # the key of the JobSpec this unit runs under


class Lease(Struct, tag="lease", frozen=True):
    leases: list[LeaseItem]


class Cancel(Struct, tag="cancel", frozen=True):
    leases: list[int]
    reason: str = ""


class Ack(Struct, tag="ack", frozen=True):
    """These leases' results were dealt with and the outcome is durable (recorded, or refused
    or found a duplicate): the worker forgets them. Sent after the transaction that recorded
    them committed, once for every copy received; a result not acknowledged is sent again after
    a reconnect, to this coordinator or another one sharing its database."""

    leases: list[int]


class Idle(Struct, tag="idle", frozen=True):
    """No unit can be leased to this worker now, and why (shown to the person running it)."""

    reason: str


class Stats(Struct, tag="stats", frozen=True):
    """The worker's standing, sent after its results were validated."""

    results: int = 0
    valid: int = 0
    invalid: int = 0
    errors: int = 0
    pending: int = 0
    credit: float = 0.0


class Error(Struct, tag="error", frozen=True):
    code: str
    message: str


CoordinatorMessage = Welcome | JobSpec | Lease | Cancel | Ack | Idle | Stats | Error | Bye


# ---- HTTP API bodies ----------------------------------------------------------------------

# Ids as clients name them (see Id above); values that never reach a column (page sizes,
# capped first) are bounded at 64 bits.
RowId = Annotated[int, Meta(ge=1, le=INT32_MAX)]
Priority = Annotated[int, Meta(ge=-INT32_MAX - 1, le=INT32_MAX, description="higher runs first")]
Label = Annotated[str, Meta(max_length=200)]


class Policy(Struct, frozen=True, forbid_unknown_fields=True):
    """How a unit's result is accepted. ``quorum`` alone: that many agreeing results (BOINC's
    check_set). ``replication="adaptive"``: BOINC's adaptive replication on top of it (a worker
    with a long streak of confirmed results is sometimes trusted alone). ``error_rate``: the
    acceptable chance that an accepted result is wrong; a unit is accepted when its best group
    of agreeing results is credible enough (coordinator/credibility.py), and ``quorum`` is then
    not used. ``verifier``: whether a kernel's exact check may accept a single result."""

    quorum: Annotated[int, Meta(ge=1, le=16)] = 2
    max_replicas: Annotated[int, Meta(ge=1, le=64)] = 6
    deadline_s: Annotated[float, Meta(gt=0, le=7 * 86400)] = 300.0
    compare: Literal["exact", "allclose", "kernel"] = "exact"
    rtol: Annotated[float, Meta(ge=0)] = 1e-5
    atol: Annotated[float, Meta(ge=0)] = 1e-6
    priority: Priority = 0
    error_rate: Annotated[float, Meta(gt=0, le=0.5)] | None = None
    replication: Literal["fixed", "adaptive"] = "fixed"
    verifier: bool = True

    @property
    def first_replicas(self) -> int:
        """Replicas a unit asks for at first: credibility and adaptive replication start with
        one and ask for more only when it is not enough."""
        if self.error_rate is not None or self.replication == "adaptive":
            return 1
        return self.quorum


class UnitSpec(Struct, frozen=True, forbid_unknown_fields=True):
    params: Params = {}
    inputs: dict[str, BlobRef] = {}


class JobSubmit(Struct, frozen=True, forbid_unknown_fields=True):
    kernel: str
    units: list[UnitSpec]
    params: Params = {}
    inputs: dict[str, BlobRef] = {}
    policy: Policy = Policy()
    name: Label = ""
    idempotency_key: Label | None = None


JobState = Literal["running", "paused", "done", "failed", "cancelled"]
UnitState = Literal["pending", "running", "validating", "done", "failed", "cancelled"]


class UnitCounts(Struct):
    pending: int = 0
    running: int = 0
    validating: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0


class JobStatus(Struct):
    id: int
    name: str
    kernel: str
    owner: str
    state: JobState
    policy: Policy
    units: int
    counts: UnitCounts
    fraction_done: float
    created_at: float
    updated_at: float
    finished_at: float | None = None
    rate: float = 0.0
    eta_s: float | None = None
    # Set while the job cannot progress as things stand (no unit leased or returned for a
    # while, none in flight): why, and what would unblock it. Client.wait raises on it.
    stalled: str | None = None
    # The first failed unit's error (by index), when a unit failed: the console shows it.
    error: str | None = None


class JobList(Struct):
    jobs: list[JobStatus]


class UnitWorker(Struct):
    """One replica of a unit: the worker it went to and what became of it (leased, returned,
    valid = agreed with the accepted result, invalid = disagreed, error, released)."""

    worker: str
    state: str
    error: str | None = None
    elapsed_ms: float | None = None
    spot_check: bool = False  # a lease of the unit after it was accepted, to check the worker


class UnitInfo(Struct):
    index: int
    state: UnitState
    replicas: int
    results: int
    outputs: dict[str, Output] | None = None
    error: str | None = None
    waiting: str | None = None
    workers: list[UnitWorker] = []
    # How the result was accepted: "quorum", "credibility" (with its value), "verifier",
    # "adaptive" (BOINC's rule); and how often backtracking reopened the unit.
    accepted_by: str | None = None
    credibility: float | None = None
    revision: int = 0


class JobSummary(Struct):
    """What a job cost: wall time from submission, GPU time the workers reported, useful work
    (GFLOP of the validated units, once each) and credit granted (GFLOP per valid replica)."""

    id: int
    state: JobState
    units: int
    wall_s: float
    compute_s: float
    gflop: float
    credit: float
    replicas: int
    replicas_per_unit: float
    valid: int = 0
    invalid: int = 0
    errors: int = 0
    workers: int = 0


class UnitPage(Struct):
    units: list[UnitInfo]
    next_after: int | None = None


class UnitResultLine(Struct):
    """One line of the results stream (NDJSON): a validated unit's outputs, with their bytes
    when small (up to 2 KiB in all), else as blob references (GET /blobs/{digest}). ``revision``
    counts how often backtracking took its accepted result back (a saboteur was caught): a
    line read before with a lower revision has changed."""

    index: int
    outputs: dict[str, Output]
    revision: int = 0


class TokenCreate(Struct, frozen=True, forbid_unknown_fields=True):
    role: Literal["submitter", "operator"]
    name: Label = ""
    # Seconds from now until the token stops working; None: it works until revoked.
    expires_in_s: Annotated[float, Meta(ge=1, le=10 * 365 * 86400)] | None = None


class TokenCreated(Struct):
    id: int
    role: str
    name: str
    token: str
    expires_at: float | None = None


class BlobStored(Struct):
    digest: str
    size: int


class Health(Struct):
    status: str


class ServerLimits(Struct):
    """What one submission may be (GET /api/v1/limits): the SDK splits a larger job into
    several, or refuses it before uploading anything."""

    max_units: int  # units in one job
    max_body: int  # bytes of one request body: a job submission
    max_blob: int  # bytes of one blob


# ---- operator bodies (the console and scripts) ----------------------------------------------


class BanRequest(Struct, frozen=True, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(min_length=1, max_length=500)]


class NoBody(Struct, frozen=True, forbid_unknown_fields=True):
    """Actions that need nothing more than their URL accept an empty object."""


class PriorityRequest(Struct, frozen=True, forbid_unknown_fields=True):
    priority: Annotated[int, Meta(ge=-1000, le=1000)]


class WorkerAction(Struct):
    id: str
    action: str
    released: int = 0  # leases taken back (ban)
    discarded: int = 0  # unvalidated results that no longer count (ban)


class TokenInfo(Struct):
    id: int
    name: str
    role: str
    created_at: float
    revoked_at: float | None = None
    expires_at: float | None = None


class TokenList(Struct):
    tokens: list[TokenInfo]


class AuditLine(Struct):
    id: int
    at: float
    actor: str
    action: str
    target: str
    detail: str = ""


class AuditLog(Struct):
    entries: list[AuditLine]


class Problem(Struct, omit_defaults=True):
    """RFC 9457 problem document."""

    title: str
    status: int
    detail: str = ""
    type: str = "about:blank"
    errors: list[str] = field(default_factory=list)


worker_decoder = msgspec.json.Decoder(WorkerMessage)
coordinator_decoder = msgspec.json.Decoder(CoordinatorMessage)
encoder = msgspec.json.Encoder()


# ---- models and embeddings (issue 10) ---------------------------------------------------------

ModelName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="letters, digits, '.', '_' and '-'; matched without regard to case",
    ),
]
TensorName = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
MAX_TENSORS = 2000  # a 48-layer BERT has under 800
FileJson = Annotated[dict[str, Any], Meta(max_length=200)]  # one small JSON file of a model


class ModelImport(Struct, frozen=True, forbid_unknown_fields=True):
    """A sentence-transformers model directory as the coordinator checks it: its small JSON
    files as read, and its tokenizer.json and weight tensors as blobs uploaded first (float32,
    named as in model.safetensors)."""

    name: ModelName
    config: FileJson  # config.json
    modules: Annotated[list[FileJson], Meta(max_length=16)]  # modules.json
    pooling: FileJson  # 1_Pooling/config.json
    tokenizer: BlobRef  # tokenizer.json, uint8
    tensors: Annotated[dict[TensorName, BlobRef], Meta(max_length=MAX_TENSORS)]
    sentence_bert: FileJson = {}  # sentence_bert_config.json


class ModelInfo(Struct):
    name: str
    architecture: str
    dims: int  # the embedding's length (hidden_size)
    max_tokens: int  # longer texts are truncated (sentence-transformers' max_seq_length)
    layers: int
    tensors: int
    bytes: int  # of the weights and the tokenizer
    created_at: float


class ModelList(Struct):
    models: list[ModelInfo]


class ModelImported(Struct):
    model: ModelInfo
    created: bool  # False: the same model was registered under this name already
    ignored: list[str] = []  # tensors the encoder does not use (a pooler head), not stored


class EmbedRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """Texts to embed with a registered model; their bounds are the coordinator's settings."""

    model: Annotated[str, Meta(min_length=1, max_length=64)]
    texts: list[str]
    name: Label = ""
    # Any Policy field; unset ones default to quorum 2 and compare "kernel".
    policy: dict[str, Any] = {}


class EmbedJob(Struct):
    """An embedding job as created: the job, and what became of the texts."""

    job: JobStatus
    model: str
    texts: int
    truncated: int  # texts longer than max_tokens, cut to it as sentence-transformers does
    max_tokens: int
    tokens: int  # in all texts, after truncation


class EmbedLayout(Struct):
    """Where each text's embedding is: rows[i] lists the input positions of unit i's rows."""

    job: int
    model: str
    texts: int
    truncated: int
    dims: int
    rows: list[list[int]]


class EmbedAbout(Struct):
    """What an embedding job computes, for the volunteer whose worker holds one of its leases."""

    job: int
    model: str
    name: str
    owner: str
    texts: int
