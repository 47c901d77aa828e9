"""Every event model round-trips through the Kafka codec and rejects bad fields by name."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas import InvalidEvent, decode, encode, parse_event
from schemas.registry import MODEL_BY_TYPE, json_schemas
from schemas.topics import ALL_TOPICS, TOPIC_FOR_TYPE, event_key

T = "2026-11-01T12:00:00Z"
ENC = {"key_id": "k-12345678", "nonce": "AAAAAAAAAAAAAAAAAAAAAA==", "ciphertext": "c2VjcmV0"}
LOC = {"lat": 53.7445, "lng": -0.3328}

VALID: dict[str, dict[str, Any]] = {
    "crime.reported": {
        "incident_id": "HP-1",
        "crime_type": "Burglary",
        "reported_by": "Humberside Police",
        "falls_within": "Humberside Police",
        "location": LOC,
        "location_text": "On or near High St",
        "lsoa_code": "E01012756",
        "lsoa_vintage": 2011,
        "month": "2026-10",
    },
    "crime.updated": {
        "incident_id": "HP-1",
        "version": 2,
        "crime_type": "Robbery",
        "reported_by": "Humberside Police",
        "falls_within": "Humberside Police",
        "outcome": "Under investigation",
    },
    "resident.registered": {
        "resident_id": "r-abcdef12",
        "postcode": "HU1 1AA",
        "location": LOC,
        "channels": ["email"],
        "contact": ENC,
        "consent_version": "2026-01",
        "age_band": "25-34",
    },
    "resident.updated": {"resident_id": "r-abcdef12", "channels": ["sms"]},
    "resident.opted_out": {"resident_id": "r-abcdef12"},
    "resident.erasure_requested": {"resident_id": "r-abcdef12"},
    "survey.answered": {
        "resident_id": "r-abcdef12",
        "wave": "2026Q4",
        "confidence": 4,
        "priorities": ["burglary", "drugs"],
        "concern": ENC,
        "wants_contact": True,
        "location": LOC,
    },
    "doorknock.recorded": {"officer_id": "o-12345678", "postcode": "HU1 1AA", "outcome": "spoke"},
    "setup.created": {
        "setup_id": "s1",
        "name": "Newington",
        "goal": "Register 200 households",
        "ward_codes": ["E05001677"],
        "starts_on": "2026-11-01",
        "ends_on": "2026-12-01",
        "created_by": "sup-1",
    },
    "setup.updated": {"setup_id": "s1", "goal": "Register 250 households"},
    "setup.archived": {"setup_id": "s1", "archived_by": "sup-1"},
    "priority.changed": {
        "cell": "89194047637ffff",
        "resolution": 9,
        "score_before": 0.2,
        "score_after": 0.9,
        "rank": 3,
        "cells_ranked": 400,
        "change": "entered_top",
        "reasons": [{"component": "harm", "raw_value": 300.0, "data_date": "2026-10-15"}],
    },
    "officer.alert": {
        "alert_id": "a1",
        "kind": "near_repeat",
        "cell": "89194047637ffff",
        "message": "Burglary nearby: visible patrols within 400 m for two weeks",
    },
    "notification.requested": {
        "notification_id": "n1",
        "kind": "you_said_we_did",
        "audience": {"ward_codes": ["E05001677"]},
        "subject": "You said, we did",
        "body": "We patrolled High St",
        "sender": "o-12345678",
    },
    "notification.sent": {
        "notification_id": "n1",
        "resident_id": "r-abcdef12",
        "channel": "email",
        "status": "sent",
    },
    "reply.received": {
        "reply_id": "rp1",
        "notification_id": "n1",
        "resident_id": "r-abcdef12",
        "body": ENC,
    },
}

# One bad field per type, and the field the error must name.
BAD: dict[str, tuple[str, Any]] = {
    "crime.reported": ("crime_type", "Jaywalking"),
    "crime.updated": ("version", 0),
    "resident.registered": ("channels", []),
    "resident.updated": ("max_per_week", 99),
    "resident.opted_out": ("resident_id", "x"),
    "resident.erasure_requested": ("resident_id", "has spaces in it"),
    "survey.answered": ("confidence", 7),
    "doorknock.recorded": ("outcome", "kicked_in"),
    "setup.created": ("starts_on", "not a date"),
    "setup.updated": ("ends_on", "31/12/2026"),
    "setup.archived": ("archived_by", ""),
    "priority.changed": ("rank", 0),
    "officer.alert": ("kind", "weather"),
    "notification.requested": ("subject", ""),
    "notification.sent": ("channel", "pigeon"),
    "reply.received": ("body", {"key_id": "k"}),
}


def envelope(type_: str, **payload: Any) -> dict[str, Any]:
    return {"type": type_, "occurred_at": T, "source": "test-suite", **payload}


def test_every_event_type_has_fixtures() -> None:
    assert set(VALID) == set(MODEL_BY_TYPE) == set(BAD)


@pytest.mark.parametrize("type_", sorted(VALID))
def test_round_trip(type_: str) -> None:
    event = parse_event(envelope(type_, **VALID[type_]))
    assert event.type == type_  # type: ignore[attr-defined]
    again = decode(encode(event))
    assert again == event
    assert again.occurred_at == datetime(2026, 11, 1, 12, tzinfo=UTC)
    assert event_key(event)


@pytest.mark.parametrize("type_", sorted(BAD))
def test_bad_field_is_named(type_: str) -> None:
    field, value = BAD[type_]
    data = envelope(type_, **{**VALID[type_], field: value})
    with pytest.raises(InvalidEvent) as info:
        parse_event(data)
    assert info.value.field is not None and info.value.field.split(".")[0] == field
    assert field in str(info.value)


def test_envelope_fields_required_and_named() -> None:
    data = envelope("doorknock.recorded", **VALID["doorknock.recorded"])
    del data["occurred_at"]
    with pytest.raises(InvalidEvent, match="occurred_at"):
        parse_event(data)
    data = envelope("doorknock.recorded", **VALID["doorknock.recorded"])
    data["occurred_at"] = "2026-11-01T12:00:00"  # naive: event time must be unambiguous
    with pytest.raises(InvalidEvent, match="occurred_at"):
        parse_event(data)
    with pytest.raises(InvalidEvent, match="email: Extra inputs"):
        parse_event({**envelope("resident.opted_out", resident_id="r-abcdef12"), "email": "a@b.c"})


def test_unknown_type_and_garbage() -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(b'{"type": "crime.vanished"}')
    assert info.value.field == "type"
    with pytest.raises(InvalidEvent, match="not JSON"):
        decode(b"\xff\x00garbage")
    with pytest.raises(InvalidEvent, match="no value"):
        decode(None)


def test_location_cell_must_match_point() -> None:
    data = envelope(
        "crime.reported",
        **{**VALID["crime.reported"], "location": {**LOC, "cell": "8a19404284f7fff"}},
    )
    assert parse_event(data).location.cell == "8a19404284f7fff"  # type: ignore[attr-defined]
    data["location"] = {**LOC, "cell": "8a19404284affff"}
    with pytest.raises(InvalidEvent, match="location"):
        parse_event(data)


def test_located_events_keyed_by_score_cell() -> None:
    event = parse_event(envelope("crime.reported", **VALID["crime.reported"]))
    assert event_key(event) == b"8919404284fffff"
    unlocated = parse_event(envelope("crime.updated", **VALID["crime.updated"]))
    assert event_key(unlocated) == b"HP-1"


def test_every_type_has_a_topic() -> None:
    assert set(TOPIC_FOR_TYPE) == set(MODEL_BY_TYPE)
    names = [t.name for t in ALL_TOPICS]
    assert len(names) == len(set(names))


def test_exported_json_schemas_are_current() -> None:
    folder = Path(__file__).resolve().parent.parent / "schemas" / "json"
    for name, schema in json_schemas().items():
        path = folder / f"{name}.schema.json"
        assert path.exists(), f"run `lpt export-schemas`: {path.name} missing"
        assert json.loads(path.read_text()) == schema, (
            f"run `lpt export-schemas`: {path.name} stale"
        )
