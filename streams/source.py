"""The input stage: read the four input topics in large batches, validate, re-key by entity.

Why not a Faust agent: input topics carry one event per message, and Faust's per-message path
(conductor, event object, stream iteration, acknowledgement bookkeeping) cost more CPU than the
rest of the pipeline together (measured with py-spy during ``benchmarks/stream_backfill.py``).
Here aiokafka hands over thousands of records per ``getmany``; each is validated against its
topic's models straight from the bytes, turned into a compact entity item, and the items leave
as a few large messages per ``entities`` partition.

Guarantee: at least once, made exact downstream. Offsets are committed only after every item
and dead letter of the batch was acknowledged by the broker; after a crash or a rebalance the
uncommitted records are read again, and the ledger stage recognises their event ids.

The consumer group is ``<app id>-input`` (the internal stages stay in the Faust group ``<app
id>``); ``lpt wait-idle`` checks the input group first, then the internal topics.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from lpt.deadletter import send_dead_letter
from lpt.kafka import make_producer, topic_name
from lpt.logs import get_logger
from lpt.metrics import EVENTS_PROCESSED, PROCESSING_SECONDS, STAGE_DELAY_SECONDS
from lpt.settings import Settings
from schemas.registry import InvalidEvent, TopicDecoder
from schemas.topics import CRIME, DOORKNOCKS, RESIDENTS, SURVEYS, TopicSpec
from streams.gcpause import collector_held
from streams.items import chunks, entity_item, partition_for

log = get_logger(__name__)

INPUT_SPECS = (CRIME, RESIDENTS, SURVEYS, DOORKNOCKS)
#: The longest wait for a batch (ms): large batches (``LPT_STREAM_INPUT_BATCH``) when behind,
#: a short wait when live.
WAIT_MS = 20


def input_group(app_id: str) -> str:
    return f"{app_id}-input"


class InputStage:
    """Decode, validate and re-key one topic's records. Stateless; pure apart from the sends."""

    def __init__(self, spec: TopicSpec, settings: Settings, group: str) -> None:
        self.spec = spec
        self.settings = settings
        self.group = group
        self.decode = TopicDecoder(spec.value_types, spec.name)

    async def process(
        self,
        records: Sequence[Any],
        out: dict[int, list[bytes]],
        producer: AIOKafkaProducer,
        pending: list[asyncio.Future[Any]],
    ) -> None:
        """Append each valid record's encoded item to ``out[entities partition]``; queue dead
        letters for the others on ``producer`` (their acks in ``pending``)."""
        partitions = self.settings.topic_partitions
        for record in records:
            try:
                event = self.decode(record.value)
            except InvalidEvent as exc:
                pending.append(await self._dead(producer, record, exc.reason, exc.field))
                continue
            except Exception as exc:  # a validator bug must not stop the worker either
                reason = f"undecodable: {type(exc).__name__}: {exc}"
                pending.append(await self._dead(producer, record, reason, None))
                continue
            keyed = entity_item(event)
            if keyed is not None:
                key, item = keyed
                out[partition_for(key, partitions)].append(orjson.dumps(item))
        EVENTS_PROCESSED.labels(group=self.group, topic=self.spec.name).inc(len(records))

    async def _dead(
        self, producer: AIOKafkaProducer, record: Any, reason: str, field: str | None
    ) -> asyncio.Future[Any]:
        return await send_dead_letter(
            producer, self.settings, self.spec, record, reason, field, self.group
        )


class InputSource:
    """The consume -> validate -> produce -> commit loop of one worker."""

    def __init__(self, settings: Settings, app_id: str, entities_topic: str) -> None:
        self.settings = settings
        self.group = input_group(app_id)
        self.entities_topic = entities_topic
        self.stages = {
            topic_name(spec, settings): InputStage(spec, settings, self.group)
            for spec in INPUT_SPECS
        }
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Until :meth:`stop`. A failure that is not the broker being away stops the process
        (uncommitted records are read again after the restart)."""
        try:
            await self._start()
            while not self._stopping.is_set():
                assert self.consumer is not None
                batch = await self.consumer.getmany(
                    timeout_ms=WAIT_MS, max_records=self.settings.stream_input_batch
                )
                if batch:
                    await self._process(batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("streams.input_failed")
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            await self._close()

    def stop(self) -> None:
        """End :meth:`run` after the batch in hand (callable from a signal handler)."""
        self._stopping.set()

    async def _start(self) -> None:
        self.producer = make_producer(self.settings, linger_ms=2)
        self.consumer = AIOKafkaConsumer(
            *self.stages,
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            # A killed worker's partitions move to the others after 10 s, not 45 s.
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            # A backfill batch may take seconds; never be thrown out of the group for it.
            max_poll_interval_ms=600_000,
        )
        await self.producer.start()
        await self.consumer.start()

    async def _close(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                try:
                    await client.stop()
                except Exception:  # closing after a broker failure may fail too
                    log.warning("streams.input_close_failed", exc_info=True)

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self.consumer is not None
        started = time.perf_counter()
        oldest = min(records[0].timestamp for records in batch.values()) / 1000.0
        STAGE_DELAY_SECONDS.labels(stage="input").observe(max(0.0, time.time() - oldest))
        delay = 0.5
        while True:
            try:
                with collector_held():
                    await self._forward(batch)
                break
            except KafkaError as exc:
                # The broker is away: do the batch again once it is back (repeats are
                # harmless: the ledger recognises event ids, dead letters are at least once).
                log.warning("streams.input_send_retry", error=str(exc)[:200], delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The group rebalanced (or the broker left) while we worked: the records are read
            # again by whoever owns them next, and the ledger drops the repeats.
            log.warning("streams.input_commit_failed", error=str(exc)[:200])
        PROCESSING_SECONDS.labels(group="input").observe(time.perf_counter() - started)

    async def _forward(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Items and dead letters of the batch, sent and acknowledged."""
        assert self.producer is not None
        out: dict[int, list[bytes]] = defaultdict(list)
        pending: list[asyncio.Future[Any]] = []
        for tp, records in batch.items():
            await self.stages[tp.topic].process(records, out, self.producer, pending)
        for partition, items in sorted(out.items()):
            for group in chunks(items):
                value = b'{"i":[' + b",".join(group) + b"]}"
                pending.append(
                    await self.producer.send(self.entities_topic, value, partition=partition)
                )
        if pending:
            await asyncio.gather(*pending)
