"""The sign-up page in a real browser (headless Chromium) on a 360 px wide phone screen.

Checks what only a browser can: the page fits the screen without sideways scrolling, the GOV.UK
styles apply, the form works with JavaScript turned off (the error summary appears and its link
moves focus to the field), and with JavaScript on the enhancement runs. A screenshot is left in
/tmp for a person to look at. Skipped when Chromium is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.test_public_support import Site, site_fixture  # noqa: F401 - the fixture

CHROMIUM = Path(os.environ.get("LPT_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path("/tmp/lpt-register-360.png")
ERROR_SCREENSHOT = Path("/tmp/lpt-register-360-errors.png")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed")


async def test_registration_page_on_a_360px_phone(site: Site) -> None:
    from playwright.async_api import async_playwright

    base = str(site.client.make_url("/")).rstrip("/")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            await _check(browser, base)
        finally:
            await browser.close()


async def _check(browser: Any, base: str) -> None:
    phone = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 1}

    # Without JavaScript: the page fits, is styled, and the form works.
    context = await browser.new_context(java_script_enabled=False, **phone)
    page = await context.new_page()
    await page.goto(f"{base}/register")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    button = page.locator("button.govuk-button")
    assert await button.evaluate("b => getComputedStyle(b).backgroundColor") != (
        "rgba(0, 0, 0, 0)"
    )  # the GOV.UK stylesheet is applied
    await page.screenshot(path=str(SCREENSHOT), full_page=True)

    await page.fill("#email", "not-an-address")
    await page.fill("#postcode", "ZZ9 9ZZ")
    await page.check("#channels")
    await button.click()
    await page.wait_for_load_state()
    assert (await page.title()).startswith("Error: ")
    summary = page.locator(".govuk-error-summary")
    assert await summary.is_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    await page.screenshot(path=str(ERROR_SCREENSHOT), full_page=False)
    # The summary's link takes keyboard focus to the field it names.
    await summary.locator('a[href="#email"]').click()
    assert await page.evaluate("document.activeElement.id") == "email"
    await context.close()

    # With JavaScript: GOV.UK Frontend initialises (progressive enhancement only).
    context = await browser.new_context(**phone)
    page = await context.new_page()
    await page.goto(f"{base}/register")
    await page.wait_for_function(
        "document.body.classList.contains('govuk-frontend-supported')", timeout=5000
    )
    await context.close()
