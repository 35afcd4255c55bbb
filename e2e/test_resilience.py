"""The tab never breaks: a failing kernel, a lost GPU device, a second tab of one browser."""

from __future__ import annotations

import numpy as np
from playwright.sync_api import Browser

from saxpy import SAXPY, SAXPY_MANIFEST
from tabgrid.client.tiling import matmul_units
from volunteer import STARTED, Site, Volunteer, wait_until

# Keeps every Worker the page creates reachable from the test (the page holds its own in a
# closure); only in a context that bypasses the CSP, so the test may evaluate.
CAPTURE_WORKERS = (
    "(() => { const Base = window.Worker; window.__workers = [];"
    " window.Worker = class extends Base {"
    "   constructor(...args) { super(...args); window.__workers.push(this); } }; })()"
)


def _saxpy_job(site: Site, shader: str, n: int = 64) -> tuple[int, np.ndarray]:
    x = np.arange(n, dtype=np.float32)
    y = np.full(n, 0.5, dtype=np.float32)
    params = {"shader": shader, "manifest": SAXPY_MANIFEST, "a": 2.0}
    unit = {"params": {"n": n}, "inputs": {"x": x, "y": y}}
    with site.client() as client:
        job = client.submit("wgsl", [unit], params=params, policy={"max_replicas": 3})
    return job.id, 2.0 * x + y


def test_a_shader_that_fails_is_an_error_result_and_the_tabs_carry_on(
    site: Site, fleet: list[Volunteer]
) -> None:
    broken, _ = _saxpy_job(site, SAXPY.replace("p.a * x[i]", "p.a * x[i] +* oops"))
    with site.client() as client:
        assert client.wait(broken, progress=False, timeout=120).state == "failed"
        (unit,) = list(client.units(broken))
    # Failed fast: two tabs reporting the same compile error confirm it (issue 11), with the
    # compiler's message in the unit's error.
    assert "does not compile or validate" in unit.error and "oops" in unit.error, unit.error
    errors = site.query("SELECT worker_id, error FROM replicas WHERE job_id = ?", broken)
    errors = [(w, e) for w, e in errors if e]
    assert len({w for w, _ in errors}) >= 2 and all("shader" in e for _, e in errors), errors
    assert {w for w, _ in errors} <= {t.worker_id for t in fleet}

    good, expected = _saxpy_job(site, SAXPY)
    with site.client() as client:
        assert client.wait(good, progress=False, timeout=120).state == "done"
        (outputs,) = client.results(good).values()
    np.testing.assert_array_equal(outputs["out"], expected)
    assert all(t.state in STARTED for t in fleet)


def test_a_lost_gpu_device_is_replaced(browser: Browser, site: Site) -> None:
    context = browser.new_context(bypass_csp=True)
    context.add_init_script(CAPTURE_WORKERS)
    tab = Volunteer(context, site.url + "/", "device-loss").start()
    try:
        tab.page.evaluate("window.__workers[0].postMessage({type: 'lose-device'})")
        tab.page.locator("#log").filter(has_text="GPU device was lost").wait_for()
        rng = np.random.default_rng(3)
        a = rng.standard_normal((64, 32)).astype(np.float32)
        b = rng.standard_normal((32, 64)).astype(np.float32)
        units, assemble = matmul_units(a, b, 16)
        with site.client() as client:
            # Quorum 1 (Freivalds verifies each result), so every result of this tab counts.
            job = client.submit("matmul", units, policy={"quorum": 1}, name="e2e device loss")
            assert client.wait(job.id, progress=False, timeout=120).state == "done"
            product = assemble(client.results(job.id))
        np.testing.assert_allclose(product, a @ b, rtol=1e-4, atol=1e-4)
        mine = site.query(
            "SELECT state, error FROM replicas WHERE job_id = ? AND worker_id = ?",
            job.id,
            tab.worker_id,
        )
        assert ("valid", None) in mine, mine
        assert tab.state in STARTED
    finally:
        tab.close()


def test_a_second_tab_of_one_browser_stands_by_and_takes_over(browser: Browser, site: Site) -> None:
    context = browser.new_context()
    first = Volunteer(context, site.url + "/", "first").start()
    identity = first.worker_id
    second = Volunteer(context, site.url + "/", "second")  # consent is remembered: auto start
    try:
        second.wait_state("standby")
        assert second.page.workers == []
        first.page.close()
        second.wait_state(*STARTED)
        wait_until("the second tab's worker id", lambda: second.worker_id)
        assert second.worker_id == identity
    finally:
        context.close()
