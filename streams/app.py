"""The stream worker: a faust-streaming app that turns the input topics into live priority tables.

Topology (all internal topics are named after the app id, so a second app id rebuilds
everything side by side by replaying the inputs):

    crime.incidents ┐                     entities            deltas              summaries
    residents.*     ├─ input source ──> (by entity) ─ ledger ─> (by cell) ─ cells ─> (1 part.) ─ scorer
    surveys.answers │  decode/validate    dedupe, versions,     res-9 cell          ranks, reasons,
    doorknocks.*    ┘  dead letters       retractions, NR ring  states (table)      PostgreSQL,
                                          (tables)                                  priority.changed,
                                                                                    officer.alerts
    |-- input process --------|-- stages process (this module) -------------|  scorer process
       (streams.source)                                                        (streams.scorer_app)

Consumer groups: ``<app id>-input`` (the input source), ``<app id>`` (ledger and cells, this
Faust app) and ``<app id>-scorer``; the app id is ``LPT_STREAM_APP_ID``, default ``<topic
prefix>streams``. Tables are changelog-backed RocksDB stores (rocksdict) under
``$LPT_HOME/streams``. ``streams.worker`` runs the processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import faust
from aiokafka import TopicPartition

from lpt.kafka import create_topic
from lpt.logs import get_logger
from lpt.metrics import PROCESSING_SECONDS, STAGE_DELAY_SECONDS
from lpt.metrics_server import WorkerMetricsServer
from lpt.settings import Settings
from streams import faustfix
from streams.faustio import TableWriter
from streams.gcpause import collector_held
from streams.stages import CellStage, LedgerStage, catch_up
from streams.watchdog import CHECK_SECONDS, StuckPartitionWatchdog

log = get_logger(__name__)

T = TypeVar("T")

#: The longest wait for a batch to fill (seconds): live, a short wait keeps the latency low.
#: (Short waits made Faust's commit and delivery bugs bite often: see ``streams.faustfix`` and
#: ``stages.InputOrder``, which the fault tests exercise at this setting.)
WITHIN = 0.01
#: Messages Faust reads ahead per agent (``stream_buffer_maxsize``).
STREAM_BUFFER = 800
#: Messages per ledger batch. Why so few: in a backlog each ``entities`` message holds thousands
#: of items (an input batch split by partition, up to ``items.MAX_MESSAGE_BYTES``), and a
#: batch's working set (decoded items, ledger entries, deltas, encoded rows) is about 1 kB per
#: item. 200 such messages held ~400k items at once and took the stages process's peak memory
#: to ~1 GB in a 1M-event backfill; 16 hold ~50k (peak ~0.5 GB, same rate, measured with
#: ``benchmarks/stream_backfill.py``). Live messages hold a few items each.
LEDGER_BATCH = 16
#: The cells stage takes bigger batches: after waiting for the ledger to catch up
#: (``stages.catch_up``) it should take everything the ledger sent meanwhile in one batch.
CELLS_BATCH = 1_000


#: Per RocksDB database (one per table partition: 25 with 6 partitions). Faust's defaults
#: (3 x 64 MB write buffers and a 2 GB block cache each) let a worker's memory climb for as
#: long as it runs; these bound it to tens of MB per database, ample for tables this size.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * 1024 * 1024,
}


def app_id(settings: Settings) -> str:
    return settings.stream_app_id or f"{settings.topic_prefix}streams"


def scorer_app_id(settings: Settings) -> str:
    """The scorer process's app id and consumer group (``streams.scorer_app``)."""
    return f"{app_id(settings)}-scorer"


def internal_topics(settings: Settings) -> dict[str, str]:
    base = app_id(settings)
    return {name: f"{base}-{name}" for name in ("entities", "deltas", "summaries")}


def faust_app(ident: str, settings: Settings, datadir: Path) -> faust.App:
    """A Faust app with the settings every stream process shares (and Faust's offset commits
    corrected, see :mod:`streams.faustfix`)."""
    faustfix.install()
    return faust.App(
        ident,
        broker=f"kafka://{settings.bootstrap_servers}",
        store="rocksdb://",
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        web_enabled=False,
        broker_commit_interval=0.5,
        # A killed worker's partitions move to the others after 10 s, not Kafka's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=4 * 1024 * 1024,
        # Faust's default (16 kB) splits a table write of a few hundred kB into dozens of
        # record batches, and aiokafka sends one batch per partition at a time: each waits for
        # the previous one's round trip (measured: the scorer's changelog write took 86 ms
        # per batch, p90 236 ms, more than scoring the batch).
        producer_max_batch_size=1024 * 1024,
        producer_linger_ms=2,
        stream_buffer_maxsize=STREAM_BUFFER,
        key_serializer="raw",
        value_serializer="raw",
    )


def raw_schema() -> Any:
    # A fresh Schema each time: a Table rewrites the serializers of the Schema it is given,
    # so a shared instance silently turns every topic's keys into JSON (decode errors).
    return faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def bytes_table(app: faust.App, name: str, partitions: int) -> Any:
    """A changelog-backed RocksDB table of raw keys and values."""
    return app.Table(
        name,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        help=name,
        options=dict(ROCKSDB_OPTIONS),  # a copy: the store pops keys from it
    )


