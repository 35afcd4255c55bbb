"""What a request handler may reach: the coordinator's parts, built once by the app."""

from __future__ import annotations

from dataclasses import dataclass, field

from tabgrid.blobs import BlobStore
from tabgrid.coordinator.console_hub import ConsoleHub
from tabgrid.coordinator.embed_jobs import Tokenizers
from tabgrid.coordinator.scheduler import Scheduler
from tabgrid.coordinator.telemetry import Telemetry
from tabgrid.settings import Settings
from tabgrid.store import Store


@dataclass
class Services:
    """Everything a request handler may touch, reachable as request.app.state.services."""

    settings: Settings
    store: Store
    blobs: BlobStore
    scheduler: Scheduler
    telemetry: Telemetry
    hub: ConsoleHub
    tokenizers: Tokenizers = field(init=False)  # models' tokenizers, each parsed once

    def __post_init__(self) -> None:
        self.tokenizers = Tokenizers(self.blobs.read)
