"""The officer app against rows the real stream worker wrote (not rows a test inserted).

A slice of the real Humberside police.uk sample (two months, imported one after the other so
the history has two event-time days) goes through the real importer and a real ``lpt worker``
process into the priority tables; then the officer API and pages, logged in as an officer
posted to one Hull ward, must show exactly what the worker wrote: the map cells and the list
(filtered to the ward), a cell's score, rank, components, reasons, actions, streets, counts and
trend, and a 403 for a cell outside the ward.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import h3
import pytest
from markupsafe import escape

from api.officer.accounts import AccountStore
from lpt.settings import Settings
from tests.streams_helpers import Worker, wait_idle
from tests.test_officer_support import PASSWORD, officer_settings, served, session_for

HULL = "E06000010"
#: Every n-th row of each month: enough for a few hundred cells in every authority, quick.
EVERY = 4
MONTHS = ("2019-01", "2019-02")


def write_slice(data_dir: Path, month: str, out_dir: Path) -> Path:
    """Every ``EVERY``-th row of one month's street file, header kept (same file name)."""
    name = f"{month}-humberside-street.csv"
    with open(data_dir / "police_uk" / name, newline="", encoding="utf-8-sig") as src:
        rows = list(csv.reader(src))
    out = out_dir / name
    with open(out, "w", newline="", encoding="utf-8") as dst:
        csv.writer(dst).writerows([rows[0], *rows[1::EVERY]])
    return out


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def written(pool: asyncpg.Pool, level: str) -> dict[str, dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM priority_areas WHERE level = $1", level)
    return {r["area_id"]: dict(r) for r in rows}


async def ward_cells(pool: asyncpg.Pool, ward: str) -> set[str]:
    """Res-9 cells holding a postcode of the ward (the scope rule, computed here from scratch)."""
    rows = await pool.fetch(
        "SELECT cell FROM ref_postcodes WHERE ward_code = $1 AND cell IS NOT NULL", ward
    )
    return {h3.cell_to_parent(r["cell"], 9) for r in rows}


def assert_item_matches(item: dict[str, Any], row: dict[str, Any]) -> None:
    """One API item against the worker's row, field by field."""
    where = row["area_id"]
    assert item["id"] == where
    assert item["score"] == pytest.approx(row["score"], abs=1e-12), where
    assert item["rank"] == row["rank"], where
    assert item["ranked_of"] == row["areas_ranked"], where
    assert item["in_top"] == row["in_top"], where
    assert item["ward_code"] == row["ward_code"], where
    assert item["local_authority_code"] == row["local_authority_code"], where
    assert item["components"] == _json(row["components"]), where
    assert item["reasons"] == _json(row["reasons"]), where
    assert item["actions"] == _json(row["actions"]), where
    streets = _json(row["streets"])
    assert item["streets"] == [s["street"] for s in streets], where
    assert item["street_figures"] == streets, where
    assert item["counts"] == _json(row["counts"]), where
    assert item["engagement"] == _json(row["engagement"]), where
    assert item["survey"] == _json(row["survey"]), where
    assert datetime.fromisoformat(item["as_of"]) == row["as_of"], where
    extra = _json(row["extra"])
    assert item.get("name") == extra.get("name"), where
    assert item.get("context") == extra.get("context"), where


async def test_officer_api_shows_what_the_stream_worker_wrote(
    isolated_settings: Settings, data_dir: Path, tmp_path: Path
) -> None:
    from producers.police_uk import import_files
    from reference.loaders import load_reference

    settings = officer_settings(isolated_settings)
    await load_reference(settings, data_dir, progress=False)
    worker = Worker(settings, tmp_path / "home")
    try:
        for month in MONTHS:  # one month at a time: two event-time days in the history
            summary = await import_files(
                [write_slice(data_dir, month, tmp_path)], settings, progress=False
            )
            assert summary.published > 1000
            await wait_idle(settings, [worker], timeout=240)
    finally:
        worker.stop()

    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=2)
    try:
        res9 = await written(pool, "res9")
        wards = await written(pool, "ward")
        (force,) = (await written(pool, "force")).values()
        assert len(res9) > 300, "the worker wrote too few cells for this test to mean much"
        # The officer's ward: the Hull ward of the best-ranked Hull cell the worker wrote.
        top_hull = min(
            (r for r in res9.values() if r["local_authority_code"] == HULL and r["ward_code"]),
            key=lambda r: r["rank"],
        )
        ward = top_hull["ward_code"]
        in_ward = await ward_cells(pool, ward)
        expected = {c for c, r in res9.items() if r["ward_code"] == ward or c in in_ward}
        outside = min(
            (r for r in res9.values() if r["area_id"] not in expected),
            key=lambda r: r["rank"],
        )
        assert len(expected) >= 2 and top_hull["area_id"] in expected
        history = await pool.fetch(
            "SELECT day, score, rank FROM priority_history WHERE level = 'res9' AND area_id = $1"
            " ORDER BY day",
            top_hull["area_id"],
        )
        await AccountStore(pool).create(
            "officer.ward",
            "Officer Ward",
            "officer",
            password=PASSWORD,
            team="Hull",
            ward_codes=(ward,),
        )
    finally:
        await pool.close()

    # What the worker wrote is real: reasons in plain English, actions, streets, two days.
    assert top_hull["rank"] >= 1 and _json(top_hull["reasons"])
    assert all(r["text"] for r in _json(top_hull["reasons"]))
    assert _json(top_hull["streets"])[0]["street"].startswith("On or near ")
    assert [h["day"].isoformat() for h in history] == ["2019-01-15", "2019-02-15"]

    async with served(settings) as server, session_for(server, "officer.ward") as officer:
        # The list: every in-scope cell the worker wrote, best rank first, nothing else.
        resp = await officer.get("/api/v1/priority?level=9")
        assert resp.status == 200, await resp.text()
        listed = (await resp.json())["items"]
        assert [i["id"] for i in listed] == sorted(expected, key=lambda c: res9[c]["rank"])
        for item in listed:
            assert_item_matches(item, res9[item["id"]])

        # The map: the same cells, outlined, with the worker's top reason.
        resp = await officer.get("/api/v1/priority/geojson?level=9")
        features = (await resp.json())["features"]
        assert {f["id"] for f in features} == expected
        top_feature = next(f for f in features if f["id"] == top_hull["area_id"])
        assert top_feature["properties"]["rank"] == top_hull["rank"]
        assert top_feature["properties"]["top_reason"] == _json(top_hull["reasons"])[0]["text"]

        # One cell: everything above plus the trend from the history table.
        resp = await officer.get(f"/api/v1/priority/9/{top_hull['area_id']}")
        assert resp.status == 200, await resp.text()
        detail = await resp.json()
        assert_item_matches(detail, top_hull)
        assert [(p["date"], p["rank"]) for p in detail["trend"]] == [
            (h["day"].isoformat(), h["rank"]) for h in history
        ]
        assert [p["score"] for p in detail["trend"]] == pytest.approx([h["score"] for h in history])

        # The ward's own row, the force's (with its never-scored context counts), and the
        # pages an officer reads on the phone.
        resp = await officer.get(f"/api/v1/priority/ward/{ward}")
        assert resp.status == 200
        assert_item_matches(await resp.json(), wards[ward])
        resp = await officer.get("/api/v1/priority?level=force")
        (force_item,) = (await resp.json())["items"]
        assert_item_matches(force_item, force)
        assert force_item["id"] == settings.force_name
        assert force_item["context"]["outside_force_area"]  # the row out of the area above
        page = await officer.get(f"/officer/cells/force/{quote(settings.force_name)}")
        assert page.status == 200, await page.text()
        assert "never scored" in await page.text()
        page = await officer.get(f"/officer/cells/9/{top_hull['area_id']}")
        assert page.status == 200, await page.text()
        text = await page.text()
        for reason in _json(top_hull["reasons"]):
            assert str(escape(reason["text"])) in text
        first_street = _json(top_hull["streets"])[0]
        assert str(escape(f"{first_street['street']} ({first_street['crimes']} crime")) in text
        listing = await officer.get("/officer/list?level=9")
        assert listing.status == 200
        assert top_hull["area_id"] in await listing.text()
        assert outside["area_id"] not in await listing.text()

        # Outside the ward: refused, and not leaked by the list or the map.
        resp = await officer.get(f"/api/v1/priority/9/{outside['area_id']}")
        assert resp.status == 403
        page = await officer.get(f"/officer/cells/9/{outside['area_id']}")
        assert page.status == 403
