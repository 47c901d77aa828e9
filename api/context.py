"""Resources the web service shares across requests, opened at start-up and closed at shutdown.

One asyncpg pool and one aiokafka producer per process: a producer per request would pay a
connection and metadata round trip each time and lose batching, the gateway's main speed-up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from identity.vault import IdentityVault
from lpt.db import create_pool
from lpt.geo import ForceArea
from lpt.kafka import make_producer
from lpt.logs import get_logger
from lpt.settings import Settings
from producers.intake import Intake

log = get_logger(__name__)


@dataclass(frozen=True)
class Resources:
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    admin: AIOKafkaAdminClient
    offsets: AIOKafkaConsumer
    vault: IdentityVault
    intake: Intake
    force_area: ForceArea


SETTINGS = web.AppKey("settings", Settings)
RESOURCES = web.AppKey("resources", Resources)


async def resources_ctx(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: open everything, yield while serving, close in reverse."""
    from api.topic_stats import make_offsets_consumer

    settings = app[SETTINGS]
    force_area = ForceArea.from_settings(settings)  # fail at start-up, not on the first POST
    pool = await create_pool(settings, min_size=1, max_size=10)
    producer = make_producer(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=10_000
    )
    offsets = make_offsets_consumer(settings)
    started: list[AIOKafkaProducer | AIOKafkaAdminClient | AIOKafkaConsumer] = []
    try:
        for client in (producer, admin, offsets):
            await client.start()
            started.append(client)
        vault = IdentityVault.from_settings(pool, settings)
        app[RESOURCES] = Resources(
            pool=pool,
            producer=producer,
            admin=admin,
            offsets=offsets,
            vault=vault,
            intake=Intake(pool, producer, vault, settings),
            force_area=force_area,
        )
        log.info("web.resources_ready", kafka=settings.bootstrap_servers)
        yield
    finally:
        for client in reversed(started):
            if isinstance(client, AIOKafkaAdminClient):
                await client.close()
            else:
                await client.stop()
        await pool.close()
