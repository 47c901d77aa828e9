"""The ops page in real headless Chromium (Debian's) while a backfill lands and a stream worker
catches up: the consumer lag an admin sees rises with the backfill and falls back to zero.

Everything is real and on loopback: the web app, a ``lpt worker`` process, the police.uk
sample published by the importer, Kafka and PostgreSQL. The test reads only what the page
shows (its tables' text), the way an operator watches it.

Why the worker runs once before the backfill: the page lists the consumer groups that have
committed offsets on the deployment's topics, so a group appears once a worker has committed
for it (after its first batch). A short first run on a small slice of the sample puts the
stream's input group on the page, caught up; the worker is then stopped, the backfill (four
months of the sample) is published, and lag rises month by month; a worker started again
brings it back to zero, the page updating itself (``<meta http-equiv="refresh">``).
"""

from __future__ import annotations

import asyncio
import csv
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from api.officer.accounts import AccountStore
from api.ops.lag import REUSE_S
from api.ops.views import REFRESH_SECONDS
from lpt.settings import Settings
from producers.police_uk import import_files
from streams.lag import stream_groups
from tests.streams_helpers import Worker, wait_idle
from tests.test_officer_browser import ARGS, CHROMIUM
from tests.test_officer_support import PASSWORD, officer_settings, served

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM}"
)

ADMIN = "ops.admin"
WARM_UP_ROWS = 400
BACKFILL_MONTHS = ("2018-11", "2018-12", "2019-01", "2019-02")


def street_file(data_dir: Path, month: str) -> Path:
    return data_dir / "police_uk" / f"{month}-humberside-street.csv"


def first_rows(data_dir: Path, month: str, n: int, out_dir: Path) -> Path:
    """The header and the first ``n`` rows of one month's street file."""
    with open(street_file(data_dir, month), newline="", encoding="utf-8-sig") as src:
        rows = list(csv.reader(src))[: n + 1]
    out = out_dir / f"{month}-first-{n}-street.csv"
    with open(out, "w", newline="", encoding="utf-8") as dst:
        csv.writer(dst).writerows(rows)
    return out


def number(text: str) -> int:
    """``"34,412"`` -> 34412 (what the page prints for a count)."""
    digits = text.replace(",", "").strip()
    assert re.fullmatch(r"\d+", digits), f"not a count: {text!r}"
    return int(digits)


_READ_TABLES = """() => {
    const out = {};
    for (const h of document.querySelectorAll('h2')) {
        const table = h.nextElementSibling && h.nextElementSibling.querySelector('table');
        if (!table) continue;
        const head = [...table.querySelectorAll('thead th')].map(c => c.innerText.trim());
        out[h.textContent.trim()] = [...table.querySelectorAll('tbody tr')].map(
            r => Object.fromEntries([...r.cells].map((c, i) => [head[i], c.innerText.trim()])));
    }
    return out;
}"""


async def tables(page: Any) -> dict[str, list[dict[str, str]]]:
    """Every table of the page as the user reads it: section heading -> rows (column -> text).
    Read again when the page navigates (its own refresh) while being read."""
    for _ in range(20):
        try:
            found: dict[str, list[dict[str, str]]] = await page.evaluate(_READ_TABLES)
            return found
        except Exception as exc:
            if "context was destroyed" not in str(exc) and "navigat" not in str(exc).lower():
                raise
            await page.wait_for_load_state()
    raise AssertionError("the ops page kept navigating")


async def lag_table(page: Any) -> dict[str, dict[str, str]]:
    """The "Consumer lag" table: group as shown -> column -> text."""
    return {row["Group"]: row for row in (await tables(page)).get("Consumer lag", [])}


async def stream_worker_health(page: Any) -> list[str]:
    """The Health column of the Workers table, for stream workers."""
    return sorted(
        row["Health"] for row in (await tables(page)).get("Workers", []) if row["Kind"] == "streams"
    )


async def shown_lag(page: Any, group: str) -> int | None:
    """The lag the page shows for ``group`` (None when it lists no such group)."""
    row = (await lag_table(page)).get(group)
    return None if row is None else number(row["Lag (messages)"])


async def reload_until(page: Any, group: str, expected: int, timeout: float = 15) -> int | None:
    """Reload the page (as an operator presses reload) until it shows ``expected`` for
    ``group``; the last figure shown. The server reuses a lag snapshot for up to
    ``REUSE_S`` seconds, so the first reload after a change may still show the old figure."""
    from playwright.async_api import Error as PlaywrightError

    deadline = time.monotonic() + timeout
    while True:
        try:
            await page.reload()
        except PlaywrightError:
            # The page's own refresh navigated at the same moment (net::ERR_ABORTED): the
            # page on screen is the refreshed one, which is just as good.
            await page.wait_for_load_state()
        lag = await shown_lag(page, group)
        if lag == expected or time.monotonic() > deadline:
            return lag
        await asyncio.sleep(REUSE_S / 2)


