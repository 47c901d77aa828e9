"""The backbone on real servers: topics created idempotently, migrations, publish round trip."""

from __future__ import annotations

import dataclasses
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import InvalidReplicationFactorError

from lpt.db import migrate, migration_files
from lpt.kafka import (
    create_topic,
    dead_letter_topic_name,
    ensure_topics,
    make_producer,
    publish,
    topic_name,
)
from lpt.settings import Settings
from schemas import decode
from schemas.crime import CrimeReported
from schemas.topics import ALL_TOPICS, CRIME


async def test_topics_created_once_with_their_layout(stack: Settings) -> None:
    settings = dataclasses.replace(stack, topic_prefix=f"b{uuid.uuid4().hex[:8]}.")
    created = await ensure_topics(settings)
    expected = {topic_name(t, settings) for t in ALL_TOPICS} | {
        dead_letter_topic_name(t, settings) for t in ALL_TOPICS if t.dead_letter
    }
    assert set(created) == expected
    assert await ensure_topics(settings) == []  # idempotent
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        meta = await admin.describe_topics([topic_name(CRIME, settings)])
        assert len(meta[0]["partitions"]) == settings.topic_partitions
        # The broker's refusals are not silent (aiokafka returns them as error codes).
        assert await create_topic(admin, NewTopic(topic_name(CRIME, settings), 1, 1)) is False
        with pytest.raises(InvalidReplicationFactorError):
            await create_topic(admin, NewTopic(f"{settings.topic_prefix}rf3", 1, 3))
    finally:
        await admin.close()


async def test_migrations_apply_once(isolated_settings: Settings) -> None:
    assert await migrate(isolated_settings) == []
    conn = await asyncpg.connect(isolated_settings.dsn)
    try:
        names = [
            r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY 1")
        ]
    finally:
        await conn.close()
    assert names == [p.name for p in migration_files()]


async def test_publish_lands_on_catalogue_topic_keyed_by_cell(isolated_settings: Settings) -> None:
    event = CrimeReported(
        incident_id="HP-9",
        crime_type="Burglary",
        reported_by="Humberside Police",
        falls_within="Humberside Police",
        occurred_at="2026-10-15T00:00:00Z",
        source="test",
        location={"lat": 53.7445, "lng": -0.3328},  # type: ignore[arg-type]
    )
    producer = make_producer(isolated_settings)
    await producer.start()
    try:
        assert await publish(producer, [event], isolated_settings) == 1
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic_name(CRIME, isolated_settings),
        bootstrap_servers=isolated_settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
        records = [r for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    assert len(records) == 1
    assert records[0].key == b"8919404284fffff"
    assert decode(records[0].value) == event
