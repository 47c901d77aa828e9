"""Helpers for the web-service tests: run the real app, read what landed on Kafka."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from api.app import create_app
from lpt.kafka import topic_name
from lpt.settings import Settings
from schemas.topics import TopicSpec

KEY_A = "key-for-force-a-0123456789"
KEY_B = "key-for-force-b-9876543210"


def web_settings(settings: Settings, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "ingest_api_keys": {KEY_A: "force-a", KEY_B: "force-b"},
        "master_key_file": settings.home / "secrets" / "test-master.key",
    }
    options.update(overrides)
    return dataclasses.replace(settings, **options)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def message_count(settings: Settings, spec: TopicSpec) -> int:
    """Messages on a topic: end offsets minus beginning offsets over its partitions."""
    name = topic_name(spec, settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, retry_backoff_ms=10)
    await consumer.start()
    try:
        partitions = spec.partitions or settings.topic_partitions
        tps = [TopicPartition(name, p) for p in range(partitions)]
        end = await consumer.end_offsets(tps)
        begin = await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    return sum(end.values()) - sum(begin.values())


async def read_all(
    settings: Settings, spec: TopicSpec, expected: int
) -> list[ConsumerRecord[Any, Any]]:
    """Every record on a topic (waits until ``expected`` have arrived, or 10 s)."""
    consumer = AIOKafkaConsumer(
        topic_name(spec, settings),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[Any, Any]] = []
    try:
        for _ in range(20):
            batch = await consumer.getmany(timeout_ms=500)
            records.extend(r for rs in batch.values() for r in rs)
            if len(records) >= expected:
                break
    finally:
        await consumer.stop()
    return records
