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


# SAXPY that first spins `k` times, so that a unit takes seconds on SwiftShader: long enough to
# stop the coordinator while a tab computes it. The spin cannot be optimised away (its result
# decides a term that is 0 unless the spin lands on one value of 2^32).
SPIN = 6_000_000  # about 3 s a unit on SwiftShader here (2,000,000 took 0.9-1.0 s)
SLOW_SAXPY = SAXPY.replace("    a: f32,\n", "    a: f32,\n    k: u32,\n").replace(
    "        out[i] = p.a * x[i] + y[i];",
    "        var s = i;\n"
    "        for (var j = 0u; j < p.k; j++) { s = s * 1664525u + 1013904223u; }\n"
    "        out[i] = p.a * x[i] + y[i] + select(0.0, 1.0, s == 0x2545f491u);",
)
SLOW_MANIFEST = SAXPY_MANIFEST | {
    "bindings": [
        *SAXPY_MANIFEST["bindings"][:3],
        {
            "binding": 3,
            "uniform": [
                {"name": "a", "type": "f32"},
                {"name": "k", "type": "u32"},
                {"name": "n", "type": "u32"},
            ],
        },
    ]
}


def test_results_a_killed_coordinator_never_recorded_are_sent_again_and_count_once(
    site: Site, fleet: list[Volunteer]
) -> None:
    """Two tabs compute while their coordinator is stopped, so their results reach a process
    that never records them; it is killed and started again, the tabs reconnect and send them
    again, and each counts once: no unit computed twice, none lost."""
    tabs, idle = fleet[:2], fleet[2]
    idle.page.locator("#pause").click()  # the units go to these two tabs alone
    idle.wait_state("paused")
    try:
        n, units = 64, 1  # a tab holds one lease at a time
        x = np.arange(n, dtype=np.float32)
        y = np.full(n, 0.25, dtype=np.float32)
        params = {"shader": SLOW_SAXPY, "manifest": SLOW_MANIFEST, "a": 3.0, "k": SPIN}
        spec = [{"params": {"n": n}, "inputs": {"x": x, "y": y}} for _ in range(units)]
        quick = {"shader": SAXPY, "manifest": SAXPY_MANIFEST, "a": 3.0}
        with site.client() as client:
            # A tab fetches a unit's inputs from the coordinator, which a stopped one never
            # serves: both tabs fetch (and keep) them now, with a quick job on the same inputs.
            warm = client.submit("wgsl", spec, params=quick, policy={"quorum": 2}).id
            assert client.wait(warm, progress=False, timeout=120).state == "done"
            job = client.submit("wgsl", spec, params=params, policy={"quorum": 2}).id

        def rows() -> list[tuple]:
            return site.query("SELECT worker_id, state FROM replicas WHERE job_id = ?", job)

        def held(state: str) -> bool:
            return sorted(rows()) == sorted(
                (t.worker_id, state) for t in tabs for _ in range(units)
            )

        def story() -> str:
            logs = "\n".join(f"{t.name}: {t.text('#log')[-600:]}" for t in tabs)
            return f"replicas {rows()}; tabs {[t.worker_id for t in tabs]}\n{logs}"

        wait_until("each tab to hold a replica of the unit", lambda: held("leased"))
        done = [int(t.text("#units-done")) for t in tabs]
        site.coordinator.pause()
        try:
            for t, before in zip(tabs, done, strict=True):
                wait_until(
                    f"{t.name} to compute its unit meanwhile",
                    lambda t=t, before=before: int(t.text("#units-done")) >= before + units,
                    timeout=120,
                )
            site.coordinator.kill()
            # Looked at before the restart: the tabs send their results again once it is up.
            unrecorded, before_restart = held("leased"), story()
        finally:
            site.coordinator.kill()
            site.coordinator.start()
        assert unrecorded, f"the stopped coordinator recorded nothing: {before_restart}"
        with site.client() as client:
            assert client.wait(job, progress=False, timeout=120).state == "done", story()
            results = client.results(job)
        assert held("valid"), f"each result counted once, none computed again: {story()}"
        for outputs in results.values():
            np.testing.assert_array_equal(outputs["out"], 3.0 * x + y)
        for t, before in zip(tabs, done, strict=True):
            again = f"sending {units} unacknowledged results again"
            assert again in t.text("#log"), story()
            assert int(t.text("#units-done")) == before + units, f"computed twice: {story()}"
    finally:
        idle.page.locator("#resume").click()
    for t in fleet:
        t.wait_state(*STARTED)
