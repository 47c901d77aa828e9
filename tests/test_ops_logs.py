"""Structured logs without personal data, and trace ids carried in Kafka headers (real Kafka)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from lpt.kafka import make_producer, publish, publish_raw, topic_name
from lpt.logs import (
    _drop_personal,
    bound_message,
    bound_trace,
    configure_logging,
    current_trace_id,
    get_logger,
)
from lpt.settings import Settings
from schemas.crime import CrimeReported
from schemas.registry import encode
from schemas.topics import CRIME, SETUPS


def render(**event: object) -> dict[str, object]:
    """One log line as the JSON renderer writes it, through the redaction processor."""
    line = structlog.processors.JSONRenderer()(None, "info", _drop_personal(None, "info", event))
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_email_keys_and_values_are_redacted() -> None:
    line = render(
        event="smtp.refused for jane.doe@example.org",
        email="jane.doe@example.org",
        to_email="x@example.org",
        detail="550 <john.smith+tag@mail.example.co.uk> unknown",
        nested={"phone_number": "07700 900123", "note": "write to a@b.io"},
        resident_id="r-abc",
        count=3,
    )
    text = json.dumps(line)
    assert "@" not in text, text
    assert line["email"] == line["to_email"] == "[redacted]"
    assert line["detail"] == "550 <[redacted]> unknown"
    assert line["nested"] == {"phone_number": "[redacted]", "note": "write to [redacted]"}
    assert line["resident_id"] == "r-abc" and line["count"] == 3  # identifiers stay


def test_configured_json_logs_redact_bound_context_and_exceptions(capsys: object) -> None:
    configure_logging("json", "info")
    try:
        log = get_logger("test.ops.redaction")
        with structlog.contextvars.bound_contextvars(contact="jo@example.org", trace_id="t-1"):
            try:
                raise ValueError("duplicate key (lower(email))=(jo@example.org)")
            except ValueError:
                log.exception("intake.failed", event_id="e-1")
        err = capsys.readouterr().err  # type: ignore[attr-defined]
    finally:
        structlog.reset_defaults()  # the configured logger writes to capsys' stream
    record = json.loads(err.strip().splitlines()[-1])
    assert record["event"] == "intake.failed" and record["event_id"] == "e-1"
    assert record["trace_id"] == "t-1" and record["contact"] == "[redacted]"
    assert "jo@example.org" not in err and "ValueError" in record["exception"]


def _crime(trace: str | None) -> CrimeReported:
    return CrimeReported(
        occurred_at=datetime(2025, 6, 15, tzinfo=UTC),
        source="test",
        trace_id=trace,
        incident_id=f"T-{uuid.uuid4().hex[:8]}",
        crime_type="Burglary",
        reported_by="Humberside Police",
        falls_within="Humberside Police",
    )


async def _records(settings: Settings, topic: str, n: int) -> list[object]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(topic, p) for p in parts.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[object] = []
        for _ in range(20):
            batch = await consumer.getmany(timeout_ms=500)
            out.extend(r for rs in batch.values() for r in rs)
            if len(out) >= n:
                break
        return out
    finally:
        await consumer.stop()


async def test_trace_id_round_trip_through_kafka_headers(isolated_settings: Settings) -> None:
    settings = isolated_settings
    producer = make_producer(settings)
    await producer.start()
    try:
        # 1. The event's own trace id travels as a header, with its id and type.
        await publish(producer, [_crime("trace-own")], settings)
        # 2. No trace id on the event: the one bound in the logging context is sent.
        with bound_trace("trace-bound"):
            await publish(producer, [_crime(None)], settings)
        records = await _records(settings, topic_name(CRIME, settings), 2)
        by_trace = {dict(r.headers).get("trace_id"): r for r in records}  # type: ignore[attr-defined]
        assert set(by_trace) == {b"trace-own", b"trace-bound"}
        own = dict(by_trace[b"trace-own"].headers)  # type: ignore[attr-defined]
        assert own["event_type"] == b"crime.reported" and len(own["event_id"]) == 36

        # 3. A consumer binds it back; what it publishes downstream (publish_raw) carries it.
        setups = topic_name(SETUPS, settings)
        with bound_message(by_trace[b"trace-bound"].headers) as ctx:  # type: ignore[attr-defined]
            assert current_trace_id() == "trace-bound" and ctx["event_type"] == "crime.reported"
            await publish_raw(producer, setups, [(b"k1", b"downstream")])
        assert current_trace_id() is None  # context restored after the record
        # 4. Explicit per-message headers win over the default.
        await publish_raw(
            producer, setups, [(b"k2", b"explicit", [("trace_id", b"trace-explicit")])]
        )
        await publish_raw(producer, setups, [(b"k3", encode(_crime(None)))])  # none bound
        out = {r.key: dict(r.headers) for r in await _records(settings, setups, 3)}  # type: ignore[attr-defined]
        assert out[b"k1"]["trace_id"] == b"trace-bound"
        assert out[b"k2"]["trace_id"] == b"trace-explicit"
        assert "trace_id" not in out[b"k3"]
    finally:
        await producer.stop()
