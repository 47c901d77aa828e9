"""Dead letters of the notification worker: the shared convention of :mod:`lpt.deadletter`,
sent and acknowledged one at a time (the worker's poison messages are rare)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from lpt.deadletter import send_dead_letter
from lpt.settings import Settings
from schemas.topics import TopicSpec


async def send_to_dead_letter(
    producer: AIOKafkaProducer,
    settings: Settings,
    spec: TopicSpec,
    record: ConsumerRecord[bytes, bytes],
    reason: str,
    field: str | None,
    consumer: str,
) -> None:
    await (await send_dead_letter(producer, settings, spec, record, reason, field, consumer))
