"""The officer app in real headless Chromium (Debian's), against the real app on loopback:
log in, map and list, a cell's reasons, create a set-up, record a knock, an alert arriving
live from Kafka, archive the set-up and still open its report.

Chromium comes from Debian (/usr/bin/chromium, installed by infra/system-deps.sh --test);
Playwright drives it by executable path and never downloads a browser.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from api.officer.state import OFFICER
from lpt.kafka import make_producer, publish
from lpt.settings import Settings
from schemas.envelope import utcnow
from schemas.priority import OfficerAlert
from tests.test_officer_support import (
    CENTRE_CELL,
    EAST_CELL,
    PASSWORD,
    WARD_CENTRE,
    WARD_EAST,
    delete_topics,
    officer_settings,
    seed,
    served,
)

CHROMIUM = Path(os.environ.get("LPT_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOT = Path("/tmp/officer_map_360.png")
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

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM}"
)


@pytest.fixture
async def browser_page(isolated_settings: Settings) -> AsyncIterator[tuple[Any, str, Any]]:
    from playwright.async_api import async_playwright

    settings = officer_settings(isolated_settings)
    await seed(settings)
    async with served(settings) as server, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = await browser.new_context(viewport={"width": 360, "height": 740})
            page = await context.new_page()
            page.set_default_timeout(15_000)
            yield page, str(server.make_url("")).rstrip("/"), server.app
        finally:
            await browser.close()
    await delete_topics(settings)


async def publish_alert(settings: Settings, ward: str, cell: str, message: str) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        alert = OfficerAlert(
            occurred_at=utcnow(),
            source="streams",
            alert_id=f"al-{time.monotonic_ns()}",
            kind="near_repeat",
            cell=cell,
            ward_code=ward,
            local_authority_code=None,
            severity="warning",
            message=message,
        )
        await publish(producer, [alert], settings)
    finally:
        await producer.stop()


async def test_officer_journey_in_chromium(browser_page: tuple[Any, str, Any]) -> None:
    page, base, app = browser_page
    settings: Settings = app[OFFICER].settings
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Log in (the map redirects to the login page first).
    await page.goto(base + "/officer/")
    assert "/officer/login" in page.url
    await page.fill("#username", "supervisor.hull")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(base + "/officer/")

    # The map: boundaries base layer and the one Hull cell in scope, coloured by priority.
    await page.wait_for_selector("#map[data-cells='1']")
    await page.wait_for_selector("path.leaflet-interactive")
    await page.screenshot(path=str(SCREENSHOT), full_page=False)
    # Tap the cell: its reasons, actions, streets and trend appear.
    await page.locator("path.leaflet-interactive").first.click(force=True)
    detail = page.locator("#cell-detail")
    await detail.wait_for()
    text = await detail.inner_text()
    assert "Crime harm of 1,234 harm-days" in text
    assert "Whitefriargate" in text
    assert "rank 1" in text.lower()

    # The list view has the same information without the map.
    await page.goto(base + "/officer/list?level=9")
    listing = await page.locator("#area-list").inner_text()
    assert "Crime harm of 1,234 harm-days" in listing
    assert "Burglary within about 400 m" in listing
    assert EAST_CELL not in listing  # outside this supervisor's authority
    await page.screenshot(path="/tmp/officer_list_360.png", full_page=True)
    await page.click(f"a[href='/officer/cells/9/{CENTRE_CELL}']")
    assert "2025-06-01" in await page.locator("table.trend").inner_text()

    # Create a set-up for the city-centre ward.
    await page.goto(base + "/officer/setups")
    await page.fill("#name", "Whitefriargate week of action")
    await page.fill("#goal", "Knock every door near the burglaries and invite sign-ups")
    await page.check(f"input[name=ward_codes][value={WARD_CENTRE}]")
    await page.fill("#target_doors", "40")
    await page.click("form[action='/officer/setups'] button[type=submit]")
    await page.wait_for_selector("text=Set-up created")
    setup_url = page.url.split("?")[0]
    assert "/officer/setups/su-" in setup_url

    # Door-knock list, record a knock from the phone.
    await page.click("text=Door-knock list")
    await page.wait_for_selector("li.postcode")
    first = page.locator("li.postcode").first
    assert "HU1 1" in await first.locator("h2").inner_text()
    await first.locator("input[name=address_ref]").fill("12")
    await first.locator("select[name=outcome]").select_option("spoke")
    await first.locator("form.knock button[type=submit]").click()
    await page.wait_for_selector("text=Knock recorded at")
    await page.screenshot(path="/tmp/officer_doors_360.png", full_page=True)

    # An alert published on officer.alerts arrives in the open page, filtered by area.
    await asyncio.wait_for(app[OFFICER].live.ready.wait(), 15)
    await page.wait_for_selector("#live-status:has-text('Live updates: on')")
    await publish_alert(settings, WARD_EAST, EAST_CELL, "East Riding alert, not for Hull")
    await publish_alert(settings, WARD_CENTRE, CENTRE_CELL, "Burglary near Whitefriargate")
    started = time.monotonic()
    await page.wait_for_selector("#alerts li:has-text('Burglary near Whitefriargate')")
    arrival = time.monotonic() - started
    await asyncio.sleep(0.5)
    alerts = await page.locator("#alerts").inner_text()
    assert "East Riding" not in alerts
    print(f"alert shown {arrival * 1000:.0f} ms after publishing")

    # Archive the set-up; its report still opens, read-only.
    await page.goto(setup_url)
    await page.click("text=Archive set-up")
    await page.wait_for_selector("text=Set-up archived")
    assert await page.locator("text=Door-knock list").count() == 0
    await page.click("text=Progress report")
    report = await page.locator("main").inner_text()
    assert "Archived" in report
    assert "Doors knocked" in report and "of 40" in report
    assert errors == []
