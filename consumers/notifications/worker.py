"""The notification worker process: Kafka in, messages out, delivery statuses back to Kafka.

Consumes ``notifications.requested`` (plus ``setups.lifecycle`` for set-up audiences and the
preference changes on ``residents.lifecycle``), hands
each request to the :class:`~.dispatch.Dispatcher`, and commits offsets only after a batch is
fully handled, so a crash means redelivery, which the outbox makes harmless. Between batches it
releases scheduled messages (quiet hours over, retries due), starts due weekly digests,
deletes expired reply tokens and, once a quarter, opens the survey wave (:mod:`.waves`, off
with ``LPT_SURVEY_AUTO_WAVES=0``).

Failure handling: a message that is not a valid event, or whose audience cannot be resolved,
goes to the topic's dead-letter topic with the reason (never dropped, never a crash). When the
database or Kafka is unavailable, the same message is retried with backoff until they return:
skipping it would lose a message nobody saw fail.

Run it with ``cli`` (``lpt notify``); ``--until-idle`` exits once the topics are caught up
and nothing is due, for scripts and benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from consumers.notifications.audience import AudienceError
from consumers.notifications.budget import Clock, system_clock
from consumers.notifications.channels import Channel, channels_from_settings
from consumers.notifications.digest import run_digests
from consumers.notifications.dispatch import Dispatcher, Summary
from consumers.notifications.preferences import PreferenceError, apply_resident_update
from consumers.notifications.setups import apply_setup_event
from consumers.notifications.tokens import purge_expired_tokens
from consumers.notifications.waves import WaveScheduler
from lpt.db import create_pool
from lpt.deadletter import send_dead_letter_and_wait
from lpt.kafka import ensure_topics, make_producer, publish_raw, topic_name
from lpt.logs import get_logger
from lpt.metrics import EVENTS_DUPLICATE, EVENTS_PROCESSED, PROCESSING_SECONDS
from lpt.metrics_server import worker_metrics
from lpt.settings import Settings, get_settings
from schemas.notifications import NotificationRequested, NotificationSent
from schemas.registry import InvalidEvent, decode, encode
from schemas.residents import ResidentUpdated
from schemas.topics import (
    NOTIFICATIONS_REQUESTED,
    NOTIFICATIONS_SENT,
    RESIDENTS,
    SETUPS,
    TopicSpec,
)

log = get_logger(__name__)

GROUP_SUFFIX = "notifications"
#: Seconds between housekeeping rounds (release scheduled, digests, token purge) when busy.
HOUSEKEEPING_SECONDS = 30.0
#: Backoff while PostgreSQL or Kafka is unavailable.
OUTAGE_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
T = TypeVar("T")
A = TypeVar("A")


class _Stopping(Exception):
    """Stop was asked for while PostgreSQL or Kafka was unavailable."""


_INFRA_ERRORS = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.InterfaceError,
    OSError,
    KafkaError,
)


@dataclass
class WorkerStats:
    requests: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    setups: int = 0
    sent: int = 0
    held: int = 0
    failed: int = 0


class NotificationWorker:
    def __init__(
        self,
        settings: Settings,
        *,
        channels: Mapping[str, Channel] | None = None,
        clock: Clock = system_clock,
        housekeeping_seconds: float = HOUSEKEEPING_SECONDS,
    ) -> None:
        self.settings = settings
        self.group = settings.topic_prefix + GROUP_SUFFIX
        self.clock = clock
        self.housekeeping_seconds = housekeeping_seconds
        self.stats = WorkerStats()
        self._channels = dict(channels) if channels is not None else None
        self._specs = {
            topic_name(NOTIFICATIONS_REQUESTED, settings): NOTIFICATIONS_REQUESTED,
            topic_name(SETUPS, settings): SETUPS,
            topic_name(RESIDENTS, settings): RESIDENTS,
        }
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.dispatcher: Dispatcher | None = None
        self.waves: WaveScheduler | None = None
        self._last_housekeeping = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await ensure_topics(self.settings)
        self.pool = await create_pool(self.settings, min_size=2, max_size=6)
        self.producer = make_producer(self.settings)
        await self.producer.start()
        channels = self._channels or channels_from_settings(self.settings)
        for ch in channels.values():
            await ch.start()
        self._channels = channels
        self.dispatcher = Dispatcher.from_settings(
            self.pool, self.settings, channels, self._publish_statuses, self.clock
        )
        if self.settings.survey_auto_waves:
            self.waves = WaveScheduler(self.pool, self.producer, self.settings, self.clock)
        self.consumer = AIOKafkaConsumer(
            *self._specs,
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=20,
            max_poll_interval_ms=30 * 60 * 1000,  # a 60,000-resident update is one message
        )
        await self.consumer.start()
        log.info("notify.worker_started", group=self.group, channels=sorted(channels))

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        for ch in (self._channels or {}).values():
            await ch.close()
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()

    async def _publish_statuses(self, events: Sequence[NotificationSent]) -> None:
        assert self.producer is not None
        await publish_raw(
            self.producer,
            topic_name(NOTIFICATIONS_SENT, self.settings),
            [(e.resident_id.encode(), encode(e)) for e in events],
        )

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, until_idle: bool = False) -> WorkerStats:
        try:
            await self._loop(stop, until_idle)
        except _Stopping:
            # Asked to stop during an outage: the batch in hand stays uncommitted, and is
            # delivered again after the restart (the outbox makes the repeat harmless).
            log.info("notify.stopped_during_outage")
        return self.stats

    async def _loop(self, stop: asyncio.Event, until_idle: bool) -> None:
        assert self.consumer is not None
        while not stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=500)
            records = [r for rs in batch.values() for r in rs]
            # Set-ups first: a request in the same batch may name a set-up created just before.
            records.sort(
                key=lambda r: (self._specs[r.topic] is NOTIFICATIONS_REQUESTED, r.topic, r.offset)
            )
            for record in records:
                await self._with_outage_retry(self._process_guarded, record, stop)
            if records:
                await self._with_outage_retry(self._commit, None, stop)
            now = time.monotonic()
            if not records or now - self._last_housekeeping >= self.housekeeping_seconds:
                self._last_housekeeping = now
                did = await self._with_outage_retry(self._housekeeping, None, stop)
                if until_idle and not records and not did and await self._caught_up():
                    break

    async def _commit(self, _: None) -> bool:
        assert self.consumer is not None
        await self.consumer.commit()
        return True

    async def _with_outage_retry(
        self, fn: Callable[[A], Awaitable[T]], arg: A, stop: asyncio.Event
    ) -> T:
        """Run ``fn(arg)``, retrying with backoff while PostgreSQL or Kafka is unavailable;
        :class:`_Stopping` when ``stop`` is set meanwhile. Why raise: returning would let the
        loop go on to the batch's other records and commit offsets past the one not done."""
        attempt = 0
        while True:
            try:
                return await fn(arg)
            except _INFRA_ERRORS as exc:
                delay = OUTAGE_BACKOFF[min(attempt, len(OUTAGE_BACKOFF) - 1)]
                attempt += 1
                log.warning("notify.outage_retry", error=type(exc).__name__, delay=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    raise _Stopping from exc

    async def _caught_up(self) -> bool:
        assert self.consumer is not None
        assignment = self.consumer.assignment()
        if not assignment:
            return False
        ends = await self.consumer.end_offsets(list(assignment))
        for tp in assignment:
            if await self.consumer.position(tp) < ends[tp]:
                return False
        return True

    async def _process_guarded(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """:meth:`process`, with an unexpected error dead-lettered rather than fatal."""
        try:
            await self.process(record)
        except _INFRA_ERRORS:
            raise
        except Exception as exc:
            # Type only: a database error's text can quote row values (personal data).
            log.error(
                "notify.processing_error",
                topic=record.topic,
                offset=record.offset,
                error=type(exc).__name__,
            )
            await self._dead_letter(
                self._specs[record.topic], record, f"processing error: {type(exc).__name__}", None
            )

    async def process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Handle one Kafka record; invalid ones go to the dead-letter topic with the reason."""
        assert self.dispatcher is not None and self.pool is not None
        spec = self._specs[record.topic]
        started = time.perf_counter()
        try:
            event = decode(record.value)
        except InvalidEvent as exc:
            await self._dead_letter(spec, record, exc.reason, exc.field)
            return
        if spec is RESIDENTS:
            # Registrations, opt-outs and erasures act on the identity store directly (at once);
            # from this topic the worker needs only preference changes.
            if isinstance(event, ResidentUpdated):
                try:
                    await apply_resident_update(self.pool, event)
                except PreferenceError as exc:
                    await self._dead_letter(spec, record, str(exc), exc.field)
                    return
        elif spec is SETUPS:
            if await apply_setup_event(self.pool, event):
                self.stats.setups += 1
            else:
                kind = getattr(event, "type", "?")
                await self._dead_letter(spec, record, f"type: {kind} does not belong here", "type")
                return
        elif isinstance(event, NotificationRequested):
            try:
                summary = await self._handle_request(event)
            except AudienceError as exc:
                await self._dead_letter(spec, record, str(exc), exc.field)
                return
            self._count(summary, record.topic)
        else:
            kind = getattr(event, "type", "?")
            await self._dead_letter(spec, record, f"type: {kind} does not belong here", "type")
            return
        EVENTS_PROCESSED.labels(group=self.group, topic=spec.name).inc()
        PROCESSING_SECONDS.labels(group=self.group).observe(time.perf_counter() - started)

    async def _handle_request(self, event: NotificationRequested) -> Summary:
        assert self.dispatcher is not None
        try:
            return await self.dispatcher.handle(event)
        except AudienceError as exc:
            # Topics are not ordered with each other: the set-up may be waiting on its topic.
            if exc.field != "audience.setup_id" or not await self._catch_up_setups():
                raise
            return await self.dispatcher.handle(event)

    async def _catch_up_setups(self) -> bool:
        """Apply every set-up event published so far; True if there were any to apply."""
        assert self.consumer is not None and self.pool is not None
        name = topic_name(SETUPS, self.settings)
        partitions = [tp for tp in self.consumer.assignment() if tp.topic == name]
        if not partitions:
            return False
        ends = await self.consumer.end_offsets(partitions)
        applied = 0
        while True:
            behind = [tp for tp in partitions if await self.consumer.position(tp) < ends[tp]]
            if not behind:
                return applied > 0
            batch = await self.consumer.getmany(*behind, timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    await self._process_guarded(record)
                    applied += 1

    def _count(self, summary: Summary, topic: str) -> None:
        if summary.duplicate:
            self.stats.duplicates += 1
            EVENTS_DUPLICATE.labels(group=self.group, topic=NOTIFICATIONS_REQUESTED.name).inc()
            return
        self.stats.requests += 1
        self.stats.sent += summary.sent
        self.stats.held += summary.held
        self.stats.failed += summary.failed

    async def _dead_letter(
        self,
        spec: TopicSpec,
        record: ConsumerRecord[bytes, bytes],
        reason: str,
        field: str | None,
    ) -> None:
        assert self.producer is not None
        await send_dead_letter_and_wait(
            self.producer, self.settings, spec, record, reason, field, self.group
        )
        self.stats.dead_letters += 1

    async def _housekeeping(self, _: None) -> bool:
        """Open the quarter's survey wave, release due messages, start due digests, purge
        expired tokens; True if it sent or published anything."""
        assert self.dispatcher is not None and self.pool is not None
        opened = await self.waves.tick() if self.waves is not None else None
        released = await self.dispatcher.release_due()
        digests = await run_digests(self.dispatcher)
        await purge_expired_tokens(self.pool, self.clock())
        moved = released.sent + released.failed + digests.sent + digests.failed
        self.stats.sent += released.sent + digests.sent
        return moved > 0 or opened is not None


async def run_worker(
    settings: Settings, stop: asyncio.Event | None = None, until_idle: bool = False
) -> WorkerStats:
    stop = stop or asyncio.Event()
    # Its own /metrics (sends, holds, failures live in this process) and its ops_workers row.
    async with worker_metrics(settings, "notifications"):
        worker = NotificationWorker(settings)
        await worker.start()
        try:
            return await worker.run(stop, until_idle=until_idle)
        finally:
            await worker.stop()


def cli(args: argparse.Namespace) -> int:
    """``lpt notify [--until-idle]``: run the notification worker in the foreground."""
    settings = get_settings()
    until_idle = bool(getattr(args, "until_idle", False))

    async def main() -> WorkerStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        return await run_worker(settings, stop, until_idle)

    stats = asyncio.run(main())
    print(
        f"notification worker: {stats.requests} requests, {stats.sent} sent, "
        f"{stats.held} held for digest, {stats.failed} failed, {stats.duplicates} duplicates, "
        f"{stats.dead_letters} dead letters"
    )
    return 0
