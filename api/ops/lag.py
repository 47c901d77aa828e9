"""Consumer lag per group / topic / partition, in messages and in seconds, and throughput.

Messages: end offset minus the group's committed offset, per partition (the partition
discovery and offset queries are ``api.topic_stats``'s, shared with the status page).

Seconds: the age of the oldest unconsumed message, i.e. now minus the timestamp of the record
at the committed offset (the next one the group will read). It is read, not estimated: one
small fetch per lagging partition, cached by (partition, offset) because a record's timestamp
never changes, so a group that is stuck costs nothing on the next scrape. The timestamp is the
record's CreateTime as set by our producers (``timestamp=None`` = time of sending), or the
broker's LogAppendTime on topics configured so. When the committed offset has fallen off the
log (retention), the oldest record still held is used. A partition whose record cannot be read
within the time limit (e.g. only a transaction marker left) has no seconds figure rather than a
wrong one. The estimate kafka-lag-exporter makes (interpolating offsets against sampled
timestamps) needs a history this process may not have; reading the record is exact.

Throughput: messages per second from offset deltas between this snapshot and an earlier one
(end offsets: produced; committed offsets: consumed), over at most ``RATE_WINDOW_S``.

Everything is exported through the catalogue's gauges (``lpt.metrics``) on each collection.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from api.topic_stats import make_offsets_consumer
from lpt.kafka import dead_letter_topic_name, group_state, offsets_of, partitions_of
from lpt.logs import get_logger
from lpt.metrics import (
    CONSUMER_LAG,
    CONSUMER_LAG_SECONDS,
    CONSUMER_OFFSET,
    DEAD_LETTER_MESSAGES,
    KAFKA_UP,
    TOPIC_OFFSET,
)
from lpt.settings import Settings
from schemas.topics import ALL_TOPICS

log = get_logger(__name__)

#: Longest wait for the records whose timestamps give lag in seconds.
TIMESTAMP_FETCH_S = 3.0
#: A snapshot younger than this is reused (Prometheus and the ops page asking together).
REUSE_S = 2.0
#: Throughput compares with the oldest kept snapshot at most this old.
RATE_WINDOW_S = 300.0
_TIMESTAMP_CACHE_MAX = 20_000


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int
    #: Age in seconds of the oldest unconsumed message; 0 when caught up; None if unreadable.
    lag_seconds: float | None

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


@dataclass(frozen=True)
class GroupInfo:
    group: str
    state: str
    members: int
    partitions: list[PartitionLag]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def lag_seconds(self) -> float | None:
        known = [p.lag_seconds for p in self.partitions if p.lag_seconds is not None]
        return max(known) if known else None

    def lag_by_topic(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.partitions:
            out[p.topic] = out.get(p.topic, 0) + p.lag
        return out


@dataclass(frozen=True)
class LagSnapshot:
    taken_at: float  # time.time()
    begin: dict[TopicPartition, int]
    end: dict[TopicPartition, int]
    groups: list[GroupInfo]
    #: Messages per second produced to each topic, and consumed per (group, topic).
    produce_rate: dict[str, float] = field(default_factory=dict)
    consume_rate: dict[tuple[str, str], float] = field(default_factory=dict)
    rate_window_s: float | None = None

    def topic_end(self, topic: str) -> int:
        return sum(v for tp, v in self.end.items() if tp.topic == topic)

    def topic_messages(self, topic: str) -> int:
        return sum(self.end[tp] - self.begin.get(tp, 0) for tp in self.end if tp.topic == topic)

    def committed_total(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for g in self.groups:
            for p in g.partitions:
                out[(g.group, p.topic)] = out.get((g.group, p.topic), 0) + p.committed
        return out


class TimestampReader:
    """Timestamps (ms) of the records at given offsets, with a cache per (partition, offset)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[tuple[TopicPartition, int], int | None] = {}

    async def timestamps(
        self, wanted: Iterable[tuple[TopicPartition, int]]
    ) -> dict[tuple[TopicPartition, int], int | None]:
        todo = sorted({w for w in wanted if w not in self._cache}, key=lambda w: (w[0], w[1]))
        if todo:
            found = await self._fetch(todo)
            if len(self._cache) + len(found) > _TIMESTAMP_CACHE_MAX:
                self._cache.clear()
            self._cache.update(found)
        return {w: self._cache.get(w) for w in wanted}

    async def _fetch(
        self, todo: list[tuple[TopicPartition, int]]
    ) -> dict[tuple[TopicPartition, int], int | None]:
        # One consumer can sit at one offset per partition: several groups at different
        # offsets of the same partition are read in rounds.
        rounds: list[dict[TopicPartition, int]] = []
        for tp, offset in todo:
            for r in rounds:
                if tp not in r:
                    r[tp] = offset
                    break
            else:
                rounds.append({tp: offset})
        found: dict[tuple[TopicPartition, int], int | None] = {w: None for w in todo}
        consumer: AIOKafkaConsumer = make_offsets_consumer(self.settings)
        deadline = time.monotonic() + TIMESTAMP_FETCH_S
        await consumer.start()
        try:
            consumer.assign(sorted({tp for tp, _ in todo}))
            for targets in rounds:
                consumer.pause(*consumer.assignment())
                for tp, offset in targets.items():
                    consumer.seek(tp, offset)
                consumer.resume(*targets)
                pending = dict(targets)
                while pending and time.monotonic() < deadline:
                    batch = await consumer.getmany(*pending, timeout_ms=200, max_records=None)
                    for tp, records in batch.items():
                        if tp in pending and records:
                            found[(tp, pending.pop(tp))] = records[0].timestamp
                            consumer.pause(tp)
                if time.monotonic() >= deadline:
                    break
        finally:
            await consumer.stop()
        missing = [w for w, ts in found.items() if ts is None]
        if missing:
            log.info("ops.lag_timestamp_unread", partitions=len(missing))
            for w in missing:  # retry those on the next collection, not from the cache
                del found[w]
        return found


