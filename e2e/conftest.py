"""Session fixtures: one Chromium with WebGPU, one coordinator, three volunteer tabs.

Each tab loads Pyodide (seconds of CPU on SwiftShader), so the volunteers most tests use
are started once, together, and shared.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from volunteer import STARTED, Site, Volunteer, launch, wait_until


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = launch(playwright)
    yield b
    b.close()


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("coordinator"))
    s.coordinator.start()
    yield s
    s.coordinator.stop()
    if os.environ.get("TABGRID_SHOW_LOGS"):
        print(s.coordinator.log.read_text()[-5000:])


@pytest.fixture(scope="session")
def fleet(browser: Browser, site: Site) -> Iterator[list[Volunteer]]:
    """Three volunteers who pressed Start; started together, as their loads overlap."""
    tabs = [Volunteer(browser.new_context(), site.url + "/", f"tab{i}") for i in range(3)]
    for tab in tabs:
        tab.page.locator("#start").click()
    for tab in tabs:
        tab.wait_state(*STARTED, timeout=180)
        wait_until(f"{tab.name}'s worker id", lambda tab=tab: tab.worker_id)
    yield tabs
    for tab in tabs:
        tab.close()
