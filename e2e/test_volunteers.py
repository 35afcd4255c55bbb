"""Volunteer tabs computing real jobs, and each control the contribute page offers.

The tests share the session's fleet of three tabs; the one that closes a tab runs last.
"""

from __future__ import annotations

import time

import numpy as np
from playwright.sync_api import Browser

from tabgrid.client.tiling import assemble_mandelbrot, mandelbrot_units, matmul_units
from tabgrid.kernels import mandelbrot
from volunteer import STARTED, Site, Volunteer, wait_until

KERNEL_COMPARE = {"compare": "kernel"}


INSIDE = (-0.3, -0.2, 0.1, 0.2)  # every pixel runs all max_iter iterations: a known cost
EDGE = (-0.8, 0.05, -0.7, 0.15)  # the set's boundary: a picture worth looking at


def _mandelbrot_job(
    site: Site, count: int, max_iter: int, name: str, side: int = 32, region=INSIDE
) -> int:
    """A strip of ``count`` square tiles across ``region``."""
    units = mandelbrot_units(*region, side * count, side, side, max_iter)
    with site.client() as client:
        return client.submit("mandelbrot", units, policy=KERNEL_COMPARE, name=name).id


def _cancel(site: Site, job: int) -> None:
    with site.client() as client:
        client.cancel(job)


def test_three_tabs_validate_matmul_and_mandelbrot(
    browser: Browser, site: Site, fleet: list[Volunteer]
) -> None:
    bystander = Volunteer(browser.new_context(), site.url + "/", "bystander")
    bystander.page.locator("#gpu").filter(has_text="swiftshader").wait_for()
    bystander.screenshot("contribute-before-start")

    rng = np.random.default_rng(7)
    a = rng.standard_normal((96, 80)).astype(np.float32)
    b = rng.standard_normal((80, 64)).astype(np.float32)
    units, assemble = matmul_units(a, b, 32)
    region = (-2.0, -1.25, 0.5, 1.25)
    tiles = mandelbrot_units(*region, 64, 64, 32, 200)
    with site.client() as client:
        # One heavy unit (seconds on SwiftShader), so a tab is caught computing it.
        heavy = mandelbrot_units(*region, 256, 256, 256, 4000)
        client.submit("mandelbrot", heavy, policy=KERNEL_COMPARE, name="e2e screenshot")
        busy = wait_until(
            "a tab computing",
            lambda: next((t for t in fleet if t.state == "running"), None),
            60,
            0.02,
        )
        busy.screenshot("contribute-computing")
        mm = client.submit("matmul", units, policy={"compare": "allclose"}, name="e2e matmul")
        mb = client.submit("mandelbrot", tiles, policy=KERNEL_COMPARE, name="e2e mandelbrot")
        assert client.wait(mm.id, progress=False, timeout=180).state == "done"
        assert client.wait(mb.id, progress=False, timeout=180).state == "done"
        product = assemble(client.results(mm.id))
        image = assemble_mandelbrot(client.results(mb.id), 64, 64, 32)

    expected = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(product, expected, rtol=1e-4, atol=1e-4)
    reference = mandelbrot.reference(
        dict(zip(("x0", "y0", "x1", "y1"), region, strict=True))
        | {"width": 64, "height": 64, "max_iter": 200},
        {},
    )["iters"]
    assert mandelbrot.compare({"iters": image}, {"iters": reference})

    tabs = {t.worker_id for t in fleet}
    for job in (mm.id, mb.id):
        rows = site.query(
            "SELECT unit_id, worker_id FROM replicas WHERE job_id = ? AND state = 'valid'", job
        )
        by_unit: dict[int, set[str]] = {}
        for unit, worker in rows:
            by_unit.setdefault(unit, set()).add(worker)
        assert len(by_unit) == (len(units) if job == mm.id else len(tiles))
        for unit, workers in by_unit.items():
            assert len(workers) >= 2, f"unit {unit} validated by {workers}"
            assert workers <= tabs, f"unit {unit} validated by {workers - tabs}, not a tab"

    # The tab whose visitor never pressed Start made no worker and no connection, and every
    # lease of these jobs went to a tab that did.
    assert bystander.page.workers == [] and bystander.websockets == []
    assert bystander.state not in STARTED
    leased_to = {
        w
        for (w,) in site.query(
            "SELECT DISTINCT worker_id FROM replicas WHERE job_id IN (?, ?)", mm.id, mb.id
        )
    }
    assert leased_to <= tabs

    # Nothing but the coordinator's own origin was asked for: Pyodide, the wheel, the blobs.
    for tab in [*fleet, bystander]:
        foreign = [u for u in tab.requests if not u.startswith((site.url + "/", "data:"))]
        assert not foreign, f"{tab.name} requested {foreign[:5]}"
    assert any("pyodide.asm.wasm" in u for u in fleet[0].requests)
    bystander.close()


