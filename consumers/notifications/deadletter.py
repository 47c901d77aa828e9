"""Dead letters: a message the worker cannot use goes to its topic's dead-letter topic.

The original key and value are kept byte for byte (so ops can replay it once the cause is
fixed) and the reason travels in headers, as Kafka Connect does it: ``dlq.reason``,
``dlq.field``, ``dlq.topic``, ``dlq.partition``, ``dlq.offset``, ``dlq.consumer``.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from lpt.kafka import dead_letter_topic_name
from lpt.logs import get_logger
from lpt.metrics import DEAD_LETTERS
from lpt.settings import Settings
from schemas.topics import TopicSpec

log = get_logger(__name__)


async def send_to_dead_letter(
    producer: AIOKafkaProducer,
    settings: Settings,
    spec: TopicSpec,
    record: ConsumerRecord[bytes, bytes],
    reason: str,
    field: str | None,
    consumer: str,
) -> None:
    headers = [
        ("dlq.reason", reason[:1000].encode()),
        ("dlq.field", (field or "").encode()),
        ("dlq.topic", record.topic.encode()),
        ("dlq.partition", str(record.partition).encode()),
        ("dlq.offset", str(record.offset).encode()),
        ("dlq.consumer", consumer.encode()),
    ]
    await producer.send_and_wait(
        dead_letter_topic_name(spec, settings), record.value, key=record.key, headers=headers
    )
    DEAD_LETTERS.labels(topic=spec.name, reason=(field or "value")[:40]).inc()
    log.warning(
        "notify.dead_letter",
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        field=field,
        reason=reason[:200],
    )
