"""Dead letters: a message a worker cannot use goes to its topic's dead-letter topic.

One convention for every worker (the stream worker's input stage, the notification worker):
the original key, value *and headers* are kept byte for byte, so ops can replay the message
once the cause is fixed and its trace id still links it to where it came from; the reason and
origin travel in ``dlq.*`` headers, as Kafka Connect does it: ``dlq.reason``, ``dlq.field``,
``dlq.topic``, ``dlq.partition``, ``dlq.offset``, ``dlq.consumer``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from lpt.kafka import dead_letter_topic_name
from lpt.logs import get_logger
from lpt.metrics import DEAD_LETTERS
from lpt.settings import Settings
from schemas.topics import TopicSpec

log = get_logger(__name__)

Headers = list[tuple[str, bytes]]


def dead_letter_headers(record: Any, reason: str, field: str | None, consumer: str) -> Headers:
    """The original headers (minus any earlier ``dlq.*`` ones: a replayed message that fails
    again says why *now*) followed by this failure's."""
    original: Sequence[tuple[str, bytes]] = getattr(record, "headers", None) or ()
    kept = [(k, v) for k, v in original if not k.startswith("dlq.")]
    return [
        *kept,
        ("dlq.reason", reason[:1000].encode()),
        ("dlq.field", (field or "").encode()),
        ("dlq.topic", record.topic.encode()),
        ("dlq.partition", str(record.partition).encode()),
        ("dlq.offset", str(record.offset).encode()),
        ("dlq.consumer", consumer.encode()),
    ]


async def send_dead_letter(
    producer: AIOKafkaProducer,
    settings: Settings,
    spec: TopicSpec,
    record: Any,
    reason: str,
    field: str | None,
    consumer: str,
) -> asyncio.Future[Any]:
    """Queue ``record`` (an aiokafka ``ConsumerRecord``) on ``spec``'s dead-letter topic; the
    returned future resolves when the broker acknowledged it. Counted and logged (position and
    reason only: the value may hold personal data)."""
    fut: asyncio.Future[Any] = await producer.send(
        dead_letter_topic_name(spec, settings),
        record.value,
        key=record.key,
        headers=dead_letter_headers(record, reason, field, consumer),
    )
    DEAD_LETTERS.labels(topic=spec.name, reason=(field or "value")[:40]).inc()
    log.warning(
        "dead_letter",
        consumer=consumer,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        field=field,
        reason=reason[:200],
    )
    return fut


async def send_dead_letter_and_wait(
    producer: AIOKafkaProducer,
    settings: Settings,
    spec: TopicSpec,
    record: Any,
    reason: str,
    field: str | None,
    consumer: str,
) -> None:
    """:func:`send_dead_letter`, acknowledged before returning (for workers whose poison
    messages are rare and handled one at a time)."""
    await (await send_dead_letter(producer, settings, spec, record, reason, field, consumer))
