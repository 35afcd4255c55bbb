"""The database tables. JSON-shaped columns hold msgspec-encoded text, decoded by the store."""

from __future__ import annotations

from sqlalchemy import Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

# Ids travel to workers and clients (jobs, units, leases, tokens, entries): SQLite must never
# hand a deleted row's id to a new one, which it does for the newest row without AUTOINCREMENT.
NEVER_REUSED = {"sqlite_autoincrement": True}


class Token(SQLModel, table=True):
    __tablename__ = "tokens"
    __table_args__ = (NEVER_REUSED,)
    id: int | None = Field(default=None, primary_key=True)
    name: str = ""
    role: str
    hash: str = Field(unique=True)
    created_at: float
    revoked_at: float | None = None
    expires_at: float | None = None  # None: valid until revoked


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("owner_id", "idempotency_key"), NEVER_REUSED)
    id: int | None = Field(default=None, primary_key=True)
    owner_id: int | None = Field(default=None, foreign_key="tokens.id", index=True)
    name: str = ""
    kernel: str
    params: str  # JSON
    inputs: str  # JSON: name -> BlobRef
    policy: str  # JSON: protocol.Policy
    state: str = Field(index=True)
    priority: int = 0
    n_units: int
    open_units: int  # units neither done nor failed nor cancelled
    done_units: int = 0
    failed_units: int = 0
    idempotency_key: str | None = None
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None


class Unit(SQLModel, table=True):
    __tablename__ = "units"
    __table_args__ = (
        UniqueConstraint("job_id", "idx"),
        # The lease claim walks only units that still want replicas.
        Index(
            "units_leasable",
            "job_id",
            "id",
            sqlite_where=text("want > 0"),
            postgresql_where=text("want > 0"),
        ),
        Index("units_job_state", "job_id", "state"),
        NEVER_REUSED,
    )
    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="jobs.id")
    idx: int
    params: str  # JSON
    inputs: str  # JSON: name -> BlobRef
    state: str
    want: int  # replicas still to be issued
    issued: int = 0
    inflight: int = 0
    results: int = 0  # successful results returned
    canonical_id: int | None = None
    outputs: str | None = None  # JSON of the canonical outputs
    error: str | None = None
    updated_at: float
    accepted_by: str | None = None  # quorum | credibility | verifier | adaptive
    credibility: float | None = None  # of the accepted group, under error_rate
    revision: int = 0  # times backtracking reopened the unit


class Replica(SQLModel, table=True):
    """One lease of a unit to a worker, and what came back."""

    __tablename__ = "replicas"
    __table_args__ = (
        Index("replicas_unit", "unit_id"),
        Index("replicas_worker_state", "worker_id", "state"),
        # Only live leases have a deadline that matters; a partial index keeps the planner
        # from walking every replica by state.
        Index(
            "replicas_leased_deadline",
            "deadline",
            sqlite_where=text("state = 'leased'"),
            postgresql_where=text("state = 'leased'"),
        ),
        NEVER_REUSED,
    )
    id: int | None = Field(default=None, primary_key=True)
    unit_id: int = Field(foreign_key="units.id")
    job_id: int
    worker_id: str
    client_addr: str
    # leased -> returned -> valid | invalid;  leased -> error | released (then maybe returned late)
    state: str
    deadline: float
    created_at: float
    returned_at: float | None = None
    outputs: str | None = None  # JSON: name -> Output (without inline data)
    error: str | None = None
    elapsed_ms: float | None = None
    spot_check: bool = False  # a lease of a unit whose answer is known
    # The coordinator process that leased it (Coordinator.id): its leases go when it does.
    coordinator: str | None = None


class Coordinator(SQLModel, table=True):
    """A coordinator process sharing the database, alive while it renews ``seen_at``."""

    __tablename__ = "coordinators"
    id: str = Field(primary_key=True)
    host: str = ""
    pid: int = 0
    started_at: float
    seen_at: float