async def _committed_offsets(
    admin: AIOKafkaAdminClient, end: dict[TopicPartition, int], prefix: str
) -> dict[str, dict[TopicPartition, int]]:
    listed = sorted({str(g[0]) for g in await admin.list_consumer_groups()})
    limit = asyncio.Semaphore(8)

    async def one(group: str) -> tuple[str, dict[TopicPartition, int]]:
        async with limit:
            committed = await admin.list_consumer_group_offsets(group)
        return group, {
            tp: om.offset
            for tp, om in committed.items()
            if tp.topic.startswith(prefix) and tp in end and om.offset >= 0
        }

    results = await asyncio.gather(*(one(g) for g in listed))
    return {g: offsets for g, offsets in results if offsets}


async def collect_lag(
    settings: Settings,
    admin: AIOKafkaAdminClient,
    offsets_consumer: AIOKafkaConsumer,
    reader: TimestampReader,
) -> LagSnapshot:
    """Offsets of the deployment's topics and every group's lag on them (no rates)."""
    existing = await admin.list_topics()
    prefixed = sorted(t for t in existing if t.startswith(settings.topic_prefix))
    parts = await partitions_of(admin, prefixed)
    tps = [TopicPartition(t, p) for t, ps in parts.items() for p in ps]
    begin, end = await offsets_of(offsets_consumer, tps)
    committed = await _committed_offsets(admin, end, settings.topic_prefix)
    # The next record each group will read; below the log start it is the oldest one held.
    wanted = {
        (tp, max(offset, begin.get(tp, 0)))
        for offsets in committed.values()
        for tp, offset in offsets.items()
        if offset < end[tp]
    }
    stamps = await reader.timestamps(wanted)
    now_ms = time.time() * 1000
    groups: list[GroupInfo] = []
    for group, offsets in committed.items():
        partitions = []
        for tp, offset in sorted(offsets.items()):
            seconds: float | None = 0.0
            if offset < end[tp]:
                ts = stamps.get((tp, max(offset, begin.get(tp, 0))))
                seconds = None if ts is None else max(0.0, (now_ms - ts) / 1000)
            partitions.append(PartitionLag(group, tp.topic, tp.partition, offset, end[tp], seconds))
        state, members = await group_state(admin, group)
        groups.append(GroupInfo(group, state, members, partitions))
    return LagSnapshot(time.time(), begin, end, groups)


def export(snapshot: LagSnapshot, settings: Settings) -> None:
    """Replace the catalogue's lag and offset gauges with this snapshot's figures."""
    for gauge in (CONSUMER_LAG, CONSUMER_LAG_SECONDS, CONSUMER_OFFSET, TOPIC_OFFSET):
        gauge.clear()
    for tp, offset in snapshot.end.items():
        TOPIC_OFFSET.labels(tp.topic, str(tp.partition)).set(offset)
    for g in snapshot.groups:
        for p in g.partitions:
            labels = (g.group, p.topic, str(p.partition))
            CONSUMER_LAG.labels(*labels).set(p.lag)
            CONSUMER_OFFSET.labels(*labels).set(p.committed)
            if p.lag_seconds is not None:
                CONSUMER_LAG_SECONDS.labels(*labels).set(p.lag_seconds)
    DEAD_LETTER_MESSAGES.clear()
    for spec in ALL_TOPICS:
        if spec.dead_letter:
            dlq = dead_letter_topic_name(spec, settings)
            DEAD_LETTER_MESSAGES.labels(spec.name).set(snapshot.topic_messages(dlq))


class LagSampler:
    """Snapshots on demand, reused for ``REUSE_S``, with a history for throughput."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reader = TimestampReader(settings)
        self.reuse_s = REUSE_S
        self._history: deque[LagSnapshot] = deque()
        self._lock = asyncio.Lock()

    @property
    def latest(self) -> LagSnapshot | None:
        return self._history[-1] if self._history else None

    async def snapshot(
        self, admin: AIOKafkaAdminClient, offsets_consumer: AIOKafkaConsumer
    ) -> LagSnapshot:
        async with self._lock:
            latest = self.latest
            if latest is not None and time.time() - latest.taken_at < self.reuse_s:
                return latest
            try:
                raw = await collect_lag(self.settings, admin, offsets_consumer, self.reader)
            except Exception:
                KAFKA_UP.set(0)
                raise
            KAFKA_UP.set(1)
            snap = self._with_rates(raw)
            self._history.append(snap)
            while self._history and snap.taken_at - self._history[0].taken_at > RATE_WINDOW_S:
                self._history.popleft()
            export(snap, self.settings)
            return snap

    def _with_rates(self, snap: LagSnapshot) -> LagSnapshot:
        base = next((h for h in self._history if snap.taken_at - h.taken_at >= 1.0), None)
        if base is None:
            return snap
        dt = snap.taken_at - base.taken_at
        topics = {tp.topic for tp in snap.end}
        produce = {
            t: max(0.0, (snap.topic_end(t) - base.topic_end(t)) / dt)
            for t in topics
            if any(tp.topic == t for tp in base.end)
        }
        before = base.committed_total()
        consume = {
            key: max(0.0, (value - before[key]) / dt)
            for key, value in snap.committed_total().items()
            if key in before
        }
        return LagSnapshot(
            snap.taken_at, snap.begin, snap.end, snap.groups, produce, consume, round(dt, 1)
        )
