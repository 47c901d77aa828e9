"""What is on the topics: message counts per catalogue topic and consumer-group lag.

Counts come from partition offsets (end minus beginning, summed over partitions), so they cost
two small requests whatever the topic size, and they count what retention still holds. Lag is
the end offset minus the group's committed offset, per partition, for the deployment's topics.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from lpt.kafka import (
    QUERY_TIMEOUT_S,
    dead_letter_topic_name,
    group_state,
    offsets_of,
    partitions_of,
    topic_name,
)
from lpt.settings import Settings
from schemas.topics import ALL_TOPICS


@dataclass(frozen=True)
class TopicCount:
    name: str
    catalogue_name: str
    doc: str
    exists: bool
    partitions: int
    messages: int
    dead_letter_name: str | None = None
    dead_letters: int = 0


@dataclass(frozen=True)
class GroupLag:
    group: str
    state: str
    members: int
    lag_by_topic: dict[str, int] = field(default_factory=dict)

    @property
    def total_lag(self) -> int:
        return sum(self.lag_by_topic.values())


@dataclass(frozen=True)
class StatusSnapshot:
    topics: list[TopicCount]
    groups: list[GroupLag]

    def as_json(self) -> dict[str, Any]:
        return {
            "topics": [
                {
                    "name": t.name,
                    "catalogue_name": t.catalogue_name,
                    "doc": t.doc,
                    "exists": t.exists,
                    "partitions": t.partitions,
                    "messages": t.messages,
                    "dead_letter_topic": t.dead_letter_name,
                    "dead_letters": t.dead_letters if t.dead_letter_name else None,
                }
                for t in self.topics
            ],
            "consumer_groups": [
                {
                    "group": g.group,
                    "state": g.state,
                    "members": g.members,
                    "lag": g.total_lag,
                    "lag_by_topic": g.lag_by_topic,
                }
                for g in self.groups
            ],
        }


def make_offsets_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A group-less consumer used only to read partition offsets.

    A short retry backoff: aiokafka learns an unknown topic's partitions one topic per retry, so
    the first status request over the whole catalogue would otherwise wait ~100 ms per topic.
    """
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        retry_backoff_ms=10,
        request_timeout_ms=int(QUERY_TIMEOUT_S * 1000),
    )


async def collect_status(
    settings: Settings, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer
) -> StatusSnapshot:
    """Topic counts for the whole catalogue and lag of every group on the deployment's topics."""
    existing = set(await admin.list_topics())
    wanted: list[tuple[str, str | None]] = [
        (
            topic_name(spec, settings),
            dead_letter_topic_name(spec, settings) if spec.dead_letter else None,
        )
        for spec in ALL_TOPICS
    ]
    names = [n for pair in wanted for n in pair if n is not None and n in existing]
    prefixed = sorted(t for t in existing if t.startswith(settings.topic_prefix))
    parts = await partitions_of(admin, sorted(set(names) | set(prefixed)))
    tps = [TopicPartition(t, p) for t, ps in parts.items() for p in ps]
    begin, end = await offsets_of(consumer, tps)

    def count(name: str | None) -> int:
        if name is None:
            return 0
        return sum(end[tp] - begin[tp] for tp in tps if tp.topic == name)

    topics = [
        TopicCount(
            name=main,
            catalogue_name=spec.name,
            doc=spec.doc,
            exists=main in parts,
            partitions=len(parts.get(main, [])),
            messages=count(main if main in parts else None),
            dead_letter_name=dlq,
            dead_letters=count(dlq if dlq in parts else None),
        )
        for spec, (main, dlq) in zip(ALL_TOPICS, wanted, strict=True)
    ]
    groups = await _group_lags(admin, end, settings.topic_prefix)
    return StatusSnapshot(topics, groups)


async def _group_lags(
    admin: AIOKafkaAdminClient, end: dict[TopicPartition, int], prefix: str
) -> list[GroupLag]:
    listed = sorted({str(g[0]) for g in await admin.list_consumer_groups()})
    limit = asyncio.Semaphore(8)

    async def one(group: str) -> GroupLag | None:
        async with limit:
            committed = await admin.list_consumer_group_offsets(group)
            lag: dict[str, int] = {}
            for tp, om in committed.items():
                if not tp.topic.startswith(prefix) or tp not in end or om.offset < 0:
                    continue
                lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end[tp] - om.offset)
            if not lag:
                return None  # a group of another deployment (other prefix)
            state, members = await group_state(admin, group)
            return GroupLag(group, state, members, dict(sorted(lag.items())))

    results = await asyncio.gather(*(one(g) for g in listed))
    return [g for g in results if g is not None]
