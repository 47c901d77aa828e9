"""Shared set-up for the officer app tests: reference postcodes, accounts, priority rows,
logged-in HTTP sessions against the real app (real Kafka and PostgreSQL). No tests here."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import aiohttp
import asyncpg
import h3
from aiohttp.test_utils import TestServer

from api.app import create_app
from api.officer.accounts import Account, AccountStore, Role
from lpt.settings import Settings
from schemas.setups import SetupCreated
from tests.web_helpers import web_settings

HULL = "E06000010"
EAST_RIDING = "E06000011"
WARD_CENTRE = "E05001677"  # Hull city centre (HU1 1AA)
WARD_NEXT = "E05001671"  # its neighbour (HU1 1EX)
WARD_EAST = "E05001701"  # East Riding (HU11 4QA)
PASSWORD = "correct horse battery staple"

#: Real postcodes (NSPL May 2025 points, Code-Point Open 2014 wards).
POSTCODES = (
    ("HU1 1AA", 53.74406, -0.33280, WARD_CENTRE, HULL),
    ("HU1 1DB", 53.74360, -0.33365, WARD_CENTRE, HULL),
    ("HU1 1AZ", 53.73783, -0.33518, WARD_CENTRE, HULL),
    ("HU1 1EX", 53.74409, -0.32656, WARD_NEXT, HULL),
    ("HU11 4QA", 53.82142, -0.10970, WARD_EAST, EAST_RIDING),
)


def cell9(postcode: str) -> str:
    for pc, lat, lng, _, _ in POSTCODES:
        if pc == postcode:
            return str(h3.latlng_to_cell(lat, lng, 9))
    raise KeyError(postcode)


CENTRE_CELL = cell9("HU1 1AA")
EAST_CELL = cell9("HU11 4QA")

#: username -> (role, team, wards, local authorities)
ACCOUNTS: dict[str, tuple[Role, str | None, tuple[str, ...], tuple[str, ...]]] = {
    "officer.centre": ("officer", "Hull Central", (WARD_CENTRE,), ()),
    "officer.east": ("officer", "East Riding", (), (EAST_RIDING,)),
    "supervisor.hull": ("supervisor", "Hull Central", (), (HULL,)),
    "supervisor.east": ("supervisor", "East Riding", (WARD_EAST,), ()),
    "analyst.hull": ("analyst", None, (), (HULL,)),
    "admin": ("admin", None, (), ()),
}


async def add_reference(conn: asyncpg.Connection) -> None:
    for pc, lat, lng, ward, la in POSTCODES:
        await conn.execute(
            """INSERT INTO ref_postcodes (postcode, lat, lng, cell, unlocated, ward_code,
                   local_authority_code) VALUES ($1, $2, $3, $4, false, $5, $6)
               ON CONFLICT DO NOTHING""",
            pc,
            lat,
            lng,
            h3.latlng_to_cell(lat, lng, 10),
            ward,
            la,
        )


def reason(component: str, text: str, raw: float = 1.0) -> dict[str, Any]:
    return {"component": component, "raw_value": raw, "data_date": "2025-06-15", "text": text}


async def put_priority(
    conn: asyncpg.Connection,
    level: str,
    area_id: str,
    score: float,
    rank: int,
    reasons: list[dict[str, Any]],
    streets: list[str] | None = None,
    ward: str | None = None,
    la: str | None = None,
    ranked_of: int = 100,
    history: tuple[tuple[str, float, int], ...] = (),
) -> None:
    """A current row (and daily snapshots) in the stream processors' priority tables."""
    components = {
        r["component"]: {"raw": r["raw_value"], "percentile": 0.9, "data_date": r["data_date"]}
        for r in reasons
    }
    street_rows = [{"street": s, "harm": 10.0 - i} for i, s in enumerate(streets or [])]
    await conn.execute(
        """INSERT INTO priority_areas (level, area_id, resolution, score, rank, areas_ranked,
               in_top, ward_code, local_authority_code, components, reasons, actions, streets,
               counts, survey, engagement, as_of, weights_version)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, '[]'::jsonb,
                   $12::jsonb, '{}'::jsonb, NULL, '{}'::jsonb, now(), 'test')""",
        level,
        area_id,
        int(level[3:]) if level.startswith("res") else None,
        score,
        rank,
        ranked_of,
        rank <= max(1, ranked_of // 10),
        ward,
        la,
        json.dumps(components),
        json.dumps(reasons),
        json.dumps(street_rows),
    )
    for day, s, r in history:
        await conn.execute(
            """INSERT INTO priority_history (level, area_id, day, score, rank, areas_ranked,
                   in_top, components, reasons, as_of, weights_version)
               VALUES ($1, $2, $3, $4, $5, $6, false, '{}'::jsonb, '[]'::jsonb, now(), 'test')""",
            level,
            area_id,
            date.fromisoformat(day),
            s,
            r,
            ranked_of,
        )


async def seed(settings: Settings) -> dict[str, Account]:
    conn = await asyncpg.connect(settings.dsn)
    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=2)
    try:
        await add_reference(conn)
        await put_priority(
            conn,
            "res9",
            CENTRE_CELL,
            0.82,
            1,
            [
                reason("harm", "Crime harm of 1,234 harm-days, mostly burglary", 1234.0),
                reason("near_repeat", "Burglary within about 400 m in the last 8 weeks", 0.5),
            ],
            streets=["On or near Whitefriargate", "On or near Silver Street"],
            ward=WARD_CENTRE,
            la=HULL,
            history=(("2025-06-01", 0.5, 9), ("2025-06-08", 0.7, 3), ("2025-06-15", 0.82, 1)),
        )
        await put_priority(
            conn,
            "res9",
            EAST_CELL,
            0.61,
            2,
            [reason("deprivation", "Income deprivation higher than 80% of England's areas")],
            ward=WARD_EAST,
            la=EAST_RIDING,
        )
        await put_priority(conn, "ward", WARD_CENTRE, 0.7, 1, [reason("harm", "Harm")])
        await put_priority(conn, "ward", WARD_EAST, 0.4, 2, [reason("harm", "Harm")])
        await put_priority(conn, "force", "force", 0.5, 1, [reason("harm", "Harm")])
        store = AccountStore(pool)
        out = {}
        for username, (role, team, wards, las) in ACCOUNTS.items():
            out[username] = await store.create(
                username,
                username.replace(".", " ").title(),
                role,
                password=PASSWORD,
                team=team,
                ward_codes=wards,
                local_authority_codes=las,
            )
        return out
    finally:
        await pool.close()
        await conn.close()