@pytest.fixture
async def ops_browser(
    isolated_settings: Settings,
) -> AsyncIterator[tuple[Any, str, Settings]]:
    from playwright.async_api import async_playwright

    settings = officer_settings(isolated_settings)
    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=2)
    try:
        await AccountStore(pool).create(ADMIN, "Ops Admin", "admin", password=PASSWORD)
    finally:
        await pool.close()
    async with served(settings) as server, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            page.set_default_timeout(15_000)
            yield page, str(server.make_url("")).rstrip("/"), settings
        finally:
            await browser.close()


async def test_ops_page_shows_lag_rising_in_a_backfill_and_falling_to_zero(
    ops_browser: tuple[Any, str, Settings], data_dir: Path, tmp_path: Path
) -> None:
    page, base, settings = ops_browser
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    input_group, stages_group, scorer_group = (
        g.removeprefix(settings.topic_prefix) for g in stream_groups(settings)
    )
    home = tmp_path / "worker"

    # An admin signs in (officer app login) and opens the ops page.
    refused = await page.goto(base + "/ops")
    assert refused is not None and refused.status == 401  # not signed in
    await page.goto(base + "/officer/login")
    await page.fill("#username", ADMIN)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(base + "/officer/**")
    await page.goto(base + "/ops")
    assert "Consumer lag" in await page.locator("main").inner_text()

    # A first, short run: the stream's groups appear on the page, caught up.
    warm = await import_files(
        [first_rows(data_dir, "2018-10", WARM_UP_ROWS, tmp_path)], settings, progress=False
    )
    assert warm.published > 0 and not warm.errors
    worker = Worker(settings, home)
    try:
        await wait_idle(settings, [worker], timeout=120)
    finally:
        worker.stop()
    assert await reload_until(page, input_group, 0) == 0
    table = await lag_table(page)
    assert number(table[stages_group]["Lag (messages)"]) == 0, table
    assert number(table[scorer_group]["Lag (messages)"]) == 0, table
    assert await stream_worker_health(page) == ["stopped"]

    # The backfill, a month at a time, with no worker running: the lag the page shows rises
    # by exactly what was published (every crime partition already has a committed offset).
    seen_rising = [0]
    published = 0
    for month in BACKFILL_MONTHS:
        summary = await import_files([street_file(data_dir, month)], settings, progress=False)
        assert summary.published > 1000 and not summary.errors
        published += summary.published
        lag = await reload_until(page, input_group, published)
        assert lag == published, (seen_rising, lag, published)
        seen_rising.append(lag)
    assert seen_rising == sorted(seen_rising) and len(set(seen_rising)) == len(seen_rising)
    assert number(await page.locator("#total-lag").inner_text()) >= published
    oldest = (await lag_table(page))[input_group]["Oldest unconsumed"]
    assert oldest.endswith((" s", " min")), oldest  # the age of the oldest waiting message
    print(f"lag shown while the backfill landed: {seen_rising}")

    # A worker starts; the page, refreshing itself (no reload by the test from here on),
    # shows the lag falling back to zero.
    worker = Worker(settings, home)
    try:
        seen_falling: list[int] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert worker.proc.poll() is None, worker.tail()
            lag = await shown_lag(page, input_group)
            if lag is not None and (not seen_falling or lag != seen_falling[-1]):
                seen_falling.append(lag)
            if lag == 0:
                break
            await asyncio.sleep(0.5)
        print(f"lag shown while the worker caught up: {seen_falling}")
        assert seen_falling and seen_falling[0] == published and seen_falling[-1] == 0
        assert seen_falling == sorted(seen_falling, reverse=True), seen_falling
        health = await stream_worker_health(page)
        assert health == ["stopped", "up"], health  # the first worker and the new one
        # The internal stages catch up too: shown on the page's next refreshes.
        await wait_idle(settings, [worker], timeout=60)
        deadline = time.monotonic() + REFRESH_SECONDS * 2 + 5
        while time.monotonic() < deadline:
            table = await lag_table(page)
            if all(number(table[g]["Lag (messages)"]) == 0 for g in (input_group, stages_group)):
                break
            await asyncio.sleep(0.5)
        assert number(table[stages_group]["Lag (messages)"]) == 0, table
        assert number(table[input_group]["Lag (messages)"]) == 0, table
    finally:
        worker.stop()
    assert errors == []