class Worker(SQLModel, table=True):
    __tablename__ = "workers"
    id: str = Field(primary_key=True)
    secret_hash: str
    kind: str
    name: str = ""
    adapter: str = "{}"  # JSON
    client_addr: str = ""
    created_at: float
    last_seen: float
    results: int = 0
    valid: int = 0
    invalid: int = 0
    errors: int = 0
    consecutive_valid: int = 0  # results another worker confirmed, since the last failure
    checks_passed: int = 0  # spot-checks
    checks_failed: int = 0
    credit: float = 0.0
    banned: bool = False
    ban_reason: str | None = None
    draining: bool = False  # finishes its leases, gets no more


class Blob(SQLModel, table=True):
    """Every stored blob. Small outputs keep their bytes here (`data`), in the transaction that
    validates them: creating a file costs far more than a row. The rest live in files."""

    __tablename__ = "blobs"
    digest: str = Field(primary_key=True)
    size: int
    created_at: float
    data: bytes | None = None


class BlobBody(SQLModel, table=True):
    """A blob kept in the database (``--blobs db``, store/blob_parts.py): its size and number
    of parts. Written in the transaction that writes its parts, so it exists only whole."""

    __tablename__ = "blob_bodies"
    digest: str = Field(primary_key=True)
    size: int
    parts: int
    stored_at: float


class BlobPart(SQLModel, table=True):
    """One piece of a blob kept in the database, a few MiB, so that no statement moves a
    whole blob of up to max_blob bytes."""

    __tablename__ = "blob_parts"
    digest: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    data: bytes


class BlobUse(SQLModel, table=True):
    """Which jobs use a blob, so retiring a job frees exactly the blobs nothing else uses."""

    __tablename__ = "blob_refs"
    digest: str = Field(primary_key=True)
    job_id: int = Field(primary_key=True, index=True)


class BlobUpload(SQLModel, table=True):
    """An upload's claim on its blob: it keeps the blob until it expires or a job of its
    owner uses it (store/uploads.py). One row per blob and owner ("token:<id>", "worker:<id>");
    uploading again renews it."""

    __tablename__ = "blob_uploads"
    __table_args__ = (Index("blob_uploads_owner", "owner"),)
    digest: str = Field(primary_key=True)
    owner: str = Field(primary_key=True)
    size: int
    created_at: float
    expires_at: float = Field(index=True)


class AuditEntry(SQLModel, table=True):
    """An operator's action: who, when, on what, and why."""

    __tablename__ = "audit_log"
    __table_args__ = (NEVER_REUSED,)
    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)
    actor_id: int | None = None  # the token
    actor: str  # its name when the action was taken
    action: str
    target: str
    detail: str = ""


class Disagreement(SQLModel, table=True):
    """Results of one unit that did not agree, and how they differed (the console's feed)."""

    __tablename__ = "disagreements"
    __table_args__ = (NEVER_REUSED,)
    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)
    job_id: int = Field(index=True)
    unit_id: int
    idx: int
    kernel: str
    summary: str
    replicas: str  # JSON: [{replica, worker, state, digest}]


__all__ = [
    "AuditEntry",
    "Blob",
    "BlobBody",
    "BlobPart",
    "BlobUpload",
    "BlobUse",
    "Disagreement",
    "Job",
    "Replica",
    "Token",
    "Unit",
    "Worker",
]


class Model(SQLModel, table=True):
    """A registered model (store/models.py): the config its kernel needs and one blob per
    weight tensor. Its blobs are held by claims of owner ``model:<key>`` that never expire."""

    __tablename__ = "models"
    __table_args__ = (NEVER_REUSED,)
    id: int | None = Field(default=None, primary_key=True)
    name: str
    key: str = Field(unique=True)  # the name in lower case: names are matched without case
    architecture: str
    config: str  # JSON: what the kernel needs (hidden_size, layers, max_seq_length, ...)
    tokenizer: str  # JSON: BlobRef of tokenizer.json
    tensors: str  # JSON: name -> BlobRef
    lowercase: bool = False  # texts are lowered before tokenizing (do_lower_case)
    total_bytes: int
    fingerprint: str  # sha256 over config, tokenizer and tensors: a re-import is recognised
    created_at: float


class EmbeddingJob(SQLModel, table=True):
    """What an embedding job was made from, beside its job row."""

    __tablename__ = "embedding_jobs"
    job_id: int = Field(primary_key=True)
    model: str
    texts: int
    truncated: int


__all__ += ["EmbeddingJob", "Model"]
