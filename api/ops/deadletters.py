"""Dead letters: read them back, show why they failed, and replay them once the cause is fixed.

A dead letter keeps the original key and value byte for byte; the reason and origin travel in
``dlq.*`` headers (``lpt/deadletter.py``, the Kafka Connect convention).
Replay re-publishes the original key and value to the dead letter's original topic (same key,
so the same partition), with a ``replayed_from`` header, and records who replayed what in
``ops_replays``. A dead letter is replayed at most once: consumers are idempotent by event id,
but a double click should not even look like two replays. If the replayed message fails again,
it comes back as a new dead letter with a new offset, which can be replayed in its turn.

Payloads: shown in full only for topics whose messages carry no personal data in clear
(``PAYLOAD_VISIBLE``). Other topics show the message's shape (keys and value types) plus the
envelope fields, enough to see a misspelt field without revealing a postcode, an address or a
special-category answer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from api.topic_stats import make_offsets_consumer
from lpt.kafka import dead_letter_topic_name, offsets_of, partitions_of, topic_name
from lpt.logs import TRACE_HEADER, bound_trace, current_trace_id, get_logger
from lpt.metrics import DEAD_LETTER_REPLAYS
from lpt.settings import Settings
from schemas.topics import CRIME, INPUT_TOPICS, NOTIFICATIONS_REQUESTED, SETUPS, TopicSpec

log = get_logger(__name__)

#: Topics whose values hold nothing personal in clear (sealed fields are ciphertext).
#: Residents (postcode, age band, ethnic group), surveys (answers), door knocks (an address)
#: and replies are shown by shape only.
PAYLOAD_VISIBLE = frozenset({CRIME.name, SETUPS.name, NOTIFICATIONS_REQUESTED.name})
#: Envelope fields shown even when the payload is not (identifiers and times only).
ENVELOPE_FIELDS = ("type", "event_id", "schema_version", "occurred_at", "produced_at", "source")
REPLAY_HEADER = "replayed_from"
READ_TIMEOUT_S = 5.0
LIST_LIMIT = 50


class ReplayRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Replay:
    replayed_by: str
    replayed_at: datetime
    to_topic: str
    to_partition: int | None
    to_offset: int | None
    note: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "replayed_by": self.replayed_by,
            "replayed_at": self.replayed_at.isoformat(),
            "topic": self.to_topic,
            "partition": self.to_partition,
            "offset": self.to_offset,
            "note": self.note,
        }


@dataclass(frozen=True)
class DeadLetter:
    spec: TopicSpec
    topic: str
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    replay: Replay | None = None

    @property
    def reason(self) -> str:
        return self.headers.get("dlq.reason", "")

    @property
    def field(self) -> str | None:
        return self.headers.get("dlq.field") or None

    @property
    def original_topic(self) -> str | None:
        return self.headers.get("dlq.topic") or None

    @property
    def original_partition(self) -> int | None:
        return _int(self.headers.get("dlq.partition"))

    @property
    def original_offset(self) -> int | None:
        return _int(self.headers.get("dlq.offset"))

    @property
    def consumer(self) -> str | None:
        return self.headers.get("dlq.consumer") or None

    @property
    def payload_visible(self) -> bool:
        return self.spec.name in PAYLOAD_VISIBLE

    def payload(self) -> tuple[bool, str]:
        """(shown in full?, text): the value, or its shape for topics with personal data."""
        if self.value is None:
            return True, "(no value)"
        try:
            data = json.loads(self.value)
        except (UnicodeDecodeError, json.JSONDecodeError):
            if self.payload_visible:
                return True, self.value.decode("utf-8", "replace")
            return False, f"{len(self.value)} bytes, not JSON (not shown: may hold personal data)"
        if self.payload_visible:
            return True, json.dumps(data, indent=2, ensure_ascii=False)
        return False, json.dumps(shape(data), indent=2)

    def as_json(self, with_payload: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "topic": self.spec.name,
            "dead_letter_topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp.isoformat(),
            "reason": self.reason,
            "field": self.field,
            "original": {
                "topic": self.original_topic,
                "partition": self.original_partition,
                "offset": self.original_offset,
            },
            "consumer": self.consumer,
            "headers": self.headers,
            "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
            "replay": self.replay.as_json() if self.replay else None,
        }
        if with_payload:
            shown, text = self.payload()
            body["payload_shown"] = shown
            body["payload"] = text
        return body


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def shape(data: Any, depth: int = 0) -> Any:
    """The structure of a JSON value with its leaves replaced by their type names."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            if (
                depth == 0
                and k in ENVELOPE_FIELDS
                and isinstance(v, str | int)
                and len(str(v)) < 80
            ):
                out[k] = v
            else:
                out[k] = shape(v, depth + 1)
        return out
    if isinstance(data, list):
        return [shape(data[0], depth + 1), f"... {len(data)} items"] if data else []
    if data is None:
        return None
    return f"<{type(data).__name__}>"


