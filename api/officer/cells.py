"""Priority by area: score, rank, components, reasons, actions, streets and trend.

Reads the stream processors' query side (``lpt/migrations/004_priority.sql``): the current row
per (level, area) and the history snapshots. Only aggregates live there, so every role may read
them inside its scope; a list is filtered to the scope, a single out-of-scope area is a 403.
Cell outlines are computed here with ``h3.cell_to_boundary`` (GeoJSON wants lng/lat order).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any, Literal

import asyncpg
import h3
from aiohttp import web

from api.http import HTTPProblem
from api.officer.access import READERS, forbid_out_of_scope, require
from api.officer.accounts import Account
from api.officer.areas import AreaIndex
from api.officer.state import officer_state
from streams.scoring.explain import actions as recommended_actions

Level = Literal["9", "8", "7", "ward", "la", "force"]
LEVELS: tuple[Level, ...] = ("9", "8", "7", "ward", "la", "force")
#: The level names the priority tables use for each of ours.
DB_LEVEL: dict[str, str] = {
    "9": "res9",
    "8": "res8",
    "7": "res7",
    "ward": "ward",
    "la": "local_authority",
    "force": "force",
}
H3_LEVELS = ("9", "8", "7")
MAX_LIST = 5000
TREND_POINTS = 26


def parse_level(raw: str | None) -> Level:
    value = (raw or "9").removeprefix("res")
    for level in LEVELS:
        if value == level:
            return level
    raise HTTPProblem(422, f"level must be one of {', '.join(LEVELS)}", "level")


def _json(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(value)
    return value


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return None if value is None else str(value)


def area_in_scope(index: AreaIndex, account: Account, level: Level, row: dict[str, Any]) -> bool:
    scope = account.scope
    if scope.force_wide or level == "force":
        return True
    if level in H3_LEVELS:
        if index.cell_in_scope(row["area_id"], scope):
            return True
        return scope.covers(row.get("ward_code"), row.get("local_authority_code"))
    if level == "ward":
        return index.ward_in_scope(row["area_id"], scope)
    return row["area_id"] in scope.local_authority_codes


def present(row: dict[str, Any], level: Level) -> dict[str, Any]:
    """A priority row as the API shows it (reasons in plain English, actions from reasons)."""
    reasons = _json(row.get("reasons")) or []
    streets = _json(row.get("streets")) or []
    street_names = [
        str(s.get("street") or s.get("name") or "") if isinstance(s, dict) else str(s)
        for s in streets
    ]
    # The worker writes {street, harm, crimes} per street: the names drive the headings and
    # the actions, the figures let an officer see why one street comes before another.
    street_figures = [s for s in streets if isinstance(s, dict)]
    stored_actions = _json(row.get("actions"))
    out = {
        "level": level,
        "id": row["area_id"],
        "score": row.get("score"),
        "rank": row.get("rank"),
        "ranked_of": row.get("areas_ranked"),
        "in_top": row.get("in_top"),
        "components": _json(row.get("components")) or {},
        "reasons": reasons,
        "actions": stored_actions if stored_actions else recommended_actions(reasons, street_names),
        "streets": street_names,
        "street_figures": street_figures,
        "ward_code": row.get("ward_code"),
        "local_authority_code": row.get("local_authority_code"),
        "as_of": _iso(row.get("as_of")),
        "counts": _json(row.get("counts")) or {},
        "survey": _json(row.get("survey")),
        "engagement": _json(row.get("engagement")) or {},
    }
    # ``extra`` holds what only some levels have: an authority's name, the force's context
    # counts (crimes outside the force area or unlocated: shown, never scored).
    extra = _json(row.get("extra")) or {}
    if extra.get("name"):
        out["name"] = extra["name"]
    if level == "force" and extra.get("context") is not None:
        out["context"] = extra["context"]
    if level in H3_LEVELS:
        lat, lng = h3.cell_to_latlng(row["area_id"])
        out["centre"] = {"lat": round(lat, 6), "lng": round(lng, 6)}
    return out


async def fetch_rows(
    pool: asyncpg.Pool, level: Level, ids: list[str] | None = None
) -> list[dict[str, Any]]:
    if ids is None:
        rows = await pool.fetch(
            "SELECT * FROM priority_areas WHERE level = $1 ORDER BY rank NULLS LAST, area_id "
            "LIMIT $2",
            DB_LEVEL[level],
            MAX_LIST,
        )
    else:
        rows = await pool.fetch(
            "SELECT * FROM priority_areas WHERE level = $1 AND area_id = ANY($2::text[])",
            DB_LEVEL[level],
            ids,
        )
    return [dict(r) for r in rows]


async def cells_in_scope(
    request: web.Request, account: Account, level: Level
) -> list[dict[str, Any]]:
    """Every area of a level inside the account's scope, presented, best rank first."""
    state = officer_state(request)

    async def build() -> list[dict[str, Any]]:
        index = await state.areas.get()
        rows = await fetch_rows(state.pool, level)
        return [present(r, level) for r in rows if area_in_scope(index, account, level, r)]

    items: list[dict[str, Any]] = await state.cache.get(("items", level, account.scope), build)
    return items


