"""How far behind the stream worker's consumer groups are (``lpt wait-idle``, the scorer's
"is the pipeline upstream drained" check, tests and benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from lpt.kafka import partitions_of, topic_name
from lpt.logs import get_logger
from lpt.settings import Settings
from streams.app import app_id, internal_topics, scorer_app_id
from streams.source import INPUT_SPECS, input_group

log = get_logger(__name__)


def stream_groups(settings: Settings) -> list[str]:
    """The stream worker's consumer groups in pipeline order: input, stages, scorer."""
    ident = app_id(settings)
    return [input_group(ident), ident, scorer_app_id(settings)]


class LagProbe:
    """Kafka clients kept open across lag checks (a waiting loop that opened new clients on
    every check cost a noticeable share of a core on a small machine)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)

    async def start(self) -> LagProbe:
        try:
            await self.admin.start()
            await self.consumer.start()
        except BaseException:
            await self.close()  # clients that failed to start (or never did) are still open
            raise
        return self

    async def close(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def __aenter__(self) -> LagProbe:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def lags(self, only: Sequence[str] | None = None) -> dict[str, int]:
        """See :func:`group_lag`."""
        settings, admin, consumer = self.settings, self.admin, self.consumer
        ordered = stream_groups(settings)
        stream_group = ordered[1]
        if only is not None:
            mine = list(only)
        else:
            groups = sorted(
                g[0] if isinstance(g, tuple) else g.group_id
                for g in await admin.list_consumer_groups()
            )
            mine = ordered + [
                g
                for g in groups
                if (g.startswith(settings.topic_prefix) or g.startswith(stream_group))
                and g not in ordered
            ]
        internal = internal_topics(settings)
        pipeline = {
            ordered[0]: [topic_name(t, settings) for t in INPUT_SPECS],
            stream_group: [internal["entities"], internal["deltas"]],
            ordered[2]: [internal["summaries"]],
        }
        existing: set[str] | None = None
        lags: dict[str, int] = {}
        for group in mine:
            committed = await admin.list_consumer_group_offsets(group)
            topics = list(dict.fromkeys(tp.topic for tp in committed))
            if group in pipeline:
                # Every topic of the stage, read or not yet (an unread topic is all lag).
                if existing is None:
                    existing = set(await admin.list_topics())
                stage_topics = pipeline[group]
                topics = [t for t in stage_topics if t in existing] + [
                    t for t in topics if t not in stage_topics
                ]
            partitions = await partitions_of(admin, topics)
            tps = [TopicPartition(t, p) for t in topics for p in partitions.get(t, [])]
            if not tps:
                lags[group] = 0
                continue
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            lag = 0
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
                lag += max(0, ends[tp] - done)
            lags[group] = lag
        return lags


async def group_lag(settings: Settings, only: Sequence[str] | None = None) -> dict[str, int]:
    """Messages not yet committed per consumer group of this deployment (topic prefix), or of
    the groups named in ``only``. The stream group's topics are checked in pipeline order, so
    "all zero" cannot miss a message moving from one stage to the next during the check."""
    async with LagProbe(settings) as probe:
        return await probe.lags(only)


class UpstreamProbe:
    """Whether the input source or the stages still have messages to process (the scorer's
    ``upstream_busy``). Its Kafka clients open on the first question and stay open; when Kafka
    cannot answer, the answer is "not busy", so the scorer settles on its timers as it would
    without the check."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.groups = stream_groups(settings)[:2]
        self.probe: LagProbe | None = None

    async def busy(self) -> bool:
        try:
            if self.probe is None:
                self.probe = await LagProbe(self.settings).start()
            lags = await self.probe.lags(self.groups)
        except (KafkaError, OSError) as exc:
            log.warning("streams.upstream_check_failed", error=str(exc)[:200])
            await self.close()
            return False
        return any(lags.values())

    async def close(self) -> None:
        probe, self.probe = self.probe, None
        if probe is not None:
            try:
                await probe.close()
            except Exception:  # closing after a broker failure may fail too
                log.warning("streams.upstream_probe_close_failed", exc_info=True)
