"""``lpt cells`` (the priority table, for analysts and checks) and ``lpt wait-idle``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from lpt.kafka import partitions_of, topic_name
from lpt.settings import Settings, get_settings
from streams.app import app_id, internal_topics
from streams.scorer_app import scorer_app_id
from streams.source import INPUT_SPECS, input_group

LEVEL_OF_RES = {9: "res9", 8: "res8", 7: "res7"}


async def fetch_cells(settings: Settings, level: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(settings.dsn)
    try:
        rows = await conn.fetch(
            "SELECT area_id, score, rank, areas_ranked, in_top, components, reasons, actions,"
            " streets, counts, survey, engagement, ward_code, local_authority_code, as_of,"
            " weights_version FROM priority_areas WHERE level = $1 ORDER BY rank",
            level,
        )
    finally:
        await conn.close()
    out = []
    for r in rows:
        components = json.loads(r["components"])
        out.append(
            {
                "cell": r["area_id"],
                "score": r["score"],
                "rank": r["rank"],
                "cells_ranked": r["areas_ranked"],
                "in_top": r["in_top"],
                "components": {k: v["raw"] for k, v in components.items()},
                "percentiles": {k: v["percentile"] for k, v in components.items()},
                "reasons": json.loads(r["reasons"]),
                "actions": json.loads(r["actions"]),
                "streets": json.loads(r["streets"]),
                "counts": json.loads(r["counts"]),
                "survey": json.loads(r["survey"]) if r["survey"] else None,
                "engagement": json.loads(r["engagement"]),
                "ward_code": r["ward_code"],
                "local_authority_code": r["local_authority_code"],
                "as_of": r["as_of"].isoformat().replace("+00:00", "Z"),
                "weights_version": r["weights_version"],
            }
        )
    return out


def cells(args: argparse.Namespace) -> int:
    """``lpt cells --res 9 [--json]``: every cell with score, rank, raw components, reasons."""
    level = LEVEL_OF_RES.get(args.res)
    if level is None:
        print(f"--res must be one of {sorted(LEVEL_OF_RES)}", file=sys.stderr)
        return 2
    rows = asyncio.run(fetch_cells(get_settings(), level))
    if args.json:
        json.dump(rows, sys.stdout, indent=None, separators=(",", ":"))
        sys.stdout.write("\n")
        return 0
    print(f"{'rank':>5} {'cell':16} {'score':>6}  top reason")
    for r in rows:
        reason = r["reasons"][0]["text"] if r["reasons"] else ""
        print(f"{r['rank']:>5} {r['cell']:16} {r['score']:6.3f}  {reason[:90]}")
    print(f"{len(rows)} cells, as of {rows[0]['as_of'] if rows else '-'}")
    return 0


# --------------------------------------------------------------------------- wait-idle


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

    async def __aenter__(self) -> LagProbe:
        await self.admin.start()
        try:
            await self.consumer.start()
        except BaseException:
            await self.admin.close()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

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


async def scorer_settled(settings: Settings, conn: asyncpg.Connection | None = None) -> bool:
    """True unless the scorer still has deferred rows to write (or has not reported yet while
    cells exist)."""
    own = conn is None
    if conn is None:
        conn = await asyncpg.connect(settings.dsn)
    try:
        row = await conn.fetchrow("SELECT settled FROM priority_status WHERE id = 'scorer'")
    except asyncpg.UndefinedTableError:
        return True
    finally:
        if own:
            await conn.close()
    return row is None or bool(row["settled"])


async def wait_until_idle(
    settings: Settings, timeout: float, poll: float = 0.5, only: Sequence[str] | None = None
) -> bool:
    """True once two checks in a row found no lag and the scorer settled; False at ``timeout``.
    A broker or database restart is not a reason to give up waiting (clients are reopened)."""
    deadline = time.monotonic() + timeout
    quiet_checks = 0
    while time.monotonic() < deadline:
        try:
            conn = await asyncpg.connect(settings.dsn)
            try:
                async with LagProbe(settings) as probe:
                    while time.monotonic() < deadline:
                        lags = await probe.lags(only)
                        idle = all(v == 0 for v in lags.values())
                        if idle and await scorer_settled(settings, conn):
                            quiet_checks += 1
                            if quiet_checks >= 2:
                                return True
                        else:
                            quiet_checks = 0
                        await asyncio.sleep(poll)
            finally:
                await conn.close()
        except (KafkaError, OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            quiet_checks = 0
            await asyncio.sleep(poll)
    return False


def wait_idle(args: argparse.Namespace) -> int:
    """``lpt wait-idle [--timeout S]``: 0 once every consumer group has caught up, 1 on timeout."""
    settings = get_settings()
    if asyncio.run(wait_until_idle(settings, args.timeout)):
        print("idle")
        return 0
    lags = asyncio.run(group_lag(settings))
    print("not idle after timeout: " + json.dumps(lags), file=sys.stderr)
    return 1