def settled_assignment(app: faust.App) -> set[TopicPartition] | None:
    """The partitions ``app`` holds, or None while a rebalance or table recovery is under way
    (what it holds then may still change, and its tables may be incomplete)."""
    tables: Any = app.tables
    if app.rebalancing or app.in_recovery or not tables.recovery.completed.is_set():
        return None
    return {TopicPartition(tp.topic, tp.partition) for tp in app.consumer.assignment()}


def watch_stuck_partitions(app: faust.App, settings: Settings, topics: Sequence[str]) -> None:
    """Start the #629 watchdog (``streams.watchdog``) on ``topics`` as a timer of ``app``."""
    watchdog = StuckPartitionWatchdog(
        settings.bootstrap_servers, app.conf.id, topics, lambda: settled_assignment(app)
    )

    async def watch() -> None:
        try:
            await watchdog.check()
        except Exception as exc:  # Kafka away: judge nothing this time
            log.warning("streams.watchdog_check_failed", error=str(exc)[:200])

    app.timer(interval=CHECK_SECONDS)(watch)

    async def on_shutdown(app: Any, **_: Any) -> None:
        await watchdog.close()

    app.on_before_shutdown.connect(on_shutdown)  # type: ignore[arg-type]


def serve_metrics(app: faust.App, settings: Settings, kind: str) -> None:
    """This process's /metrics and its heartbeat row in ops_workers (ops page, Prometheus)."""
    metrics = WorkerMetricsServer(settings, kind)

    async def start() -> None:
        await metrics.start()

    app.task(start)

    async def on_shutdown(app: Any, **_: Any) -> None:
        await metrics.stop()

    app.on_before_shutdown.connect(on_shutdown)  # type: ignore[arg-type]


def create_app(settings: Settings, datadir: Path | None = None) -> faust.App:
    """The stages process: ledger and cell stages (the input source and the scorer run in
    their own processes, see :mod:`streams.source` and :mod:`streams.scorer_app`)."""
    ident = app_id(settings)
    partitions = settings.topic_partitions
    app = faust_app(ident, settings, datadir or settings.home / "streams" / ident)
    names = internal_topics(settings)
    entities = app.topic(
        names["entities"], schema=raw_schema(), partitions=partitions, internal=True
    )
    deltas = app.topic(names["deltas"], schema=raw_schema(), partitions=partitions, internal=True)
    summaries = app.topic(names["summaries"], schema=raw_schema(), partitions=1, internal=True)

    ledgers = {
        name: bytes_table(app, name, partitions) for name in ("incidents", "residents", "addresses")
    }
    cells = bytes_table(app, "cells", partitions)

    serve_metrics(app, settings, "streams")

    writers = {name: TableWriter(app, t) for name, t in ledgers.items()}
    ledger_stage = LedgerStage(ledgers, writers, deltas, partitions, ident)
    cell_stage = CellStage(cells, TableWriter(app, cells), summaries)

    @app.agent(entities, name="ledger")
    async def ledger(stream: Any) -> None:
        async for events in stream.take_events(LEDGER_BATCH, within=WITHIN):
            await guard(ledger_stage.process(events), "ledger", events)

    @app.agent(deltas, name="cells")
    async def cell_agent(stream: Any) -> None:
        async for events in stream.take_events(CELLS_BATCH, within=WITHIN):
            deltas = await guard(cell_stage.process(events), "cells", events)
            # After guard: the batch is done, only its acknowledgement waits.
            await catch_up(ledger_stage, deltas)

    watch_stuck_partitions(app, settings, [names["entities"], names["deltas"]])
    return app


async def guard(work: Awaitable[T], what: str, events: Sequence[Any] = ()) -> T:
    """Run one stage's batch and return its result, timed (``lpt_stream_stage_delay_seconds``
    is how long its oldest message waited, ``lpt_processing_seconds`` how long the batch took).

    An unexpected failure must not let Faust acknowledge (and commit) the batch: log it and
    stop the process at once, so the batch is processed again after a restart."""
    started = time.time()
    if events:
        oldest = min(ev.message.timestamp for ev in events)
        STAGE_DELAY_SECONDS.labels(stage=what).observe(max(0.0, started - oldest))
    try:
        with collector_held():
            result = await work
    except asyncio.CancelledError:
        # Faust's take_events acks a batch in a ``finally``, so a batch cancelled half-way
        # (shutdown, agent restart) would be committed as if processed. Die instead: a restart
        # processes it again, which the stages make exact. (Timers have no batch to lose.)
        if events:
            log.error("streams.batch_cancelled", stage=what)
            os.kill(os.getpid(), signal.SIGKILL)
        raise
    except Exception:
        log.exception("streams.stage_failed", stage=what)
        os.kill(os.getpid(), signal.SIGKILL)
        raise  # not reached
    PROCESSING_SECONDS.labels(group=what).observe(time.time() - started)
    return result


async def ensure_internal_topics(settings: Settings) -> None:
    """Create the app's internal topics before Faust starts.

    Why: two workers starting together both ask Faust to create them; the loser could see
    "topic not found in cluster metadata", ignore the topic and never consume it. Creating
    them here, tolerating "already exists", removes that race.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    names = internal_topics(settings)
    layout = {"entities": settings.topic_partitions, "deltas": settings.topic_partitions}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        for key, name in names.items():
            if name in existing:
                continue
            await create_topic(admin, NewTopic(name, layout.get(key, 1), 1))
    finally:
        await admin.close()
