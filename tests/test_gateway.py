"""The HTTP ingest gateway on real Kafka and PostgreSQL: auth, validation, idempotency, limits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from lpt.settings import Settings
from schemas import decode
from schemas.crime import CrimeReported
from schemas.envelope import deterministic_id
from schemas.topics import CRIME
from tests.web_helpers import KEY_A, KEY_B, message_count, read_all, running_app, web_settings

URL = "/api/v1/ingest/events"
HULL = {"lat": 53.7445, "lng": -0.3328}
DARLINGTON = {"lat": 54.5236, "lng": -1.5595}


def crime(incident: str = "HP-1", version: int = 1, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "crime.reported" if version == 1 else "crime.updated",
        "incident_id": incident,
        "version": version,
        "crime_type": "Burglary",
        "reported_by": "Humberside Police",
        "falls_within": "Humberside Police",
        "occurred_at": "2026-03-01T10:00:00Z",
        "location": HULL,
        "location_text": "On or near Jameson Street",
    }
    event.update(fields)
    return event


@pytest.fixture
async def gateway(
    isolated_settings: Settings,
) -> AsyncIterator[tuple[TestClient[Any, Any], Settings]]:
    settings = web_settings(isolated_settings, max_batch_events=5, max_request_bytes=16_384)
    async with running_app(settings) as client:
        yield client, settings


async def test_no_key_or_wrong_key_is_401_and_publishes_nothing(gateway: Any) -> None:
    client, settings = gateway
    resp = await client.post(URL, json=crime())
    assert resp.status == 401
    body = await resp.json()
    assert "X-API-Key" in body["error"] and body["status"] == 401
    assert "X-API-Key" in resp.headers["WWW-Authenticate"]

    resp = await client.post(URL, json=crime(), headers={"X-API-Key": KEY_A + "x"})
    assert resp.status == 401
    assert (await resp.json())["error"] == "X-API-Key is not valid"
    assert await message_count(settings, CRIME) == 0


async def test_validation_errors_name_field_and_index(gateway: Any) -> None:
    client, settings = gateway
    batch = [
        crime("HP-1"),
        crime("HP-2", crime_type="Jaywalking"),
        {k: v for k, v in crime("HP-3").items() if k != "incident_id"},
        crime("HP-4", location={"lat": 95.0, "lng": 0.0}),
    ]
    resp = await client.post(URL, json={"events": batch}, headers={"X-API-Key": KEY_A})
    assert resp.status == 422
    body = await resp.json()
    assert body["index"] == 1 and body["field"] == "crime_type"
    assert "nothing was published" in body["error"]
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "crime_type"),
        (2, "incident_id"),
        (3, "location.lat"),
    ]
    assert "Jaywalking" not in json.dumps(body)  # errors never echo submitted values
    assert await message_count(settings, CRIME) == 0  # all or nothing


async def test_only_crime_events_from_force_systems(gateway: Any) -> None:
    client, _ = gateway
    resp = await client.post(
        URL,
        json={"events": [crime(), {"type": "resident.opted_out", "resident_id": "r-12345678"}]},
        headers={"X-API-Key": KEY_A},
    )
    assert resp.status == 422
    body = await resp.json()
    assert (body["index"], body["field"]) == (1, "type")


async def test_malformed_json_and_wrong_shape(gateway: Any) -> None:
    client, _ = gateway
    resp = await client.post(
        URL, data=b"{not json", headers={"X-API-Key": KEY_A, "Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert "not valid JSON" in (await resp.json())["error"]
    resp = await client.post(URL, json=[crime()], headers={"X-API-Key": KEY_A})
    assert resp.status == 422
    resp = await client.post(URL, json={"events": []}, headers={"X-API-Key": KEY_A})
    assert (resp.status, (await resp.json())["field"]) == (422, "events")


async def test_accepted_events_get_ids_and_land_on_the_crime_topic(gateway: Any) -> None:
    client, settings = gateway
    batch = [
        crime("HP-10", source="spoofed-system"),
        crime("HP-11", location=DARLINGTON, in_force_area=True),
        {k: v for k, v in crime("HP-12").items() if k != "location"},
    ]
    resp = await client.post(URL, json={"events": batch}, headers={"X-API-Key": KEY_A})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    expected = [str(deterministic_id("force-a", f"HP-{n}", "1")) for n in (10, 11, 12)]
    assert [e["event_id"] for e in body["events"]] == expected
    assert body["accepted"] == 3 and body["duplicates"] == 0
    assert not any(e["duplicate"] for e in body["events"])

    records = await read_all(settings, CRIME, 3)
    events = {str(e.event_id): e for e in (decode(r.value) for r in records)}
    assert set(events) == set(expected)
    assert all(isinstance(e, CrimeReported) for e in events.values())
    assert {e.source for e in events.values()} == {"force-a"}  # from the key, not the body
    in_area = {e.incident_id: e.in_force_area for e in events.values()}  # type: ignore[attr-defined]
    assert in_area == {"HP-10": True, "HP-11": False, "HP-12": True}

    # A single event (not a batch) gets the same treatment and a top-level id.
    resp = await client.post(URL, json=crime("HP-13"), headers={"X-API-Key": KEY_A})
    assert resp.status == 202
    assert (await resp.json())["event_id"] == str(deterministic_id("force-a", "HP-13", "1"))


async def test_repost_is_idempotent_and_publishes_nothing(gateway: Any) -> None:
    client, settings = gateway
    batch = [crime("HP-20"), crime("HP-21"), crime("HP-20")]  # a repeat inside the batch too
    first = await client.post(URL, json={"events": batch}, headers={"X-API-Key": KEY_A})
    assert first.status == 202
    first_body = await first.json()
    assert [e["duplicate"] for e in first_body["events"]] == [False, False, True]
    assert await message_count(settings, CRIME) == 2

    again = await client.post(URL, json={"events": batch}, headers={"X-API-Key": KEY_A})
    assert again.status == 202
    again_body = await again.json()
    assert [e["event_id"] for e in again_body["events"]] == [
        e["event_id"] for e in first_body["events"]
    ]
    assert [e["duplicate"] for e in again_body["events"]] == [True, True, True]
    assert again_body["accepted"] == 0
    assert await message_count(settings, CRIME) == 2  # end offsets did not move

    # A new version of the incident, and the same incident id from another system, are new.
    resp = await client.post(URL, json=crime("HP-20", version=2), headers={"X-API-Key": KEY_A})
    assert (await resp.json())["duplicate"] is False
    resp = await client.post(URL, json=crime("HP-20"), headers={"X-API-Key": KEY_B})
    assert (await resp.json())["event_id"] == str(deterministic_id("force-b", "HP-20", "1"))
    assert await message_count(settings, CRIME) == 4

    conn = await asyncpg.connect(settings.dsn)
    try:
        sources = await conn.fetch(
            "SELECT source, count(*) AS n FROM ingest_ledger GROUP BY source ORDER BY source"
        )
    finally:
        await conn.close()
    assert [(r["source"], r["n"]) for r in sources] == [("force-a", 3), ("force-b", 1)]


async def test_batch_limit(gateway: Any) -> None:
    client, settings = gateway
    batch = [crime(f"HP-{n}") for n in range(6)]  # the fixture allows 5
    resp = await client.post(URL, json={"events": batch}, headers={"X-API-Key": KEY_A})
    assert resp.status == 413
    body = await resp.json()
    assert body["field"] == "events" and body["max_events"] == 5
    assert await message_count(settings, CRIME) == 0


async def test_request_size_limit(gateway: Any) -> None:
    client, settings = gateway
    big = crime("HP-1", context="x" * 1900)
    payload = json.dumps({"events": [big] * 5} | {"pad": "y" * 8000}).encode()
    assert len(payload) > settings.max_request_bytes
    resp = await client.post(
        URL, data=payload, headers={"X-API-Key": KEY_A, "Content-Type": "application/json"}
    )
    assert resp.status == 413
    body = await resp.json()
    assert str(settings.max_request_bytes) in body["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: aiohttp's own limit
        for i in range(0, len(payload), 4096):
            yield payload[i : i + 4096]

    resp = await client.post(
        URL, data=chunks(), headers={"X-API-Key": KEY_A, "Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert (await resp.json())["max_bytes"] == settings.max_request_bytes
    assert await message_count(settings, CRIME) == 0


async def test_a_failed_publish_is_503_and_the_retry_is_not_a_duplicate(
    gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka fails mid-request: 503, and the idempotency ledger must not keep the event ids
    (else the retry would be answered "duplicate" and the events never published)."""
    from aiokafka.errors import KafkaConnectionError

    import api.ingest

    client, settings = gateway
    real = api.ingest.publish_raw

    async def bus_away(*args: Any, **kwargs: Any) -> None:
        raise KafkaConnectionError("broker away")

    monkeypatch.setattr(api.ingest, "publish_raw", bus_away)
    batch = [crime("HP-503-1"), crime("HP-503-2")]
    resp = await client.post(URL, json={"events": batch}, headers={"X-API-Key": KEY_A})
    assert resp.status == 503
    assert "send it again" in (await resp.json())["error"]

    monkeypatch.setattr(api.ingest, "publish_raw", real)
    resp = await client.post(URL, json={"events": batch}, headers={"X-API-Key": KEY_A})
    assert resp.status == 202
    body = await resp.json()
    assert body["accepted"] == 2 and body["duplicates"] == 0
    assert await message_count(settings, CRIME) == 2
