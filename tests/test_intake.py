"""Intake of registrations, survey answers, door knocks, opt-outs and erasures (real servers)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import h3
import pytest
from aiohttp.test_utils import TestClient
from pydantic import ValidationError

from identity.crypto import load_master_key
from identity.vault import IdentityVault, KeyShredded
from lpt.settings import Settings
from producers.intake import Registration
from schemas import decode
from schemas.engagement import DoorKnocked, SurveyAnswered
from schemas.residents import ResidentErasureRequested, ResidentOptedOut, ResidentRegistered
from schemas.topics import DOORKNOCKS, RESIDENTS, SURVEYS
from tests.web_helpers import KEY_A, message_count, read_all, running_app, web_settings

# Real postcodes (NSPL May 2025): HU1 1AA has coordinates, HU7 9AA has none.
LOCATED = ("HU1 1AA", 53.74406, -0.33280, "E05001677", "E06000010")
UNLOCATED = ("HU7 9AA", None, None, None, "E06000010")
EMAIL = "alice.example@example.org"
PHONE = "07700 900123"
NAME = "Alice Example"


async def add_reference_postcodes(dsn: str) -> None:
    """The few reference rows the tests need (loading the whole reference set is not)."""
    conn = await asyncpg.connect(dsn)
    try:
        for pc, lat, lng, ward, la in (LOCATED, UNLOCATED):
            cell = h3.latlng_to_cell(lat, lng, 10) if lat is not None else None
            await conn.execute(
                """INSERT INTO ref_postcodes
                       (postcode, lat, lng, cell, unlocated, ward_code, local_authority_code)
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (postcode) DO NOTHING""",
                pc,
                lat,
                lng,
                cell,
                lat is None,
                ward,
                la,
            )
    finally:
        await conn.close()


Env = tuple[TestClient[Any, Any], Settings, IdentityVault, asyncpg.Pool]


@pytest.fixture
async def env(isolated_settings: Settings) -> AsyncIterator[Env]:
    settings = web_settings(isolated_settings)
    await add_reference_postcodes(settings.dsn)
    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=2)
    async with running_app(settings) as client:
        vault = IdentityVault(pool, load_master_key(settings.master_key_file))
        yield client, settings, vault, pool
    await pool.close()


def registration(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "postcode": "hu1 1aa",
        "channels": ["email", "sms"],
        "consent_version": "2026-01",
        "email": EMAIL,
        "phone": PHONE,
        "name": NAME,
        "address": "1 Example Street",
        "age_band": "35-49",
    }
    body.update(fields)
    return body


async def register(client: TestClient[Any, Any], **fields: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/residents", json=registration(**fields))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def test_unknown_or_malformed_postcode_is_refused_naming_postcode(env: Env) -> None:
    client, settings, _, pool = env
    for postcode in ("ZZ9 9ZZ", "not a postcode"):
        resp = await client.post("/api/v1/residents", json=registration(postcode=postcode))
        assert resp.status == 422
        body = await resp.json()
        assert body["field"] == "postcode"
        assert postcode not in json.dumps(body)
    assert await pool.fetchval("SELECT count(*) FROM identity_people") == 0
    assert await message_count(settings, RESIDENTS) == 0


def test_registration_model_names_the_missing_detail() -> None:
    with pytest.raises(ValidationError) as err:
        Registration(postcode="HU1 1AA", channels=["email"], consent_version="v1", phone=PHONE)
    assert [e["loc"] for e in err.value.errors()] == [("email",)]
    with pytest.raises(ValidationError) as err:
        Registration(postcode="HU1 1AA", channels=["push"], consent_version="v1")
    assert [e["loc"] for e in err.value.errors()] == [("phone",)]


async def test_registration_seals_contact_and_keeps_identity_in_the_vault(env: Env) -> None:
    client, settings, vault, pool = env
    body = await register(client)
    assert set(body) == {"resident_id", "event_id", "unlocated"}  # nothing personal echoed
    assert body["resident_id"].startswith("r-") and body["unlocated"] is False

    [record] = await read_all(settings, RESIDENTS, 1)
    for secret in (EMAIL, NAME, "07700900123", "Example Street"):
        assert secret.encode() not in record.value
    event = decode(record.value)
    assert isinstance(event, ResidentRegistered)
    assert event.resident_id == body["resident_id"] and str(event.event_id) == body["event_id"]
    assert event.location is not None
    assert event.location.cell == h3.latlng_to_cell(LOCATED[1], LOCATED[2], 10)
    assert (event.postcode, event.ward_code) == ("HU1 1AA", "E05001677")
    assert json.loads(await vault.unseal(event.contact)) == {
        "email": EMAIL,
        "name": NAME,
        "phone": "07700900123",
    }
    row = await pool.fetchrow(
        "SELECT * FROM identity_people WHERE resident_id = $1", event.resident_id
    )
    assert (row["email"], row["postcode"], row["cell"]) == (EMAIL, "HU1 1AA", event.location.cell)

    # The same e-mail again: refused naming the field, nothing published.
    resp = await client.post("/api/v1/residents", json=registration(email=EMAIL.upper()))
    assert (resp.status, (await resp.json())["field"]) == (409, "email")
    assert await message_count(settings, RESIDENTS) == 1


async def test_postcode_without_coordinates_is_accepted_and_flagged(env: Env) -> None:
    client, settings, _, pool = env
    body = await register(client, postcode="HU79AA", channels=["email"], phone=None)
    assert body["unlocated"] is True
    [record] = await read_all(settings, RESIDENTS, 1)
    event = decode(record.value)
    assert isinstance(event, ResidentRegistered)
    assert event.unlocated is True and event.location is None and event.postcode == "HU7 9AA"
    assert record.key == body["resident_id"].encode()  # keyed by resident when unlocated
    row = await pool.fetchrow(
        "SELECT unlocated, cell FROM identity_people WHERE resident_id = $1", body["resident_id"]
    )
    assert (row["unlocated"], row["cell"]) == (True, None)


async def test_survey_answer_seals_concern_and_uses_the_resident_cell(env: Env) -> None:
    client, settings, vault, _ = env
    rid = (await register(client))["resident_id"]
    concern = "Cars racing on Example Street every night"
    resp = await client.post(
        "/api/v1/surveys/answers",
        json={
            "resident_id": rid,
            "confidence": 2,
            "priorities": ["speeding_and_road_safety", "anti_social_behaviour"],
            "concern": concern,
            "wave": "2026Q1",
        },
    )
    assert resp.status == 202, await resp.text()
    [record] = await read_all(settings, SURVEYS, 1)
    assert concern.encode() not in record.value
    event = decode(record.value)
    assert isinstance(event, SurveyAnswered)
    assert event.location is not None
    assert event.location.cell == h3.latlng_to_cell(LOCATED[1], LOCATED[2], 10)
    assert event.concern is not None and await vault.unseal(event.concern) == concern

    bad = await client.post("/api/v1/surveys/answers", json={"resident_id": rid, "confidence": 9})
    assert (bad.status, (await bad.json())["field"]) == (422, "confidence")
    unknown = await client.post(
        "/api/v1/surveys/answers", json={"resident_id": "r-doesnotexist", "confidence": 3}
    )
    assert (unknown.status, (await unknown.json())["field"]) == (404, "resident_id")


async def test_opt_out_takes_effect_immediately(env: Env) -> None:
    client, settings, _, pool = env
    rid = (await register(client))["resident_id"]
    resp = await client.post(f"/api/v1/residents/{rid}/opt-out")
    assert resp.status == 200
    body = await resp.json()
    # Already in the identity store when the call returns: every sender checks it.
    opted = await pool.fetchval(
        "SELECT opted_out_at FROM identity_people WHERE resident_id = $1", rid
    )
    assert opted is not None and opted.isoformat() == body["opted_out_at"]

    records = await read_all(settings, RESIDENTS, 2)
    events = [decode(r.value) for r in records]
    opted_out = [e for e in events if isinstance(e, ResidentOptedOut)]
    assert len(opted_out) == 1 and str(opted_out[0].event_id) == body["event_id"]
    assert len({r.partition for r in records}) == 1  # same cell key as the registration

    again = await client.post(f"/api/v1/residents/{rid}/opt-out", json={"reason": "other"})
    assert (await again.json())["event_id"] == body["event_id"]  # same event id on a retry
    survey = await client.post(
        "/api/v1/surveys/answers", json={"resident_id": rid, "confidence": 4}
    )
    assert survey.status == 409
    missing = await client.post("/api/v1/residents/r-nobody12345/opt-out")
    assert missing.status == 404


async def test_erasure_shreds_key_and_identity_row(env: Env) -> None:
    client, settings, vault, pool = env
    rid = (await register(client))["resident_id"]
    other = (await register(client, email="bob@example.org", phone="07700900456"))["resident_id"]
    await client.post(
        "/api/v1/surveys/answers",
        json={"resident_id": rid, "confidence": 3, "concern": "Drug dealing by the park"},
    )
    registered = {
        e.resident_id: e
        for e in (decode(r.value) for r in await read_all(settings, RESIDENTS, 2))
        if isinstance(e, ResidentRegistered)
    }
    [survey_record] = await read_all(settings, SURVEYS, 1)
    survey = decode(survey_record.value)
    assert isinstance(survey, SurveyAnswered) and survey.concern is not None
    assert await vault.unseal(registered[rid].contact)  # readable before

    resp = await client.post(f"/api/v1/residents/{rid}/erasure")
    assert resp.status == 200
    body = await resp.json()
    assert body["erased"] is True

    with pytest.raises(KeyShredded):
        await vault.unseal(registered[rid].contact)
    with pytest.raises(KeyShredded):
        await vault.unseal(survey.concern)
    assert (
        await pool.fetchval("SELECT count(*) FROM identity_people WHERE resident_id = $1", rid) == 0
    )
    assert (
        await pool.fetchval("SELECT count(*) FROM identity_keys WHERE resident_id = $1", rid) == 0
    )
    assert await pool.fetchval(
        "SELECT completed_at IS NOT NULL FROM identity_erasures WHERE resident_id = $1", rid
    )
    # Nobody else is touched.
    assert json.loads(await vault.unseal(registered[other].contact))["email"] == "bob@example.org"

    erasures = [
        e
        for e in (decode(r.value) for r in await read_all(settings, RESIDENTS, 3))
        if isinstance(e, ResidentErasureRequested)
    ]
    assert [str(e.event_id) for e in erasures] == [body["event_id"]]
    again = await client.post(f"/api/v1/residents/{rid}/erasure")
    assert (again.status, (await again.json())["event_id"]) == (200, body["event_id"])
    survey_after = await client.post(
        "/api/v1/surveys/answers", json={"resident_id": rid, "confidence": 3}
    )
    assert survey_after.status == 404
    missing = await client.post("/api/v1/residents/r-nobody12345/erasure")
    assert missing.status == 404


async def test_door_knock_needs_a_key_and_is_located_by_postcode(env: Env) -> None:
    client, settings, _, _ = env
    knock = {"officer_id": "officer-0042", "postcode": "HU1 1AA", "outcome": "spoke"}
    assert (await client.post("/api/v1/doorknocks", json=knock)).status == 401
    resp = await client.post("/api/v1/doorknocks", json=knock, headers={"X-API-Key": KEY_A})
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["unlocated"] is False
    resp = await client.post(
        "/api/v1/doorknocks",
        json=knock | {"postcode": "HU7 9AA", "outcome": "leaflet_left"},
        headers={"X-API-Key": KEY_A},
    )
    assert (await resp.json())["unlocated"] is True
    resp = await client.post(
        "/api/v1/doorknocks", json=knock | {"postcode": "ZZ9 9ZZ"}, headers={"X-API-Key": KEY_A}
    )
    assert (resp.status, (await resp.json())["field"]) == (422, "postcode")
    resp = await client.post(
        "/api/v1/doorknocks", json=knock | {"outcome": "chatted"}, headers={"X-API-Key": KEY_A}
    )
    assert (resp.status, (await resp.json())["field"]) == (422, "outcome")

    events = [decode(r.value) for r in await read_all(settings, DOORKNOCKS, 2)]
    assert len(events) == 2 and all(isinstance(e, DoorKnocked) for e in events)
    by_pc = {e.postcode: e for e in events}  # type: ignore[attr-defined]
    assert by_pc["HU1 1AA"].location is not None and by_pc["HU7 9AA"].location is None
    assert {e.source for e in events} == {"force-a"}


async def test_python_producer_api(isolated_settings: Settings) -> None:
    """The API the public pages and officer app call directly, without HTTP."""
    from producers.intake import DoorKnockReport, UnknownPostcode, open_intake

    settings = web_settings(isolated_settings)
    await add_reference_postcodes(settings.dsn)
    async with open_intake(settings) as intake:
        done = await intake.register_resident(
            Registration(postcode="HU7 9AA", channels=["sms"], consent_version="v1", phone=PHONE)
        )
        assert done.unlocated and done.cell is None and done.postcode == "HU7 9AA"
        person = await intake.vault.get_person(done.resident_id)
        assert person is not None and person.details.phone == "07700900123"
        with pytest.raises(UnknownPostcode) as err:
            await intake.record_door_knock(
                DoorKnockReport(officer_id="officer-0042", postcode="ZZ9 9ZZ", outcome="spoke")
            )
        assert err.value.field == "postcode" and err.value.status == 422
    assert await message_count(settings, RESIDENTS) == 1