async def cached_json(
    request: web.Request, key: tuple[Any, ...], build: Callable[[], Awaitable[Any]]
) -> web.Response:
    """A JSON answer rendered once per key and cache period (see ``cache.py``)."""

    async def render() -> bytes:
        return json.dumps(await build(), separators=(",", ":")).encode()

    body: bytes = await officer_state(request).cache.get(("json", *key), render)
    return web.Response(body=body, content_type="application/json")


async def score_of_cells(pool: asyncpg.Pool, cells: list[str]) -> dict[str, tuple[float, int]]:
    """Current (score, rank) of res-9 cells, for ordering door-knock lists."""
    rows = await pool.fetch(
        "SELECT area_id, score, rank FROM priority_areas WHERE level = 'res9' "
        "AND area_id = ANY($1::text[])",
        cells,
    )
    return {r["area_id"]: (float(r["score"] or 0.0), int(r["rank"] or 0)) for r in rows}


# -- handlers ---------------------------------------------------------------------------------


async def list_priority(request: web.Request) -> web.Response:
    account = await require(request, READERS)
    level = parse_level(request.query.get("level"))

    async def build() -> dict[str, Any]:
        items = await cells_in_scope(request, account, level)
        return {"level": level, "count": len(items), "items": items}

    return await cached_json(request, ("list", level, account.scope), build)


async def get_area(request: web.Request) -> web.Response:
    account = await require(request, READERS)
    level = parse_level(request.match_info["level"])
    area_id = request.match_info["area_id"]
    return web.json_response(await area_detail(request, account, level, area_id))


#: One area's row with its last ``TREND_POINTS`` daily snapshots, in one round trip.
DETAIL_SQL = """SELECT a.*, (
               SELECT COALESCE(json_agg(json_build_object('date', h.day, 'score', h.score,
                                                          'rank', h.rank) ORDER BY h.day), '[]')
               FROM (SELECT day, score, rank FROM priority_history
                     WHERE level = a.level AND area_id = a.area_id
                     ORDER BY day DESC LIMIT $3) h) AS trend_points
           FROM priority_areas a WHERE a.level = $1 AND a.area_id = $2"""


async def area_detail(
    request: web.Request, account: Account, level: Level, area_id: str
) -> dict[str, Any]:
    """One area with its trend (one query: the row and its last snapshots together)."""
    state = officer_state(request)
    if level in H3_LEVELS and (
        not h3.is_valid_cell(area_id) or str(h3.get_resolution(area_id)) != level
    ):
        raise HTTPProblem(422, f"not an H3 cell of resolution {level}", "area_id")

    async def load() -> dict[str, Any] | None:
        found = await state.pool.fetchrow(DETAIL_SQL, DB_LEVEL[level], area_id, TREND_POINTS)
        return None if found is None else dict(found)

    # Shared across accounts (the scope is checked below, per request).
    row: dict[str, Any] | None = await state.cache.get(("row", level, area_id), load)
    index = await state.areas.get()
    if row is None:
        # A cell with no row yet: still scope-checked, so a 404 never leaks outside the scope.
        forbid_out_of_scope(area_in_scope(index, account, level, {"area_id": area_id}))
        raise HTTPProblem(404, "no priority figures for this area yet", "area_id")
    forbid_out_of_scope(area_in_scope(index, account, level, row))
    detail = present(row, level)
    detail["trend"] = _json(row["trend_points"])
    return detail


def cell_feature(item: dict[str, Any]) -> dict[str, Any]:
    ring = [[round(lng, 6), round(lat, 6)] for lat, lng in h3.cell_to_boundary(item["id"])]
    ring.append(ring[0])
    return {
        "type": "Feature",
        "id": item["id"],
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "id": item["id"],
            "score": item["score"],
            "rank": item["rank"],
            "ranked_of": item["ranked_of"],
            "top_reason": item["reasons"][0]["text"] if item["reasons"] else "",
        },
    }


async def geojson(request: web.Request) -> web.Response:
    account = await require(request, READERS)
    level = parse_level(request.query.get("level"))
    if level not in H3_LEVELS:
        raise HTTPProblem(422, "cell outlines exist for levels 9, 8 and 7 only", "level")

    async def build() -> dict[str, Any]:
        items = await cells_in_scope(request, account, level)
        return {"type": "FeatureCollection", "features": [cell_feature(i) for i in items]}

    return await cached_json(request, ("geojson", level, account.scope), build)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/priority", list_priority)
    app.router.add_get("/api/v1/priority/geojson", geojson)
    app.router.add_get("/api/v1/priority/{level}/{area_id}", get_area)