async def delete_topics(settings: Settings) -> None:
    """Drop a test's own topics: the test broker has a file-descriptor budget, and thousands of
    leftover test partitions once stopped it from starting."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        if names and settings.topic_prefix.startswith("t"):
            await admin.delete_topics(names)
    finally:
        await admin.close()


def officer_settings(settings: Settings, **overrides: Any) -> Settings:
    return dataclasses.replace(web_settings(settings), cookie_secure=False, **overrides)


@dataclass
class User:
    """One logged-in browser-like session (own cookie jar)."""

    http: aiohttp.ClientSession
    csrf: str
    account: dict[str, Any]

    async def get(self, path: str, **kw: Any) -> aiohttp.ClientResponse:
        return await self.http.get(path, **kw)

    async def send(
        self, method: str, path: str, csrf: bool = True, **kw: Any
    ) -> aiohttp.ClientResponse:
        headers = dict(kw.pop("headers", {}))
        if csrf:
            headers["X-CSRF-Token"] = self.csrf
        return await self.http.request(method, path, headers=headers, **kw)


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[TestServer]:
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def session_for(server: TestServer, username: str | None) -> AsyncIterator[User]:
    http = aiohttp.ClientSession(
        base_url=str(server.make_url("")), cookie_jar=aiohttp.CookieJar(unsafe=True)
    )
    try:
        if username is None:
            yield User(http, "", {})
            return
        resp = await http.post(
            "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        yield User(http, body["csrf_token"], body["account"])
    finally:
        await http.close()


def setup_created(setup_id: str, name: str, **fields: Any) -> SetupCreated:
    """A one-day set-up in the centre ward, as the officer app publishes it (``fields``
    override any of its values)."""
    values: dict[str, Any] = {
        "occurred_at": datetime.now(UTC),
        "source": "officer-app",
        "setup_id": setup_id,
        "name": name,
        "goal": "Register households",
        "ward_codes": [WARD_CENTRE],
        "starts_on": date.today(),
        "ends_on": date.today(),
        "created_by": "o-test",
    }
    return SetupCreated(**(values | fields))
