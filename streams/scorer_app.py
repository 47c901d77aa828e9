"""The scorer process: a Faust app of its own on the single-partition ``summaries`` topic.

Why a process of its own: the scorer re-ranks the whole force per batch (tens to hundreds of
milliseconds with a year of state). In the stages' event loop that work held up the input,
ledger and cell stages (live latency), and on a 2-core machine it took a share of the one core
the stages had. In its own process it uses the other core and its pauses delay nobody else.

Its consumer group is ``<app id>-scorer``; only the member that holds partition 0 of
``summaries`` scores (the others stand by and take over after a rebalance). Its table
``scorer_cells`` keeps each cell's latest summary, so a scorer taking over rebuilds the model
from the changelog without replaying the pipeline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
from aiokafka import TopicPartition

from lpt.kafka import topic_name
from lpt.logs import get_logger
from lpt.settings import Settings
from schemas.envelope import Envelope
from schemas.registry import encode
from schemas.topics import OFFICER_ALERTS, PRIORITY_CHANGED, event_key, topic_for
from streams.app import (
    bytes_table,
    faust_app,
    guard,
    internal_topics,
    raw_schema,
    scorer_app_id,
    serve_metrics,
    settled_assignment,
    watch_stuck_partitions,
)
from streams.faustio import TableWriter, send_all
from streams.lag import UpstreamProbe
from streams.scorer import SLOW_SECONDS, Scorer, Summary
from streams.scoring.cellstate import decode_state, summary_head, thaw

log = get_logger(__name__)

#: Summary messages per batch and the longest wait for a batch to fill (seconds). The scorer
#: re-ranks the whole force per batch; summaries that arrive meanwhile form the next batch, so
#: a short wait is enough to batch them under load.
SUMMARY_BATCH = 200
SCORER_WITHIN = 0.02


def create_scorer_app(settings: Settings, datadir: Path | None = None) -> tuple[faust.App, Scorer]:
    """The scorer's Faust app and its :class:`~streams.scorer.Scorer` (exposed for tests)."""
    ident = scorer_app_id(settings)
    app = faust_app(ident, settings, datadir or settings.home / "streams" / ident)
    summaries_topic = internal_topics(settings)["summaries"]
    summaries = app.topic(summaries_topic, schema=raw_schema(), partitions=1)
    outputs = {
        spec.name: app.topic(topic_name(spec, settings), schema=raw_schema())
        for spec in (PRIORITY_CHANGED, OFFICER_ALERTS)
    }
    scorer_cells = bytes_table(app, "scorer_cells", 1)
    writer = TableWriter(app, scorer_cells)

    async def publish(events: Sequence[Envelope]) -> None:
        pending = []
        for event in events:
            topic = outputs[topic_for(event).name]
            pending.append(await topic.send(key=event_key(event), value=encode(event)))
        await send_all(pending)

    upstream = UpstreamProbe(settings)
    scorer = Scorer(settings, publish, upstream.busy)
    serve_metrics(app, settings, "scorer")
    activation = asyncio.Lock()

    async def ensure_active() -> None:
        async with activation:
            if not scorer.active:
                await scorer.activate(_stored(scorer_cells))

    def owns_scorer() -> bool:
        """This process holds the summaries partition and its table is restored."""
        assigned = settled_assignment(app)
        return assigned is not None and TopicPartition(summaries_topic, 0) in assigned

    async def score_batch(events: list[Any]) -> None:
        await ensure_active()
        latest: dict[str, tuple[int, bytes]] = {}
        for ev in events:
            for line in ev.message.value.split(b"\n"):
                cell, seq = summary_head(line)
                if seq >= latest.get(cell, (-1, b""))[0]:
                    latest[cell] = (seq, line)
        # Only each cell's newest state matters (the model keeps the highest sequence).
        await scorer.on_batch([_summary(line) for _, line in latest.values()])
        started = time.monotonic()
        await writer.write([(events[-1], c, line) for c, (_, line) in latest.items()])
        took = time.monotonic() - started
        if took > SLOW_SECONDS:
            log.warning("streams.scorer_changelog_slow", seconds=round(took, 3), cells=len(latest))

    @app.agent(summaries, name="scorer")
    async def score(stream: Any) -> None:
        async for events in stream.take_events(SUMMARY_BATCH, within=SCORER_WITHIN):
            await guard(score_batch(events), "scorer", events)

    async def settle() -> None:
        # A scorer that takes over after a rebalance must settle (and say so in
        # priority_status) even if no new summary ever reaches it.
        if not scorer.active and owns_scorer():
            await guard(ensure_active(), "scorer activate")
        await guard(scorer.tick(), "scorer settle")

    app.timer(interval=0.25)(settle)
    watch_stuck_partitions(app, settings, [summaries_topic])

    async def on_revoked(app: Any, revoked: Any, **_: Any) -> None:
        if any(tp.topic == summaries_topic for tp in revoked):
            scorer.deactivate()

    async def on_shutdown(app: Any, **_: Any) -> None:
        scorer.deactivate()
        await scorer.close()
        await upstream.close()

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(on_shutdown)  # type: ignore[arg-type]
    return app, scorer


def _summary(raw: bytes) -> Summary:
    """A ``[cell, seq, state]`` summary line (or stored value), its state thawed."""
    cell, seq, state = decode_state(raw)
    return cell, seq, thaw(state)


def _stored(table: Any) -> list[Summary]:
    return [_summary(raw) for raw in table.values()]
