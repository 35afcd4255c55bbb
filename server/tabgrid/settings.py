"""Coordinator settings: every bound the server enforces is one of these, with a sane default."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class Limits:
    max_message: int = 4 * MiB  # one websocket frame
    max_body: int = 64 * MiB  # one HTTP request body (job submission)
    max_blob: int = 256 * MiB
    max_inline: int = 64 * KiB  # outputs at most this size may travel inside a result message
    max_units: int = 200_000  # units in one job
    max_leases: int = 64  # outstanding leases per worker
    max_bad_messages: int = 5  # malformed messages before the socket is closed
    hello_timeout_s: float = 10.0  # a connection that says no hello by then is closed
    max_page: int = 1000  # units per page
    # Uploads no job uses yet (see store/uploads.py): per token, and per worker on top of the
    # bound its held leases declare.
    upload_quota_bytes: int = 4 * GiB
    upload_quota_blobs: int = 10_000
    worker_upload_quota_bytes: int = 1 * GiB
    worker_upload_quota_blobs: int = 256
    # Embedding jobs (POST /api/v1/embeddings): texts per job and characters per text; texts
    # of similar length form a unit of at most embed_unit_texts texts and embed_unit_tokens
    # tokens (padded), which bounds a unit's activations on a volunteer's GPU.
    max_embed_texts: int = 10_000
    max_text_chars: int = 20_000
    embed_unit_texts: int = 32
    embed_unit_tokens: int = 4096

    @property
    def max_results(self) -> int:
        """Results one Result message may carry: a worker's leases, and as many again that it
        kept unacknowledged from before a reconnect."""
        return 2 * self.max_leases


BLOB_STORES = ("files", "db")
MAX_SWEEP_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class Settings:
    db: str = "sqlite:///tabgrid-data/tabgrid.db"
    data_dir: Path = Path("tabgrid-data")
    host: str = "127.0.0.1"
    port: int = 8000
    # Two replicas of a unit never go to one worker; by default not to one client address either.
    # On one machine every tab shares an address, so local demos turn this off.
    distinct_addresses: bool = True
    sweep_interval_s: float = 1.0
    restart_grace_s: float = 10.0  # leases left by a killed coordinator wait this long
    # A coordinator sharing the database that renewed its row no later than this ago is alive;
    # after that the others release its leases (it renews every sweep_interval_s).
    coordinator_ttl_s: float = 10.0
    # A worker record that never held a lease is forgotten this long after its last hello.
    unused_worker_ttl_s: float = 3600.0
    # An upload no job uses is deleted this long after it was made: a token's, and a worker's
    # whose result never came. The blob sweeper looks every blob_sweep_interval_s.
    upload_ttl_s: float = 3600.0
    worker_upload_ttl_s: float = 600.0
    blob_sweep_interval_s: float = 30.0
    batch_window_s: float = 0.001
    # Credibility-based acceptance (coordinator/credibility.py): the assumed upper bound on the
    # fraction of saboteurs; spot-check rates for new and for trusted workers; the fraction of
    # units a trusted worker could settle alone that are replicated anyway; how many workers of
    # one client address count in one group of agreeing results (0: every one).
    trust_saboteur_bound: float = 0.2
    trust_check_rate_new: float = 0.3
    trust_check_rate_min: float = 0.02
    trust_resample_rate: float = 0.03
    trust_per_address: int = 1
    console_interval_s: float = 1.0  # the console hub's tick: its queries and its stream
    # Where blob bytes live: "files" under data_dir (one host), or "db", in the database, so
    # that coordinators on several hosts sharing it read each other's uploads.
    blobs: str = "files"
    # Proxies (addresses or networks) whose X-Forwarded-For names the client; empty: the
    # connection's own address is the client's, whatever the headers say.
    trust_proxy: tuple[str, ...] = ()
    web_dir: Path | None = None  # the built contribute page; None: web/dist of this source tree
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.blobs not in BLOB_STORES:
            raise ValueError(
                f"blobs must be one of {', '.join(BLOB_STORES)}, not {self.blobs!r}: "
                "files under the data directory (one host) or db (several hosts)"
            )
        if self.blobs == "db" and not self.db.startswith(("postgresql", "postgres")):
            raise ValueError(
                "blobs in the database (db) are for coordinators sharing a PostgreSQL "
                "database; with SQLite (one host) keep them as files"
            )
        for proxy in self.trust_proxy:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted proxy {proxy!r} is not an IP address or network "
                    "(such as 127.0.0.1, 10.0.0.0/8 or ::1)"
                ) from None
        if not 0 < self.sweep_interval_s <= MAX_SWEEP_INTERVAL_S:
            raise ValueError(
                f"the sweep interval must be above 0 and at most {MAX_SWEEP_INTERVAL_S:g} s, "
                f"not {self.sweep_interval_s:g}"
            )

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'tabgrid.db'}"


def from_env(**overrides: object) -> Settings:
    """Settings from TABGRID_* environment variables, then explicit overrides."""
    data_dir = Path(os.environ.get("TABGRID_DATA", "tabgrid-data"))
    env: dict[str, object] = {
        "db": os.environ.get("TABGRID_DB", sqlite_url(data_dir)),
        "data_dir": data_dir,
        "blobs": os.environ.get("TABGRID_BLOBS", "files"),
        "trust_proxy": proxies(os.environ.get("TABGRID_TRUST_PROXY", "")),
    }
    # Checked once, whole: a variable may need a flag (TABGRID_BLOBS=db with --db).
    return Settings(**(env | overrides))  # type: ignore[arg-type]


def proxies(text: str) -> tuple[str, ...]:
    """A comma-separated list of proxy addresses or networks, as the flag and variable take it."""
    return tuple(p.strip() for p in text.split(",") if p.strip())
