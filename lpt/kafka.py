"""Kafka plumbing shared by producers, workers and the web service.

Topic names get the deployment prefix here and only here. ``ensure_topics`` creates the whole
catalogue idempotently (a topic that exists is left alone), so every process can call it at
start-up. ``publish`` sends a list of events with aiokafka batches: one ``send()`` per message
tops out around 40k/s in Python, batching is an order of magnitude faster (DESIGN §7).

Headers: every event goes out with ``event_type``, ``event_id`` and, when the event or the
logging context has one, ``trace_id`` (see ``lpt.logs``), so a consumer can bind the trace
before decoding and a dead letter keeps its origin.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code

from lpt.logs import EVENT_ID_HEADER, EVENT_TYPE_HEADER, TRACE_HEADER, trace_headers
from lpt.settings import Settings, get_settings
from schemas.envelope import Envelope
from schemas.registry import encode
from schemas.topics import ALL_TOPICS, TopicSpec, event_key, topic_for


def topic_name(spec: TopicSpec, settings: Settings | None = None) -> str:
    return (settings or get_settings()).topic_prefix + spec.name


def dead_letter_topic_name(spec: TopicSpec, settings: Settings | None = None) -> str:
    return (settings or get_settings()).topic_prefix + spec.dead_letter_name


def _topic_config(spec: TopicSpec) -> dict[str, str]:
    config = {"cleanup.policy": spec.cleanup_policy, "retention.ms": str(spec.retention_ms)}
    config.update(spec.config)
    return config


def planned_topics(settings: Settings | None = None) -> list[NewTopic]:
    settings = settings or get_settings()
    topics: list[NewTopic] = []
    for spec in ALL_TOPICS:
        partitions = spec.partitions or settings.topic_partitions
        topics.append(
            NewTopic(topic_name(spec, settings), partitions, 1, topic_configs=_topic_config(spec))
        )
        if spec.dead_letter:
            topics.append(
                NewTopic(
                    dead_letter_topic_name(spec, settings),
                    1,
                    1,
                    topic_configs={"cleanup.policy": "delete", "retention.ms": str(-1)},
                )
            )
    return topics


async def ensure_topics(settings: Settings | None = None) -> list[str]:
    """Create every catalogue topic that does not exist yet; returns the names created."""
    settings = settings or get_settings()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in planned_topics(settings) if t.name not in existing]
        created: list[str] = []
        for topic in missing:  # one at a time: a racing creator makes only that one fail
            if await create_topic(admin, topic):
                created.append(topic.name)
        return created
    finally:
        await admin.close()


async def create_topic(admin: AIOKafkaAdminClient, topic: NewTopic, attempts: int = 5) -> bool:
    """Create one topic; False if it exists already (another creator won the race).

    Why not just ``admin.create_topics``: it does not raise for a topic the broker refused, it
    returns the error code in the response. A fresh or busy broker answers "request timed out"
    or "not controller" now and then; such a topic was silently missing before.
    """
    delay = 0.2
    for attempt in range(attempts):
        response = await admin.create_topics([topic])
        code = next((e[1] for e in response.topic_errors if e[0] == topic.name), 0)
        if code == 0:
            return True
        error = for_code(code)
        if error is TopicAlreadyExistsError:
            return False
        if not error.retriable or attempt == attempts - 1:
            raise error(f"creating topic {topic.name}")
        await asyncio.sleep(delay)
        delay *= 2
    return False  # not reached


async def wait_for_kafka(settings: Settings | None = None, timeout: float = 60.0) -> None:
    settings = settings or get_settings()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=5000
        )
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (TimeoutError, KafkaConnectionError, OSError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


def make_producer(settings: Settings | None = None, **overrides: object) -> AIOKafkaProducer:
    settings = settings or get_settings()
    options: dict[str, object] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 1024 * 1024,
        "max_request_size": 8 * 1024 * 1024,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def publish(
    producer: AIOKafkaProducer,
    events: Iterable[Envelope],
    settings: Settings | None = None,
) -> int:
    """Send events to their catalogue topics, keyed by :func:`event_key`; waits for acks."""
    settings = settings or get_settings()
    futures: list[asyncio.Future[object]] = []
    for event in events:
        fut = await producer.send(
            topic_name(topic_for(event), settings),
            encode(event),
            key=event_key(event),
            headers=event_headers(event),
        )
        futures.append(fut)
    if futures:
        await asyncio.gather(*futures)
    return len(futures)


Header = tuple[str, bytes]
#: (key, value) or (key, value, headers) of one pre-encoded message.
RawMessage = tuple[bytes | None, bytes] | tuple[bytes | None, bytes, Sequence[Header]]


async def publish_raw(
    producer: AIOKafkaProducer,
    topic: str,
    messages: Sequence[RawMessage],
    headers: Sequence[Header] | None = None,
) -> None:
    """Send pre-encoded messages with partition batches: the fast path for imports.

    A message's own headers (third item) win; otherwise ``headers`` applies to it, and when
    that is None too, the trace id bound in the logging context (if any) is sent.
    """
    default_headers: Sequence[Header] = trace_headers() if headers is None else headers
    partitions = sorted(await producer.partitions_for(topic))
    batches: dict[int, Any] = {}
    pending: list[asyncio.Future[object]] = []

    def partition_of(key: bytes | None) -> int:
        return producer._partitioner(key, partitions, partitions)  # type: ignore[no-any-return]

    for message in messages:
        key, value = message[0], message[1]
        extra = message[2] if len(message) == 3 else default_headers
        part = partition_of(key)
        batch = batches.get(part)
        if batch is None:
            batch = batches[part] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=extra) is None:
            pending.append(await producer.send_batch(batch, topic, partition=part))
            batch = batches[part] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None, headers=extra)
    for part, batch in batches.items():
        if batch.record_count():
            pending.append(await producer.send_batch(batch, topic, partition=part))
    if pending:
        await asyncio.gather(*pending)


def event_headers(event: Envelope) -> list[Header]:
    """Headers of one event: type, id, and the trace id (the event's, else the bound one)."""
    headers = [
        (EVENT_TYPE_HEADER, event.type.encode()),
        (EVENT_ID_HEADER, str(event.event_id).encode()),
    ]
    if event.trace_id:
        headers.append((TRACE_HEADER, event.trace_id.encode()))
    else:
        headers.extend(trace_headers())
    return headers


# --------------------------------------------------------------------------- admin queries

#: Offset queries block while a partition is unknown; never let a page or check hang on that.
QUERY_TIMEOUT_S = 10.0


async def rewind_to_committed(consumer: AIOKafkaConsumer) -> None:
    """Move a group consumer back to its committed offsets (the start, for a partition with no
    commit yet: the ``earliest`` reset), after a batch it fetched could not be processed.

    Why not ``seek_to_committed``: it leaves a partition without a commit where it is, past the
    failed batch."""
    for tp in consumer.assignment():
        offset = await consumer.committed(tp)
        if offset is None or offset < 0:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)


async def partitions_of(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, list[int]]:
    """Partition ids per existing topic, from the brokers' metadata (a consumer that has not
    subscribed knows none, which would make every topic look empty)."""
    if not names:
        return {}
    described = await admin.describe_topics(list(names))
    return {
        d["topic"]: sorted(p["partition"] for p in d["partitions"])
        for d in described
        if d.get("error_code", 0) == 0
    }


async def offsets_of(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(beginning, end) offsets of the partitions."""
    if not tps:
        return {}, {}
    begin = await asyncio.wait_for(consumer.beginning_offsets(tps), QUERY_TIMEOUT_S)
    end = await asyncio.wait_for(consumer.end_offsets(tps), QUERY_TIMEOUT_S)
    return begin, end


async def group_state(admin: AIOKafkaAdminClient, group: str) -> tuple[str, int]:
    """(state, member count) from DescribeGroups; 'unknown' if the broker's answer is odd."""
    try:
        responses = await admin.describe_consumer_groups([group])
        for response in responses:
            for entry in response.groups:
                # DescribeGroups v0+: (error_code, group_id, state, protocol_type, protocol,
                # members, ...)
                if entry[1] == group:
                    return str(entry[2]), len(entry[5])
    except Exception:
        pass
    return "unknown", 0
