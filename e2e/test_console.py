"""The operator console in Chromium, against the live coordinator and the volunteer tabs."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from integration.harness import WorkerProcess
from volunteer import ARTIFACTS, STARTED, Site, Volunteer, wait_until

SABOTEUR_LOG = "saboteur.log"


def _row(page: Page, kind: str, key: object):  # type: ignore[no-untyped-def]
    return page.locator(f'#{kind}s tr[data-{kind}="{key}"]')


@pytest.fixture(scope="module")
def console(browser: Browser, site: Site) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.goto(site.url + "/console")
    page.locator("#login-token").fill(site.operator_token)
    page.locator("#login-submit").click()
    expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=20_000)
    yield page
    context.close()


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_sign_in_needs_an_operator_token(browser: Browser, site: Site) -> None:
    page = browser.new_context().new_page()
    page.goto(site.url + "/console")
    page.locator("#login-token").fill("not-a-token")
    page.locator("#login-submit").click()
    expect(page.locator("#login-error")).to_contain_text("unknown or revoked")
    page.locator("#login-token").fill(site.token)  # a submitter's
    page.locator("#login-submit").click()
    expect(page.locator("#login-error")).to_contain_text("operator token")
    page.context.close()


def test_a_running_job_moves_and_the_tabs_are_listed(
    console: Page, site: Site, fleet: list[Volunteer]
) -> None:
    from tabgrid.client.tiling import mandelbrot_units

    tiles = mandelbrot_units(-2.0, -1.25, 0.5, 1.25, 256, 192, 32, 300)
    with site.client() as client:
        job = client.submit("mandelbrot", tiles, policy={"compare": "kernel"}, name="console").id
    row = _row(console, "job", job)
    expect(row).to_be_visible()
    done = row.locator(".done-count")
    seen: set[str] = set()

    def moved() -> bool:
        seen.add(done.inner_text())
        return len(seen) >= 3

    # Three tabs first load Pyodide, then render tiles on software WebGPU: on a loaded 2-core
    # machine that alone has taken most of two minutes.
    try:
        wait_until("the job's progress to move", moved, timeout=180)
    except AssertionError as e:
        with site.client() as client:
            state = client.job(job)
        raise AssertionError(f"{e}: the console showed {sorted(seen)}; {state}") from e
    for tab in fleet:
        expect(_row(console, "worker", tab.worker_id)).to_be_visible()
    row.click()  # shows the job's picture assembling
    expect(console.locator("#picture")).to_be_visible()
    _shot(console, "console-job-running")
    with site.client() as client:
        assert client.wait(job, progress=False, timeout=180).state == "done"
    expect(row).to_contain_text("done")


def test_a_tab_appears_and_disappears(console: Page, browser: Browser, site: Site) -> None:
    tab = Volunteer(browser.new_context(), site.url + "/", "passer-by").start()
    row = _row(console, "worker", tab.worker_id)
    expect(row).to_be_visible(timeout=15_000)
    expect(row.locator("td.state")).to_have_text(re.compile("^(active|paused)$"), timeout=15_000)
    tab.close()
    expect(row.locator("td.state")).to_have_text("offline", timeout=15_000)


def test_banning_a_saboteur_stops_its_results_counting(
    console: Page, site: Site, fleet: list[Volunteer], tmp_path_factory: pytest.TempPathFactory
) -> None:
    log = tmp_path_factory.mktemp("saboteur") / SABOTEUR_LOG
    saboteur = WorkerProcess.module("integration.rogue", ["saboteur", site.url], log)
    try:
        units = [{"params": {"i": i}} for i in range(400)]
        with site.client() as client:
            job = client.submit("checksum", units, name="with a saboteur").id
        feed = console.locator("#disagreements li")
        expect(feed.first).to_be_visible(timeout=60_000)
        rogue = wait_until(
            "the saboteur's worker id",
            lambda: site.query("SELECT id FROM workers WHERE name = 'saboteur'"),
        )[0][0]
        _shot(console, "console-disagreement")

        row = _row(console, "worker", rogue)
        row.locator('button[data-action="ban"]').click()
        console.locator("#ban-reason").fill("returns wrong checksums")
        console.locator("#ban-confirm").click()
        expect(row.locator("td.state")).to_have_text("banned", timeout=15_000)
        banned_at = time.time()
        with site.client() as client:
            assert client.wait(job, progress=False, timeout=240).state == "done"
        later = site.query(
            "SELECT count(*) FROM replicas WHERE worker_id = ? AND created_at > ?",
            rogue,
            banned_at,
        )[0][0]
        assert later == 0, "the banned worker got leases"
        counted = site.query(
            "SELECT count(*) FROM replicas WHERE worker_id = ? AND state IN ('valid', 'returned')",
            rogue,
        )[0][0]
        assert counted == 0, "a saboteur result counts"
        tabs = {t.worker_id for t in fleet}
        valid_by = {w for (w,) in site.query(
            "SELECT DISTINCT worker_id FROM replicas WHERE job_id = ? AND state = 'valid'", job
        )}  # fmt: skip
        assert valid_by <= tabs
        entries = console.locator("#audit li")
        expect(entries.first).to_contain_text("ban")
    finally:
        saboteur.stop()


def test_pause_and_resume_a_job(console: Page, site: Site, fleet: list[Volunteer]) -> None:
    units = [{"params": {"i": i}} for i in range(600)]
    with site.client() as client:
        job = client.submit("checksum", units, name="pausable").id
    row = _row(console, "job", job)
    expect(row).to_be_visible()
    wait_until("units leased", lambda: site.query(
        "SELECT count(*) FROM replicas WHERE job_id = ?", job)[0][0] > 10)  # fmt: skip
    row.locator('button[data-action="pause"]').click()
    expect(row).to_contain_text("paused", timeout=10_000)
    time.sleep(1.5)  # leases already out come back
    before = site.query("SELECT count(*) FROM replicas WHERE job_id = ?", job)[0][0]
    time.sleep(3)
    assert site.query("SELECT count(*) FROM replicas WHERE job_id = ?", job)[0][0] == before
    row.locator('button[data-action="resume"]').click()
    expect(row).to_contain_text("running", timeout=10_000)
    with site.client() as client:
        assert client.wait(job, progress=False, timeout=240).state == "done"
    assert all(t.state in STARTED for t in fleet)
