"""Officer app on real Kafka: live SSE filtered by area, the projection of events that did not
come through the app (gateway knocks, registrations, surveys), demo accounts only in demo mode,
and CSRF on the HTML forms."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from api.officer.demo import DEMO_ACCOUNTS, DEMO_CONTACTS, DEMO_PASSWORD
from api.officer.state import OFFICER
from lpt.kafka import make_producer, publish
from lpt.settings import Settings
from schemas.common import EncryptedField, Location
from schemas.engagement import DoorKnocked, SurveyAnswered
from schemas.envelope import Envelope, utcnow
from schemas.priority import OfficerAlert, PriorityChanged, Reason
from schemas.residents import ResidentRegistered
from tests.test_officer_support import (
    CENTRE_CELL,
    EAST_CELL,
    WARD_CENTRE,
    WARD_EAST,
    TestServer,
    delete_topics,
    officer_settings,
    seed,
    served,
    session_for,
)

Env = tuple[TestServer, Settings]


@pytest.fixture
async def env(isolated_settings: Settings) -> AsyncIterator[Env]:
    settings = officer_settings(isolated_settings)
    await seed(settings)
    async with served(settings) as server:
        await asyncio.wait_for(server.app[OFFICER].live.ready.wait(), 15)
        yield server, settings
    await delete_topics(settings)


async def send(settings: Settings, events: list[Envelope]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        await publish(producer, events, settings)
    finally:
        await producer.stop()


def changed(cell: str, ward: str, rank: int) -> PriorityChanged:
    return PriorityChanged(
        occurred_at=utcnow(),
        source="streams",
        cell=cell,
        resolution=9,
        score_before=0.4,
        score_after=0.9,
        rank=rank,
        cells_ranked=100,
        change="entered_top",
        reasons=[Reason(component="harm", raw_value=10.0, data_date="2025-06-15", text="Harm")],
        ward_code=ward,
    )


async def read_events(
    resp: Any, want: int, timeout: float = 10.0
) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    kind = ""
    deadline = time.monotonic() + timeout
    while len(events) < want and time.monotonic() < deadline:
        line = (await asyncio.wait_for(resp.content.readline(), timeout)).decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[6:])))
    return events


async def test_live_updates_are_filtered_by_scope(env: Env) -> None:
    server, settings = env
    async with (
        session_for(server, "officer.centre") as centre,
        session_for(server, "officer.east") as east,
    ):
        centre_stream = await centre.get("/api/v1/live")
        east_stream = await east.get("/api/v1/live")
        assert centre_stream.headers["Content-Type"] == "text/event-stream"
        assert (await read_events(centre_stream, 1))[0][0] == "hello"
        assert (await read_events(east_stream, 1))[0][0] == "hello"
        await send(
            settings,
            [
                changed(EAST_CELL, WARD_EAST, 5),
                OfficerAlert(
                    occurred_at=utcnow(),
                    source="streams",
                    alert_id="al-east-1",
                    kind="harm_spike",
                    cell=EAST_CELL,
                    ward_code=WARD_EAST,
                    message="Harm spike in the east",
                ),
                changed(CENTRE_CELL, WARD_CENTRE, 1),
                OfficerAlert(
                    occurred_at=utcnow(),
                    source="streams",
                    alert_id="al-centre-1",
                    kind="near_repeat",
                    cell=CENTRE_CELL,
                    ward_code=None,  # addressed by cell only: scope comes from the cell's wards
                    message="Near-repeat burglary risk in the centre",
                ),
            ],
        )
        got_centre = await read_events(centre_stream, 2)
        got_east = await read_events(east_stream, 2)
        centre_stream.close()
        east_stream.close()
    assert sorted(k for k, _ in got_centre) == ["alert", "priority"]
    assert {e.get("cell") for _, e in got_centre} == {CENTRE_CELL}
    assert {e.get("cell") for _, e in got_east} == {EAST_CELL}
    alert = next(e for k, e in got_centre if k == "alert")
    assert alert["message"] == "Near-repeat burglary risk in the centre"


async def test_projection_counts_events_from_other_sources(env: Env) -> None:
    server, settings = env
    centre = Location(lat=53.74406, lng=-0.33280)
    async with session_for(server, "supervisor.hull") as sup:
        resp = await sup.send(
            "POST",
            "/api/v1/setups",
            json={
                "name": "Centre",
                "goal": "Sign-ups",
                "ward_codes": [WARD_CENTRE],
                "starts_on": utcnow().date().isoformat(),
                "ends_on": utcnow().date().isoformat(),
                "targets": {"registrations": 4},
            },
        )
        sid = (await resp.json())["setup_id"]
        knock = DoorKnocked(
            occurred_at=utcnow(),
            source="force-a",
            officer_id="gateway-officer-1",
            postcode="HU1 1AA",
            address_ref="Flat 2, 7",
            location=centre,
            outcome="declined",
            setup_id=sid,
        )
        registration = ResidentRegistered(
            occurred_at=utcnow(),
            source="public-web",
            resident_id="r-abcdefghijklmnop",
            location=centre,
            postcode="HU1 1AA",
            ward_code=WARD_CENTRE,
            local_authority_code="E06000010",
            channels=["email"],
            consent_version="v1",
            contact=EncryptedField(key_id="k-abcdefgh", nonce="n" * 16, ciphertext="sealed"),
        )
        survey = SurveyAnswered(
            occurred_at=utcnow(),
            source="public-web",
            resident_id="r-abcdefghijklmnop",
            wave="2026Q4",
            location=centre,
            confidence=4,
        )
        not_in = DoorKnocked(
            occurred_at=utcnow(),
            source="force-a",
            officer_id="gateway-officer-1",
            postcode="HU1 1DB",
            address_ref="3",
            location=Location(lat=53.74360, lng=-0.33365),
            outcome="no_answer",
        )
        await send(settings, [knock, knock, registration, survey, not_in])  # the knock twice
        pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=1)
        try:
            for _ in range(100):
                n = await pool.fetchval("SELECT count(*) FROM officer_area_activity")
                k = await pool.fetchval("SELECT count(*) FROM officer_doorknocks")
                if n == 2 and k == 2:
                    break
                await asyncio.sleep(0.1)
            assert (n, k) == (2, 2)  # duplicates counted once
        finally:
            await pool.close()
        report = await (await sup.get(f"/api/v1/setups/{sid}/report")).json()
        assert report["progress"]["registrations"] == {"done": 1, "target": 4, "percent": 25.0}
        assert report["progress"]["survey_responses"]["done"] == 1
        assert report["knocks"]["declined"] == 1
        doors = await (await sup.get(f"/api/v1/setups/{sid}/doors?revisit=1")).json()
        by_pc = {i["postcode"]: i for i in doors["items"]}
        assert by_pc["HU1 1AA"]["hidden"] == {"declined": 1}  # a refusal stands, even on revisit
        assert by_pc["HU1 1DB"]["hidden"] == {"not_in_today": 1}  # no answer today, any source


async def test_demo_accounts_only_in_demo_mode(isolated_settings: Settings) -> None:
    plain = officer_settings(isolated_settings)
    async with served(plain):
        pass
    pool = await asyncpg.create_pool(plain.dsn, min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SELECT count(*) FROM officer_accounts") == 0
        assert await pool.fetchval("SELECT count(*) FROM identity_contacts") == 0
        demo = officer_settings(isolated_settings, demo_mode=True)
        async with served(demo) as server:
            for username, _, role, *_ in DEMO_ACCOUNTS:
                async with server_login(server, username) as body:
                    assert body["account"]["role"] == role
        rows = await pool.fetch("SELECT role, demo FROM officer_accounts")
        assert sorted(r["role"] for r in rows) == sorted(r[2] for r in DEMO_ACCOUNTS)
        assert all(r["demo"] for r in rows)
        assert await pool.fetchval("SELECT count(*) FROM identity_contacts") == len(DEMO_CONTACTS)
    finally:
        await pool.close()
        await delete_topics(plain)


class server_login:
    def __init__(self, server: TestServer, username: str) -> None:
        self.server, self.username = server, username

    async def __aenter__(self) -> dict[str, Any]:
        import aiohttp

        self.http = aiohttp.ClientSession(base_url=str(self.server.make_url("")))
        resp = await self.http.post(
            "/api/v1/auth/login", json={"username": self.username, "password": DEMO_PASSWORD}
        )
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body

    async def __aexit__(self, *_: object) -> None:
        await self.http.close()


async def test_html_forms_need_the_csrf_token(env: Env) -> None:
    server, _ = env
    async with session_for(server, "supervisor.hull") as sup:
        form = {
            "name": "Forged",
            "goal": "x",
            "ward_codes": WARD_CENTRE,
            "starts_on": "2026-01-01",
            "ends_on": "2026-01-02",
        }
        resp = await sup.send("POST", "/officer/setups", csrf=False, data=form)
        assert resp.status == 403
        assert "CSRF" in await resp.text()
        resp = await sup.send(
            "POST",
            "/officer/setups",
            csrf=False,
            data={**form, "csrf_token": sup.csrf},
            allow_redirects=False,
        )
        assert resp.status == 303
        assert resp.headers["Location"].startswith("/officer/setups/su-")
        page = await sup.get("/officer/list?level=ward")
        assert page.status == 200
        page = await sup.get("/officer/reports")
        assert page.status == 200
        assert "Forged" in await page.text()  # the set-up's outcome row
        assert "Content-Security-Policy" in page.headers
    async with session_for(server, None) as anon:
        resp = await anon.get("/officer/setups", allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"].startswith("/officer/login")


async def test_open_live_streams_end_when_the_server_stops(isolated_settings: Settings) -> None:
    settings = officer_settings(isolated_settings)
    await seed(settings)
    async with served(settings) as server, session_for(server, "officer.centre") as officer:
        stream = await officer.get("/api/v1/live")
        assert (await read_events(stream, 1))[0][0] == "hello"
        started = time.monotonic()
        await server.close()
        rest = await asyncio.wait_for(stream.content.read(), 10)  # returns at the end
        assert rest.strip() == b""
        assert time.monotonic() - started < 10
    await delete_topics(settings)
