"""Drives the contribute page in Chromium against a coordinator process, and reads its database.

Every volunteer is its own browser context, so each has its own storage and identity:
several volunteers, not several tabs of one browser.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright

from integration.harness import Coordinator
from tabgrid.client.sdk import Client
from tabgrid.store import issue_token

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "e2e" / "artifacts"
CHROMIUM = os.environ.get("TABGRID_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium reaches for Google's hosts at start.
BASE_FLAGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WEBGPU_FLAGS = [
    "--enable-unsafe-webgpu",
    "--enable-features=Vulkan",
    "--use-vulkan=swiftshader",
    "--use-webgpu-adapter=swiftshader",
    "--enable-unsafe-swiftshader",
]
STARTED = ("waiting", "running")


def launch(playwright: Playwright, *, webgpu: bool = True) -> Browser:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: ./dev test installs Debian's chromium package")
    flags = BASE_FLAGS + (WEBGPU_FLAGS if webgpu else [])
    return playwright.chromium.launch(executable_path=CHROMIUM, args=flags)


class Site:
    """The coordinator under test, its database (read directly) and a submitter's client."""

    def __init__(self, data: Path) -> None:
        self.db_path = data / "tabgrid.db"
        db = f"sqlite:///{self.db_path}"
        self.coordinator = Coordinator(db, data, "--allow-same-address")
        self.token = issue_token(db, "submitter", "e2e")
        self.operator_token = issue_token(db, "operator", "ops")

    @property
    def url(self) -> str:
        return self.coordinator.url

    def client(self) -> Client:
        return Client(self.url, self.token)

    def query(self, sql: str, *args: object) -> list[tuple]:
        with closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as conn:
            return conn.execute(sql, args).fetchall()

    def leases(self, worker_id: str, job: int | None = None) -> int:
        """Replicas ever leased to the worker (of one job, if given)."""
        sql = "SELECT count(*) FROM replicas WHERE worker_id = ?"
        if job is None:
            return self.query(sql, worker_id)[0][0]
        return self.query(sql + " AND job_id = ?", worker_id, job)[0][0]

    def busy_ms(self, worker_id: str, since: float, until: float) -> float:
        """Kernel milliseconds the worker reported for results returned in [since, until]."""
        rows = self.query(
            "SELECT coalesce(sum(elapsed_ms), 0) FROM replicas "
            "WHERE worker_id = ? AND returned_at BETWEEN ? AND ?",
            worker_id,
            since,
            until,
        )
        return float(rows[0][0])


def wait_until[T](what: str, probe: Callable[[], T], timeout: float = 60, every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class Volunteer:
    """One browser context with the contribute page open: one person's browser."""

    def __init__(self, context: BrowserContext, url: str, name: str) -> None:
        self.context = context
        self.name = name
        self.url = url
        self.page: Page = context.new_page()
        self.websockets: list[str] = []
        self.requests: list[str] = []
        self.log: list[str] = []
        context.on("request", lambda r: self.requests.append(r.url))
        self._watch(self.page)
        self.page.goto(url)

    def _watch(self, page: Page) -> None:
        page.on("websocket", lambda ws: self.websockets.append(ws.url))
        page.on("pageerror", lambda e: self.log.append(f"pageerror: {e}"))
        page.on("console", lambda m: self.log.append(f"{m.type}: {m.text}"))

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text()

    @property
    def state(self) -> str:
        return self.text("#state").strip()

    @property
    def worker_id(self) -> str:
        return self.page.locator("#worker-id").get_attribute("data-id") or ""

    def wait_state(self, *states: str, timeout: float = 90) -> str:
        return wait_until(
            f"{self.name} to reach {states} (now {self.state!r}; log: {self.log[-5:]})",
            lambda: self.state if self.state in states else "",
            timeout,
        )

    def start(self) -> Volunteer:
        self.page.locator("#start").click()
        self.wait_state(*STARTED)
        wait_until(f"{self.name}'s worker id", lambda: self.worker_id)
        return self

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()
