"""Who may post to the intake's door-knock endpoint (``POST /api/v1/doorknocks``), on the real
app, Kafka and PostgreSQL: a system with an API key, or a logged-in officer (CSRF token, own
area, the officer taken from the session). Anyone else gets 401, and nothing refused reaches
Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from api.officer.accounts import Account
from api.officer.auth import cookie_name
from lpt.settings import Settings
from schemas import decode
from schemas.engagement import DoorKnocked
from schemas.topics import DOORKNOCKS
from tests.test_officer_support import (
    TestServer,
    delete_topics,
    officer_settings,
    seed,
    served,
    session_for,
)
from tests.web_helpers import KEY_A, message_count, read_all

Env = tuple[TestServer, Settings, dict[str, Account]]
PATH = "/api/v1/doorknocks"


@pytest.fixture
async def env(isolated_settings: Settings) -> AsyncIterator[Env]:
    settings = officer_settings(isolated_settings)
    accounts = await seed(settings)
    async with served(settings) as server:
        yield server, settings, accounts
    await delete_topics(settings)


def knock(**kw: Any) -> dict[str, Any]:
    return {"postcode": "HU1 1AA", "outcome": "spoke", "address_ref": "12", **kw}


async def test_no_key_and_no_session_is_401_and_nothing_is_published(env: Env) -> None:
    server, settings, _ = env
    async with session_for(server, None) as anon:
        body = knock(officer_id="officer-0042")
        for headers in ({}, {"X-API-Key": "not-a-key"}, {"X-API-Key": ""}):
            resp = await anon.send("POST", PATH, csrf=False, json=body, headers=headers)
            assert resp.status == 401, headers
            assert "WWW-Authenticate" in resp.headers
        # A cookie that is not a live session is no login either.
        anon.http.cookie_jar.update_cookies({cookie_name(False): "forged"})
        resp = await anon.send("POST", PATH, csrf=False, json=body)
        assert resp.status == 401
        # 401 comes before validation: an anonymous caller learns nothing about the body.
        resp = await anon.send("POST", PATH, csrf=False, json={"outcome": "chatted"})
        assert resp.status == 401
    assert await message_count(settings, DOORKNOCKS) == 0


async def test_an_api_key_names_the_system_and_the_officer_in_the_body(env: Env) -> None:
    server, settings, _ = env
    async with session_for(server, "officer.centre") as officer:
        # A key wins over a session cookie sent with it: the caller is then that system.
        resp = await officer.send(
            "POST",
            PATH,
            csrf=False,
            json=knock(officer_id="officer-0042"),
            headers={"X-API-Key": KEY_A},
        )
        assert resp.status == 202, await resp.text()
    (record,) = await read_all(settings, DOORKNOCKS, 1)
    event = decode(record.value)
    assert isinstance(event, DoorKnocked)
    assert (event.source, event.officer_id) == ("force-a", "officer-0042")


async def test_a_logged_in_officer_knocks_as_themself_in_their_area(env: Env) -> None:
    server, settings, accounts = env
    me = accounts["officer.centre"].account_id
    async with session_for(server, "officer.centre") as officer:
        resp = await officer.send("POST", PATH, csrf=False, json=knock())
        assert (resp.status, (await resp.json())["field"]) == (403, "csrf_token")
        resp = await officer.send("POST", PATH, json=knock(officer_id="someone-else"))
        assert (resp.status, (await resp.json())["field"]) == (403, "officer_id")
        resp = await officer.send("POST", PATH, json=knock(postcode="HU11 4QA"))
        assert resp.status == 403  # East Riding: outside the officer's ward
        resp = await officer.send("POST", PATH, json=knock(outcome="chatted"))
        assert (resp.status, (await resp.json())["field"]) == (422, "outcome")
        resp = await officer.send("POST", PATH, json=knock())
        assert resp.status == 202, await resp.text()
        first = await resp.json()
        assert first["unlocated"] is False
        resp = await officer.send("POST", PATH, json=knock(officer_id=me, outcome="no_answer"))
        assert resp.status == 202
        assert (await resp.json())["hidden_until_end_of_day"] is True
    async with session_for(server, "analyst.hull") as analyst:  # analysts do not knock
        resp = await analyst.send("POST", PATH, json=knock())
        assert resp.status == 403

    records = await read_all(settings, DOORKNOCKS, 2)
    events = [decode(r.value) for r in records]
    assert len(events) == 2, "refused calls must publish nothing"
    assert all(isinstance(e, DoorKnocked) for e in events)
    assert {(e.officer_id, e.source) for e in events} == {(me, "officer-app")}  # type: ignore[attr-defined]
    assert str(events[0].event_id) == first["event_id"]
    # The app's own tables see the knocks at once (door lists, reports).
    conn = await asyncpg.connect(settings.dsn)
    try:
        rows = await conn.fetch("SELECT officer_id, outcome FROM officer_doorknocks ORDER BY 2")
    finally:
        await conn.close()
    assert [(r["officer_id"], r["outcome"]) for r in rows] == [(me, "no_answer"), (me, "spoke")]
