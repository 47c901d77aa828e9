"""Officer app access on the real app, Kafka and PostgreSQL: the role x area matrix, 401s,
CSRF, login throttling, cookies, audit rows for identified views and exports, an append-only
audit log, and the events the API publishes."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import asyncpg
import pytest

from api.officer.accounts import Account
from lpt.settings import Settings
from schemas import decode
from schemas.engagement import DoorKnocked
from schemas.notifications import NotificationRequested
from schemas.setups import SetupArchived, SetupCreated
from schemas.topics import DOORKNOCKS, NOTIFICATIONS_REQUESTED, SETUPS
from tests.test_officer_support import (
    ACCOUNTS,
    CENTRE_CELL,
    EAST_CELL,
    PASSWORD,
    WARD_CENTRE,
    WARD_EAST,
    TestServer,
    delete_topics,
    officer_settings,
    seed,
    served,
    session_for,
)
from tests.web_helpers import read_all

Env = tuple[TestServer, Settings, dict[str, Account], asyncpg.Pool]


@pytest.fixture
async def env(isolated_settings: Settings) -> AsyncIterator[Env]:
    settings = officer_settings(isolated_settings)
    accounts = await seed(settings)
    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=2)
    async with served(settings) as server:
        yield server, settings, accounts, pool
    await pool.close()
    await delete_topics(settings)


def setup_body(ward: str, name: str = "Summer door-knock") -> dict[str, Any]:
    today = date.today()
    return {
        "name": name,
        "goal": "Register 50 households and hear their priorities",
        "ward_codes": [ward],
        "starts_on": today.isoformat(),
        "ends_on": (today + timedelta(days=30)).isoformat(),
        "targets": {"doors": 100, "registrations": 50, "survey_responses": 20},
    }


async def add_contact(pool: asyncpg.Pool, contact_id: str, ward: str) -> None:
    await pool.execute(
        """INSERT INTO identity_contacts (contact_id, kind, name, email, ward_code,
               consent_given_at, consent_note, created_by)
           VALUES ($1, 'key_contact', 'Pat Example', 'pat@example.org', $2, now(),
                   'agreed at the residents meeting', 'seed')""",
        contact_id,
        ward,
    )


async def test_unauthenticated_requests_get_401(env: Env) -> None:
    server, _, _, _ = env
    async with session_for(server, None) as anon:
        for path in (
            "/api/v1/me",
            "/api/v1/priority?level=9",
            f"/api/v1/priority/9/{CENTRE_CELL}",
            "/api/v1/priority/geojson",
            "/api/v1/setups",
            "/api/v1/reports/activity",
            "/api/v1/contacts?reason=x",
            "/api/v1/replies",
            "/api/v1/audit",
            "/api/v1/accounts",
            "/api/v1/live",
        ):
            resp = await anon.get(path)
            assert resp.status == 401, path
        resp = await anon.send("POST", "/api/v1/setups", json=setup_body(WARD_CENTRE))
        assert resp.status == 401
        resp = await anon.get("/api/v1/openapi.json")
        assert resp.status == 200
        spec = await resp.json()
        assert "/api/v1/priority/{level}/{area_id}" in spec["paths"]
        assert "SetupIn" in spec["components"]["schemas"]


async def test_access_matrix(env: Env) -> None:
    server, _, _, pool = env
    await add_contact(pool, "kc-centre", WARD_CENTRE)
    await add_contact(pool, "kc-east", WARD_EAST)
    async with session_for(server, "admin") as admin:
        r = await admin.send("POST", "/api/v1/setups", json=setup_body(WARD_CENTRE, "Centre"))
        assert r.status == 201, await r.text()
        centre_setup = (await r.json())["setup_id"]
        r = await admin.send("POST", "/api/v1/setups", json=setup_body(WARD_EAST, "East"))
        east_setup = (await r.json())["setup_id"]

    checks: list[tuple[str, str, str, Any]] = [
        ("cell in", "GET", f"/api/v1/priority/9/{CENTRE_CELL}", None),
        ("cell out", "GET", f"/api/v1/priority/9/{EAST_CELL}", None),
        ("setup in", "GET", f"/api/v1/setups/{centre_setup}/report", None),
        ("setup out", "GET", f"/api/v1/setups/{east_setup}/report", None),
        ("doors in", "GET", f"/api/v1/setups/{centre_setup}/doors", None),
        ("doors out", "GET", f"/api/v1/setups/{east_setup}/doors", None),
        ("create in", "POST", "/api/v1/setups", setup_body(WARD_CENTRE)),
        ("create east", "POST", "/api/v1/setups", setup_body(WARD_EAST)),
        ("contact in", "GET", "/api/v1/contacts/kc-centre?reason=planning+a+meeting", None),
        ("contact east", "GET", "/api/v1/contacts/kc-east?reason=planning+a+meeting", None),
        ("audit", "GET", "/api/v1/audit", None),
        ("activity", "GET", "/api/v1/reports/activity", None),
        ("accounts", "GET", "/api/v1/accounts", None),
        ("replies", "GET", "/api/v1/replies", None),
    ]
    # Expected status per user, in the order of the checks above.
    expected: dict[str, list[int]] = {
        "officer.centre": [200, 403, 200, 403, 200, 403, 403, 403, 200, 403, 403, 403, 403, 200],
        "officer.east": [403, 200, 403, 200, 403, 200, 403, 403, 403, 200, 403, 403, 403, 200],
        "supervisor.hull": [200, 403, 200, 403, 200, 403, 201, 403, 200, 403, 200, 200, 403, 200],
        "supervisor.east": [403, 200, 403, 200, 403, 200, 403, 201, 403, 200, 200, 200, 403, 200],
        "analyst.hull": [200, 403, 200, 403, 403, 403, 403, 403, 403, 403, 403, 200, 403, 403],
        "admin": [200, 200, 200, 200, 200, 200, 201, 201, 200, 200, 200, 200, 200, 200],
    }
    assert set(expected) == set(ACCOUNTS)
    for username, statuses in expected.items():
        async with session_for(server, username) as user:
            for (label, method, path, body), want in zip(checks, statuses, strict=True):
                if method == "GET":
                    resp = await user.get(path)
                else:
                    resp = await user.send(method, path, json=body)
                assert resp.status == want, f"{username} {label}: {resp.status} {await resp.text()}"

    # Lists are filtered to the scope rather than refused.
    async with session_for(server, "officer.centre") as officer:
        cells = await (await officer.get("/api/v1/priority?level=9")).json()
        assert [c["id"] for c in cells["items"]] == [CENTRE_CELL]
        setups = await (await officer.get("/api/v1/setups")).json()
        assert {s["ward_codes"][0] for s in setups["items"]} == {WARD_CENTRE}
        contacts = await (await officer.get("/api/v1/contacts?reason=meeting")).json()
        assert [c["contact_id"] for c in contacts["items"]] == ["kc-centre"]
        features = await (await officer.get("/api/v1/priority/geojson?level=9")).json()
        assert [f["id"] for f in features["features"]] == [CENTRE_CELL]
        ring = features["features"][0]["geometry"]["coordinates"][0]
        assert len(ring) == 7 and ring[0] == ring[-1]


async def test_cell_detail_reasons_actions_trend(env: Env) -> None:
    server, _, _, _ = env
    async with session_for(server, "analyst.hull") as analyst:
        resp = await analyst.get(f"/api/v1/priority/9/{CENTRE_CELL}")
        body = await resp.json()
    assert body["rank"] == 1 and body["score"] == pytest.approx(0.82)
    assert body["reasons"][0]["text"].startswith("Crime harm of 1,234")
    assert any("400 m" in a for a in body["actions"])  # near-repeat advice follows the reason
    assert "Whitefriargate" in body["actions"][0] or "Whitefriargate" in " ".join(body["actions"])
    assert body["streets"][0] == "On or near Whitefriargate"
    assert [p["rank"] for p in body["trend"]] == [9, 3, 1]
    assert body["components"]["harm"]["raw"] == 1234.0


async def test_csrf_is_required_on_state_changes(env: Env) -> None:
    server, settings, _, _ = env
    async with session_for(server, "supervisor.hull") as sup:
        for headers in ({}, {"X-CSRF-Token": "forged"}):
            resp = await sup.send(
                "POST", "/api/v1/setups", csrf=False, json=setup_body(WARD_CENTRE), headers=headers
            )
            assert resp.status == 403
            assert (await resp.json())["field"] == "csrf_token"
        resp = await sup.send(
            "POST",
            "/api/v1/knocks",
            csrf=False,
            json={"postcode": "HU1 1AA", "outcome": "spoke", "address_ref": "1"},
        )
        assert resp.status == 403
        resp = await sup.send("POST", "/api/v1/setups", json=setup_body(WARD_CENTRE))
        assert resp.status == 201
    # Nothing reached Kafka from the refused calls: one set-up event only.
    records = await read_all(settings, SETUPS, 1)
    assert len(records) == 1


async def test_login_cookie_throttle_and_logout(env: Env, isolated_settings: Settings) -> None:
    server, _, _, _ = env
    async with session_for(server, None) as anon:
        for _ in range(5):
            resp = await anon.send(
                "POST",
                "/api/v1/auth/login",
                csrf=False,
                json={"username": "officer.east", "password": "wrong"},
            )
            assert resp.status == 401
        resp = await anon.send(
            "POST",
            "/api/v1/auth/login",
            csrf=False,
            json={"username": "officer.east", "password": PASSWORD},
        )
        assert resp.status == 429  # even the right password waits now
        assert int(resp.headers["Retry-After"]) > 0
        # A form post (what a cross-site page could send) is not a JSON login.
        resp = await anon.send(
            "POST",
            "/api/v1/auth/login",
            csrf=False,
            data={"username": "admin", "password": PASSWORD},
        )
        assert resp.status == 415

    async with session_for(server, "officer.centre") as officer:
        me = await (await officer.get("/api/v1/me")).json()
        assert me["account"]["role"] == "officer"
        resp = await officer.send("POST", "/api/v1/auth/logout")
        assert resp.status == 200
        assert (await officer.get("/api/v1/me")).status == 401

    # Cookie flags, with Secure on (the default outside demo mode).
    secure = dataclasses.replace(officer_settings(isolated_settings), cookie_secure=True)
    async with served(secure) as server2, session_for(server2, None) as anon:
        resp = await anon.send(
            "POST",
            "/api/v1/auth/login",
            csrf=False,
            json={"username": "admin", "password": PASSWORD},
        )
        assert resp.status == 200
        cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith("__Host-lpt_session=")
        for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
            assert flag in cookie


async def test_identified_views_and_exports_are_audited(env: Env) -> None:
    server, _, accounts, pool = env
    await add_contact(pool, "kc-centre", WARD_CENTRE)
    async with session_for(server, "officer.centre") as officer:
        resp = await officer.get("/api/v1/contacts/kc-centre")
        assert resp.status == 422 and (await resp.json())["field"] == "reason"
        assert await pool.fetchval("SELECT count(*) FROM officer_audit_log") == 0
        resp = await officer.get("/api/v1/contacts/kc-centre?reason=arranging+a+PACT+meeting")
        assert resp.status == 200
        assert (await resp.json())["email"] == "pat@example.org"
        resp = await officer.get("/api/v1/contacts?reason=street+briefing")
        assert resp.status == 200
    async with session_for(server, "supervisor.hull") as sup:
        resp = await sup.get("/api/v1/reports/activity?format=csv")
        assert resp.status == 422  # an export needs a reason
        resp = await sup.get("/api/v1/reports/activity?format=csv&by=day&reason=monthly+review")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/csv")
        assert (await resp.text()).startswith("period,team,ward_code,knocks")
        log = await (await sup.get("/api/v1/audit")).json()
    rows = await pool.fetch("SELECT * FROM officer_audit_log ORDER BY audit_id")
    assert [(r["username"], r["action"], r["subject_kind"], r["reason"]) for r in rows] == [
        ("officer.centre", "view", "community_contact", "arranging a PACT meeting"),
        ("officer.centre", "view", "community_contact", "street briefing"),
        ("supervisor.hull", "export", "activity_report_csv", "monthly review"),
    ]
    assert rows[0]["subject_ids"] == ["kc-centre"]
    assert rows[0]["account_id"] == accounts["officer.centre"].account_id
    # The supervisor (Hull) reads the log of Hull accounts, including the officer's views.
    assert {e["username"] for e in log["items"]} == {"officer.centre", "supervisor.hull"}


async def test_audit_log_is_append_only(env: Env) -> None:
    _, settings, accounts, pool = env
    from api.officer import audit

    await audit.record(pool, accounts["admin"], "view", "community_contact", ["kc-1"], "test")
    conn = await asyncpg.connect(settings.dsn)
    try:
        for sql in (
            "UPDATE officer_audit_log SET reason = 'changed'",
            "DELETE FROM officer_audit_log",
            "TRUNCATE officer_audit_log",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(sql)
    finally:
        await conn.close()
    assert await pool.fetchval("SELECT reason FROM officer_audit_log") == "test"


async def test_setup_lifecycle_knocks_and_feedback_publish_events(env: Env) -> None:
    server, settings, accounts, _ = env
    async with session_for(server, "supervisor.hull") as sup:
        resp = await sup.send("POST", "/api/v1/setups", json=setup_body(WARD_CENTRE))
        setup = await resp.json()
        sid = setup["setup_id"]
        assert setup["targets"]["doors"] == 100
        bad = setup_body(WARD_CENTRE)
        bad["ends_on"] = "2000-01-01"
        resp = await sup.send("POST", "/api/v1/setups", json=bad)
        assert resp.status == 422 and (await resp.json())["field"] == "ends_on"

    async with session_for(server, "officer.centre") as officer:
        knock = {"postcode": "hu1 1aa", "address_ref": "12", "outcome": "spoke", "setup_id": sid}
        resp = await officer.send("POST", "/api/v1/knocks", json=knock)
        assert resp.status == 202, await resp.text()
        not_in = {
            "postcode": "HU1 1DB",
            "address_ref": "3",
            "outcome": "no_answer",
            "setup_id": sid,
        }
        resp = await officer.send("POST", "/api/v1/knocks", json=not_in)
        assert (await resp.json())["hidden_until_end_of_day"] is True
        resp = await officer.send(
            "POST", "/api/v1/knocks", json={"postcode": "HU11 4QA", "outcome": "spoke"}
        )
        assert resp.status == 403  # outside the officer's ward
        doors = await (await officer.get(f"/api/v1/setups/{sid}/doors")).json()
        resp = await officer.send(
            "POST",
            "/api/v1/feedback",
            json={
                "subject": "You said, we did",
                "body": "Patrols on Whitefriargate.",
                "ward_codes": [WARD_CENTRE],
            },
        )
        assert resp.status == 202
        resp = await officer.send(
            "POST",
            "/api/v1/feedback",
            json={"subject": "x", "body": "y", "ward_codes": [WARD_EAST]},
        )
        assert resp.status == 403

    by_pc = {i["postcode"]: i for i in doors["items"]}
    assert by_pc["HU1 1AA"]["rank"] == 1  # the top-ranked cell's postcodes come first
    assert doors["items"][0]["cell"] == CENTRE_CELL
    assert by_pc["HU1 1AA"]["hidden"] == {"recently_visited": 1}
    assert by_pc["HU1 1DB"]["hidden"] == {"not_in_today": 1}
    async with session_for(server, "supervisor.hull") as sup:
        doors = await (await sup.get(f"/api/v1/setups/{sid}/doors?revisit=1")).json()
        by_pc = {i["postcode"]: i for i in doors["items"]}
        assert [d["address_ref"] for d in by_pc["HU1 1AA"]["doors"]] == ["12"]
        assert by_pc["HU1 1DB"]["hidden"] == {"not_in_today": 1}  # for everyone, all day

        report = await (await sup.get(f"/api/v1/setups/{sid}/report")).json()
        assert report["progress"]["doors_knocked"] == {"done": 2, "target": 100, "percent": 2.0}
        resp = await sup.send("POST", f"/api/v1/setups/{sid}/archive")
        assert resp.status == 200 and (await resp.json())["archived"] is True
        resp = await sup.send("PATCH", f"/api/v1/setups/{sid}", json={"name": "Renamed"})
        assert resp.status == 409
        resp = await sup.send("POST", f"/api/v1/setups/{sid}/archive")
        assert resp.status == 409
        resp = await sup.send(
            "POST",
            "/api/v1/knocks",
            json={"postcode": "HU1 1AA", "outcome": "spoke", "setup_id": sid},
        )
        assert resp.status == 409
        report = await (await sup.get(f"/api/v1/setups/{sid}/report")).json()
        assert report["archived"] is True
        assert report["progress"]["doors_knocked"]["done"] == 2
        activity = await (await sup.get("/api/v1/reports/activity?by=day")).json()
        outcome = next(o for o in activity["setups"] if o["setup_id"] == sid)
        assert outcome["archived"] is True
        assert outcome["doors_knocked"] == {"done": 2, "target": 100, "percent": 2.0}
        teams = {r["team"] for r in activity["rows"] if r["knocks"]}
        assert teams == {"Hull Central"}  # the officer's knocks, counted for the officer's team

    setup_events = [decode(r.value) for r in await read_all(settings, SETUPS, 2)]
    assert [type(e) for e in setup_events] == [SetupCreated, SetupArchived]
    created = setup_events[0]
    assert isinstance(created, SetupCreated)
    assert created.created_by == accounts["supervisor.hull"].account_id
    assert created.ward_codes == [WARD_CENTRE]
    knocks = [decode(r.value) for r in await read_all(settings, DOORKNOCKS, 2)]
    assert all(isinstance(k, DoorKnocked) for k in knocks)
    assert {k.officer_id for k in knocks} == {accounts["officer.centre"].account_id}  # type: ignore[union-attr]
    assert sorted(k.outcome for k in knocks) == ["no_answer", "spoke"]  # type: ignore[union-attr]
    notes = [decode(r.value) for r in await read_all(settings, NOTIFICATIONS_REQUESTED, 1)]
    assert len(notes) == 1 and isinstance(notes[0], NotificationRequested)
    assert notes[0].kind == "you_said_we_did"
    assert notes[0].audience.ward_codes == [WARD_CENTRE]
    assert notes[0].sender == accounts["officer.centre"].account_id
