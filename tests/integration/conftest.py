from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.harness import Coordinator, WorkerProcess
from tabgrid.client.sdk import Client
from tabgrid.store import issue_token, upgrade


class Cluster:
    """A coordinator process plus the workers a test starts; everything stopped at the end."""

    def __init__(self, db: str, data: Path) -> None:
        self.db, self.data = db, data
        self.coordinator = Coordinator(db, data, "--allow-same-address")
        self.workers: list[WorkerProcess] = []
        upgrade(db)  # a coordinator on PostgreSQL starts only on the newest schema revision
        self.token = issue_token(db, "submitter", "tests")

    @property
    def url(self) -> str:
        return self.coordinator.url

    def client(self) -> Client:
        return Client(self.url, self.token)

    def worker(self, concurrency: int = 2) -> WorkerProcess:
        n = len(self.workers)
        w = WorkerProcess(self.url, self.data / f"worker{n}.log", concurrency=concurrency)
        self.workers.append(w)
        return w

    def rogue(self, kind: str, *args: str) -> WorkerProcess:
        n = len(self.workers)
        w = WorkerProcess.module(
            "integration.rogue", [kind, self.url, *args], self.data / f"{kind}{n}.log"
        )
        self.workers.append(w)
        return w

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.coordinator.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(f"sqlite:///{tmp_path / 'tabgrid.db'}", tmp_path)
    c.coordinator.start()
    try:
        yield c
    finally:
        c.stop()
        if os.environ.get("TABGRID_SHOW_LOGS"):
            for log in tmp_path.glob("*.log"):
                print(log.name, log.read_text()[-3000:])