def test_pause_stops_leasing_within_one_unit(site: Site, fleet: list[Volunteer]) -> None:
    tab = fleet[0]
    job = _mandelbrot_job(site, 400, 400, "e2e pause", region=EDGE)
    try:
        wait_until("the tab to lease units", lambda: site.leases(tab.worker_id, job) >= 3)
        tab.page.locator("#pause").click()
        tab.wait_state("paused")
        at_pause = site.leases(tab.worker_id, job)
        tab.screenshot("contribute-paused")
        others_before = sum(site.leases(t.worker_id, job) for t in fleet[1:])
        time.sleep(4)
        assert site.leases(tab.worker_id, job) <= at_pause + 1
        # The others kept leasing, so the quiet is the pause's doing, not an empty queue.
        assert sum(site.leases(t.worker_id, job) for t in fleet[1:]) > others_before + 4

        tab.page.locator("#resume").click()
        wait_until("leasing again", lambda: site.leases(tab.worker_id, job) > at_pause + 2)
    finally:
        _cancel(site, job)


def _busy_fraction(site: Site, tab: Volunteer, seconds: float) -> float:
    since = time.time()
    time.sleep(seconds)
    return site.busy_ms(tab.worker_id, since, time.time()) / 1000 / seconds


def test_usage_cap_lowers_busy_fraction(site: Site, fleet: list[Volunteer]) -> None:
    tab = fleet[1]
    job = _mandelbrot_job(site, 600, 1500, "e2e cap")
    try:
        wait_until("the tab to lease units", lambda: site.leases(tab.worker_id, job) >= 2)
        full = _busy_fraction(site, tab, 6)
        tab.page.locator("#cap").fill("30")
        time.sleep(1)  # the unit in progress finishes under the old cap
        capped = _busy_fraction(site, tab, 8)
        assert full > 0.3, f"uncapped busy fraction {full:.2f}: units too small to measure"
        assert capped < 0.38 and capped < full * 0.7, f"cap 30%: {capped:.2f} vs {full:.2f}"
    finally:
        tab.page.locator("#cap").fill("100")
        _cancel(site, job)


def test_reload_keeps_the_worker_id(site: Site, fleet: list[Volunteer]) -> None:
    tab = fleet[2]
    before = tab.worker_id
    workers = site.query("SELECT count(*) FROM workers")[0][0]
    tab.page.reload()
    # Consent is remembered, so the page starts again by itself.
    tab.wait_state(*STARTED)
    wait_until("the worker id after reload", lambda: tab.worker_id)
    assert tab.worker_id == before
    assert site.query("SELECT count(*) FROM workers")[0][0] == workers


def test_hidden_tab_pauses(browser: Browser, site: Site) -> None:
    # Headless Chromium never hides a page, so this tab's visibility is driven by the test:
    # the page sees document.hidden and the visibilitychange event a hidden tab gets.
    context = browser.new_context(bypass_csp=True)
    context.add_init_script(
        "(() => { let hidden = false;"
        " Object.defineProperty(Document.prototype, 'hidden', { get: () => hidden });"
        " Object.defineProperty(Document.prototype, 'visibilityState',"
        "   { get: () => hidden ? 'hidden' : 'visible' });"
        " window.__setHidden = (h) => { hidden = h;"
        "   document.dispatchEvent(new Event('visibilitychange')); }; })()"
    )
    tab = Volunteer(context, site.url + "/", "hidden-tab").start()
    job = _mandelbrot_job(site, 300, 400, "e2e hidden")
    try:
        wait_until("the tab to lease units", lambda: site.leases(tab.worker_id, job) >= 2)
        tab.page.evaluate("window.__setHidden(true)")
        tab.wait_state("paused")
        at_hide = site.leases(tab.worker_id, job)
        time.sleep(3)
        assert site.leases(tab.worker_id, job) <= at_hide + 1
        tab.page.evaluate("window.__setHidden(false)")
        wait_until("leasing again", lambda: site.leases(tab.worker_id, job) > at_hide + 2)

        # With the option off, hiding the tab changes nothing.
        tab.page.locator("#pause-hidden").uncheck()
        tab.page.evaluate("window.__setHidden(true)")
        seen = site.leases(tab.worker_id, job)
        wait_until("leasing while hidden", lambda: site.leases(tab.worker_id, job) > seen + 2)
        assert tab.state != "paused"
    finally:
        _cancel(site, job)
        tab.close()


def test_closed_tab_lease_goes_to_another_tab(site: Site, fleet: list[Volunteer]) -> None:
    # Units of about two seconds each on SwiftShader, so the tab is caught mid-unit even when
    # closing it takes a while on a loaded machine.
    job = _mandelbrot_job(site, 6, 40000, "e2e close", side=48)
    leaving = fleet[0]
    gone = leaving.worker_id
    wait_until(
        "a unit leased to the closing tab",
        lambda: site.query(
            "SELECT unit_id FROM replicas WHERE job_id = ? AND worker_id = ? AND state = 'leased'",
            job,
            gone,
        ),
        every=0.02,
    )
    leaving.close()
    fleet.remove(leaving)
    with site.client() as client:
        assert client.wait(job, progress=False, timeout=240).state == "done"
    released = site.query(
        "SELECT unit_id FROM replicas WHERE job_id = ? AND worker_id = ? AND state = 'released'",
        job,
        gone,
    )
    assert released, "the closed tab's lease was not released"
    for (unit,) in released:
        valid = site.query(
            "SELECT worker_id FROM replicas WHERE unit_id = ? AND state = 'valid'", unit
        )
        assert len(valid) >= 2 and gone not in {w for (w,) in valid}