def spec_for(name: str) -> TopicSpec | None:
    """The input topic whose dead letters ``name`` (catalogue name) refers to."""
    return next((s for s in INPUT_TOPICS if s.name == name), None)


def _letter(spec: TopicSpec, record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    headers = {k: v.decode("utf-8", "replace") for k, v in record.headers or ()}
    return DeadLetter(
        spec=spec,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        key=record.key,
        value=record.value,
        headers=headers,
    )


async def _read(
    settings: Settings, tps_from: dict[TopicPartition, int], until: dict[TopicPartition, int]
) -> list[ConsumerRecord[bytes, bytes]]:
    """Records from each partition's start offset up to (excluding) its ``until`` offset."""
    wanted = {tp: off for tp, off in tps_from.items() if off < until[tp]}
    if not wanted:
        return []
    consumer = make_offsets_consumer(settings)
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(list(wanted))
        for tp, off in wanted.items():
            consumer.seek(tp, off)
        deadline = time.monotonic() + READ_TIMEOUT_S
        pending = set(wanted)
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < until[tp]:
                        out.append(r)
                if records and records[-1].offset >= until[tp] - 1:
                    pending.discard(tp)
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    return out


async def _replays(
    pool: asyncpg.Pool, dlq_topic: str, keys: list[tuple[int, int]]
) -> dict[tuple[int, int], Replay]:
    if not keys:
        return {}
    rows = await pool.fetch(
        """SELECT dead_letter_partition, dead_letter_offset, replayed_by, replayed_at,
                  original_topic, replayed_to_partition, replayed_to_offset, note
           FROM ops_replays
           WHERE dead_letter_topic = $1 AND dead_letter_offset = ANY($2::bigint[])""",
        dlq_topic,
        [o for _, o in keys],
    )
    return {
        (r["dead_letter_partition"], r["dead_letter_offset"]): Replay(
            r["replayed_by"],
            r["replayed_at"],
            r["original_topic"],
            r["replayed_to_partition"],
            r["replayed_to_offset"],
            r["note"],
        )
        for r in rows
    }


async def _bounds(
    settings: Settings, admin: AIOKafkaAdminClient, topic: str
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    parts = (await partitions_of(admin, [topic])).get(topic, [])
    tps = [TopicPartition(topic, p) for p in parts]
    if not tps:
        return {}, {}
    consumer = make_offsets_consumer(settings)
    await consumer.start()
    try:
        return await offsets_of(consumer, tps)
    finally:
        await consumer.stop()


async def list_dead_letters(
    settings: Settings,
    admin: AIOKafkaAdminClient,
    pool: asyncpg.Pool,
    spec: TopicSpec,
    limit: int = LIST_LIMIT,
) -> tuple[int, list[DeadLetter]]:
    """(total held, the newest ``limit`` dead letters, newest first) of one input topic."""
    topic = dead_letter_topic_name(spec, settings)
    begin, end = await _bounds(settings, admin, topic)
    total = sum(end[tp] - begin[tp] for tp in end)
    start = {tp: max(begin[tp], end[tp] - limit) for tp in end}
    records = await _read(settings, start, end)
    letters = [_letter(spec, r) for r in records]
    letters.sort(key=lambda d: (d.timestamp, d.offset), reverse=True)
    letters = letters[:limit]
    done = await _replays(pool, topic, [(d.partition, d.offset) for d in letters])
    letters = [
        DeadLetter(**{**d.__dict__, "replay": done.get((d.partition, d.offset))}) for d in letters
    ]
    return total, letters


async def read_dead_letter(
    settings: Settings,
    admin: AIOKafkaAdminClient,
    pool: asyncpg.Pool,
    spec: TopicSpec,
    partition: int,
    offset: int,
) -> DeadLetter | None:
    topic = dead_letter_topic_name(spec, settings)
    tp = TopicPartition(topic, partition)
    begin, end = await _bounds(settings, admin, topic)
    if tp not in end or not begin[tp] <= offset < end[tp]:
        return None
    records = await _read(settings, {tp: offset}, {tp: offset + 1})
    if not records or records[0].offset != offset:
        return None
    letter = _letter(spec, records[0])
    done = await _replays(pool, topic, [(partition, offset)])
    return DeadLetter(**{**letter.__dict__, "replay": done.get((partition, offset))})


def _trace_of(letter: DeadLetter) -> str | None:
    if letter.headers.get(TRACE_HEADER):
        return letter.headers[TRACE_HEADER]
    try:
        data = json.loads(letter.value or b"")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    trace = data.get("trace_id") if isinstance(data, dict) else None
    return trace if isinstance(trace, str) and trace else None


async def replay(
    settings: Settings,
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    letter: DeadLetter,
    actor: str,
    note: str | None = None,
) -> Replay:
    """Re-publish a dead letter to its original topic and record it (once per dead letter)."""
    target = topic_name(letter.spec, settings)
    if letter.original_topic not in (None, target):
        raise ReplayRefused(
            409, f"dead letter names {letter.original_topic!r} as its topic, not {target!r}"
        )
    if letter.value is None:
        raise ReplayRefused(409, "dead letter has no value to replay")
    headers = [(k, v.encode()) for k, v in letter.headers.items() if not k.startswith("dlq.")]
    headers = [(k, v) for k, v in headers if k != REPLAY_HEADER]
    headers.append((REPLAY_HEADER, f"{letter.topic}:{letter.partition}:{letter.offset}".encode()))
    # The original work's trace if the message has one, else the replaying request's.
    trace = _trace_of(letter) or current_trace_id()
    if trace and not any(k == TRACE_HEADER for k, _ in headers):
        headers.append((TRACE_HEADER, trace.encode()))
    with bound_trace(trace):
        async with pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    """INSERT INTO ops_replays (dead_letter_topic, dead_letter_partition,
                           dead_letter_offset, original_topic, original_partition,
                           original_offset, reason, replayed_by, note)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
                    letter.topic,
                    letter.partition,
                    letter.offset,
                    target,
                    letter.original_partition,
                    letter.original_offset,
                    letter.reason[:1000],
                    actor,
                    note,
                )
            except asyncpg.UniqueViolationError:
                raise ReplayRefused(409, "this dead letter has already been replayed") from None
            meta = await producer.send_and_wait(
                target, letter.value, key=letter.key, headers=headers
            )
            row = await conn.fetchrow(
                """UPDATE ops_replays SET replayed_to_partition = $4, replayed_to_offset = $5
                   WHERE dead_letter_topic = $1 AND dead_letter_partition = $2
                     AND dead_letter_offset = $3
                   RETURNING replayed_at""",
                letter.topic,
                letter.partition,
                letter.offset,
                meta.partition,
                meta.offset,
            )
        assert row is not None
        DEAD_LETTER_REPLAYS.labels(letter.spec.name).inc()
        log.info(
            "ops.dead_letter_replayed",
            dead_letter=f"{letter.topic}:{letter.partition}:{letter.offset}",
            topic=target,
            partition=meta.partition,
            offset=meta.offset,
            replayed_by=actor,
        )
    return Replay(actor, row["replayed_at"], target, meta.partition, meta.offset, note)
