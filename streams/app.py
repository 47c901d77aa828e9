"""The stream worker: a faust-streaming app that turns the input topics into live priority tables.

Topology (all internal topics are named after the app id, so a second app id rebuilds
everything side by side by replaying the inputs):

    crime.incidents ┐                       entities            deltas              summaries
    residents.*     ├─ input agents ──> (by entity) ─ ledger ─> (by cell) ─ cells ─> (1 part.) ─ scorer
    surveys.answers │  decode/validate      dedupe, versions,     res-9 cell          ranks, reasons,
    doorknocks.*    ┘  dead letters         retractions, NR ring  states (table)      PostgreSQL,
                                            (tables)                                  priority.changed,
                                                                                      officer.alerts

The consumer group is the app id (``LPT_STREAM_APP_ID``, default ``<topic prefix>streams``).
Tables are changelog-backed RocksDB stores (rocksdict) under ``$LPT_HOME/streams``; each worker
process on a host takes its own slot directory (a file lock), so several workers can share a
machine and a restarted worker finds its state again.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import gc
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import faust
from aiokafka import TopicPartition
from faust.types import TP

from lpt.kafka import create_topic, ensure_topics, topic_name
from lpt.logs import get_logger
from lpt.metrics import PROCESSING_SECONDS, STAGE_DELAY_SECONDS
from lpt.metrics_server import WorkerMetricsServer
from lpt.settings import Settings, get_settings
from schemas.envelope import Envelope
from schemas.registry import encode
from schemas.topics import (
    OFFICER_ALERTS,
    PRIORITY_CHANGED,
    event_key,
    topic_for,
)
from streams.faustio import TableWriter, send_all
from streams.scorer import Scorer
from streams.scoring.cellstate import decode_state, thaw
from streams.source import InputSource
from streams.stages import CellStage, LedgerStage
from streams.watchdog import CHECK_SECONDS, StuckPartitionWatchdog

log = get_logger(__name__)

#: Messages per batch and the longest wait for a batch to fill (seconds). Input messages are
#: single events; internal messages carry hundreds of items each.
INTERNAL_BATCH, SUMMARY_BATCH = 200, 200
WITHIN = 0.05
#: The scorer re-ranks the whole force per batch (a fixed cost of tens of milliseconds), so it
#: gathers changes for longer: at most ten runs a second, whatever the input rate.
SCORER_WITHIN = 0.1


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


def internal_topics(settings: Settings) -> dict[str, str]:
    base = app_id(settings)
    return {name: f"{base}-{name}" for name in ("entities", "deltas", "summaries")}


def _take_slot(root: Path) -> tuple[Path, TextIO]:
    """The first free slot directory under ``root`` (held by an flock for our lifetime)."""
    root.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:
        path = root / f"slot-{slot}"
        path.mkdir(exist_ok=True)
        handle = open(path / "lock", "w")  # noqa: SIM115 - held open until the process exits
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            slot += 1
            continue
        return path, handle


def create_app(settings: Settings, datadir: Path | None = None) -> tuple[faust.App, Scorer]:
    """The Faust app and its scorer (exposed for tests and the benchmark)."""
    ident = app_id(settings)
    partitions = settings.topic_partitions
    app = faust.App(
        ident,
        broker=f"kafka://{settings.bootstrap_servers}",
        store="rocksdb://",
        datadir=str(datadir or settings.home / "streams" / ident),
        topic_partitions=partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        web_enabled=False,
        broker_commit_interval=0.5,
        # A killed worker's partitions move to the others after 10 s, not Kafka's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=4 * 1024 * 1024,
        producer_linger_ms=2,
        stream_buffer_maxsize=INTERNAL_BATCH * 4,
        key_serializer="raw",
        value_serializer="raw",
    )

    def raw() -> Any:
        # A fresh Schema each time: a Table rewrites the serializers of the Schema it is given,
        # so a shared instance silently turns every topic's keys into JSON (decode errors).
        return faust.Schema(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    names = internal_topics(settings)
    entities = app.topic(names["entities"], schema=raw(), partitions=partitions, internal=True)
    deltas = app.topic(names["deltas"], schema=raw(), partitions=partitions, internal=True)
    summaries = app.topic(names["summaries"], schema=raw(), partitions=1, internal=True)
    outputs = {
        spec.name: app.topic(topic_name(spec, settings), schema=raw())
        for spec in (PRIORITY_CHANGED, OFFICER_ALERTS)
    }

    def table(name: str, n: int) -> Any:
        return app.Table(
            name,
            key_type=bytes,
            value_type=bytes,
            partitions=n,
            help=name,
            options=dict(ROCKSDB_OPTIONS),  # a copy: the store pops keys from it
        )

    ledgers = {name: table(name, partitions) for name in ("incidents", "residents", "addresses")}
    cells = table("cells", partitions)
    scorer_cells = table("scorer_cells", 1)

    async def publish(events: Sequence[Envelope]) -> None:
        pending = []
        for event in events:
            topic = outputs[topic_for(event).name]
            pending.append(await topic.send(key=event_key(event), value=encode(event)))
        await send_all(pending)

    scorer = Scorer(settings, publish)

    source = InputSource(settings, ident, names["entities"])

    async def read_inputs() -> None:
        await source.run()

    app.task(read_inputs)

    # This worker's /metrics and its heartbeat row in ops_workers (the ops page, Prometheus).
    metrics = WorkerMetricsServer(settings, "streams")

    async def serve_metrics() -> None:
        await metrics.start()

    app.task(serve_metrics)

    writers = {name: TableWriter(app, t) for name, t in ledgers.items()}
    ledger_stage = LedgerStage(ledgers, writers, deltas, partitions, ident)
    cell_stage = CellStage(cells, TableWriter(app, cells), summaries)
    scorer_writer = TableWriter(app, scorer_cells)

    @app.agent(entities, name="ledger")
    async def ledger(stream: Any) -> None:
        async for events in stream.take_events(INTERNAL_BATCH, within=WITHIN):
            await _guard(ledger_stage.process(events), "ledger", events)

    @app.agent(deltas, name="cells")
    async def cell_agent(stream: Any) -> None:
        async for events in stream.take_events(INTERNAL_BATCH, within=WITHIN):
            await _guard(cell_stage.process(events), "cells", events)

    @app.agent(summaries, name="scorer")
    async def score(stream: Any) -> None:
        async for events in stream.take_events(SUMMARY_BATCH, within=SCORER_WITHIN):
            await _guard(_score(events), "scorer", events)

    activation = asyncio.Lock()

    async def ensure_active() -> None:
        async with activation:
            if not scorer.active:
                await scorer.activate(_stored(scorer_cells))

    def owns_scorer() -> bool:
        """This worker holds the summaries partition and its table is restored."""
        tables: Any = app.tables
        if app.rebalancing or app.in_recovery or not tables.recovery.completed.is_set():
            return False
        return TP(names["summaries"], 0) in app.consumer.assignment()

    async def _score(events: list[Any]) -> None:
        await ensure_active()
        items: list[tuple[str, int, Any]] = []
        latest: dict[str, tuple[int, bytes]] = {}
        for ev in events:
            for line in ev.message.value.split(b"\n"):
                cell, seq, state = decode_state(line)
                items.append((cell, seq, thaw(state)))
                if seq >= latest.get(cell, (-1, b""))[0]:
                    latest[cell] = (seq, line)
        await scorer.on_batch(items)
        await scorer_writer.write([(events[-1], c, line) for c, (_, line) in latest.items()])

    async def settle() -> None:
        # A scorer that takes over after a rebalance must settle (and say so in
        # priority_status) even if no new summary ever reaches it.
        if not scorer.active and owns_scorer():
            await _guard(ensure_active(), "scorer activate")
        await _guard(scorer.tick(), "scorer settle")

    app.timer(interval=0.25)(settle)

    def assigned_internal() -> set[TopicPartition] | None:
        if app.rebalancing or app.in_recovery:
            return None
        tables: Any = app.tables
        if not tables.recovery.completed.is_set():
            return None
        return {TopicPartition(tp.topic, tp.partition) for tp in app.consumer.assignment()}

    watchdog = StuckPartitionWatchdog(
        settings.bootstrap_servers, ident, names.values(), assigned_internal
    )

    async def watch() -> None:
        try:
            await watchdog.check()
        except Exception as exc:  # Kafka away: judge nothing this time
            log.warning("streams.watchdog_check_failed", error=str(exc)[:200])

    app.timer(interval=CHECK_SECONDS)(watch)

    async def on_revoked(app: Any, revoked: Any, **_: Any) -> None:
        if any(tp.topic == names["summaries"] for tp in revoked):
            scorer.deactivate()

    async def on_shutdown(app: Any, **_: Any) -> None:
        scorer.deactivate()
        await scorer.close()
        await source.stop()
        await metrics.stop()
        await watchdog.close()

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(on_shutdown)  # type: ignore[arg-type]

    return app, scorer


def _stored(table: Any) -> list[tuple[str, int, Any]]:
    out = []
    for raw in table.values():
        cell, seq, state = decode_state(raw)
        thaw(state)
        out.append((cell, seq, state))
    return out


async def _guard(work: Any, what: str, events: Sequence[Any] = ()) -> None:
    """Run one stage's batch, timed (``lpt_stream_stage_delay_seconds`` is how long its oldest
    message waited, ``lpt_processing_seconds`` how long the batch took).

    An unexpected failure must not let Faust acknowledge (and commit) the batch: log it and
    stop the process at once, so the batch is processed again after a restart."""
    started = time.time()
    if events:
        oldest = min(ev.message.timestamp for ev in events)
        STAGE_DELAY_SECONDS.labels(stage=what).observe(max(0.0, started - oldest))
    try:
        await work
        PROCESSING_SECONDS.labels(group=what).observe(time.time() - started)
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


def cli(args: argparse.Namespace) -> int:
    """``lpt worker``: run one stream worker in the foreground until SIGTERM/SIGINT."""
    settings = get_settings()
    asyncio.run(ensure_topics(settings))
    asyncio.run(ensure_internal_topics(settings))
    root = settings.home / "streams" / app_id(settings)
    datadir, lock = _take_slot(root)
    app, _ = create_app(settings, datadir)
    # The stages allocate millions of small, short-lived lists and dicts; Python's default
    # collector thresholds make it scan them every 700 allocations. Start-up objects (modules,
    # reference data) are frozen out of the scans, and young collections run less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    log.info("streams.worker_starting", app_id=app_id(settings), datadir=str(datadir))
    worker = faust.Worker(app, loglevel="WARN", redirect_stdouts=False, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        lock.close()
    return 0
