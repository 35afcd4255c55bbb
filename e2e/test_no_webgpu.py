"""A browser without WebGPU: the page says why and what to do, and computes nothing."""

from __future__ import annotations

from playwright.sync_api import Playwright, expect

from volunteer import Site, Volunteer, launch


def test_without_webgpu_the_page_explains_and_computes_nothing(
    playwright: Playwright, site: Site
) -> None:
    browser = launch(playwright, webgpu=False)
    try:
        context = browser.new_context()
        # Consent given on an earlier visit must not start anything either.
        context.add_init_script("localStorage.setItem('tabgrid.consent', 'yes')")
        tab = Volunteer(context, site.url + "/", "no-webgpu")
        notice = tab.page.locator("#no-webgpu")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text("WebGPU")
        expect(tab.page.locator("#gpu")).to_have_text("none available")
        expect(tab.page.locator("#start")).to_be_disabled()
        tab.page.wait_for_timeout(1500)
        assert tab.page.workers == [] and tab.websockets == []
        assert tab.state == "idle"
        tab.screenshot("contribute-no-webgpu")
    finally:
        browser.close()
