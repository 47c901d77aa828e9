"""Scratch environments: a database of their own (migrated) and a topic prefix of their own.

Why: tests and benchmarks share one Kafka cluster and one PostgreSQL server but must never see
each other's events or rows; and they must remove what they made, because thousands of leftover
partitions exhaust the broker's open files. One implementation serves the test fixtures and
every benchmark.
"""

from __future__ import annotations

import dataclasses
import uuid

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from lpt.db import migrate
from lpt.kafka import ensure_topics
from lpt.settings import Settings


def _server_dsn(dsn: str, database: str) -> str:
    return f"{dsn.rpartition('/')[0]}/{database}"


async def create_database(base: Settings, name: str) -> Settings:
    """``base`` pointed at a new database ``name`` on the same server, migrated."""
    conn = await asyncpg.connect(base.dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    settings = dataclasses.replace(base, database_url=_server_dsn(base.dsn, name))
    await migrate(settings)
    return settings


async def drop_database(settings: Settings) -> None:
    """Drop the database ``settings`` points at (connecting to the server's ``lpt`` database)."""
    name = settings.dsn.rpartition("/")[2]
    conn = await asyncpg.connect(_server_dsn(settings.dsn, "lpt"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def delete_topics(settings: Settings, prefix: str | None = None) -> None:
    """Delete every topic whose name starts with ``prefix`` (default: the settings' prefix)."""
    prefix = prefix or settings.topic_prefix
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()


async def create_scratch(base: Settings, label: str, **overrides: object) -> Settings:
    """Own database ``<label>_<tag>`` and topic prefix ``<label><tag>.`` with topics created."""
    tag = uuid.uuid4().hex[:10]
    settings = await create_database(base, f"{label}_{tag}")
    settings = dataclasses.replace(settings, topic_prefix=f"{label}{tag}.", **overrides)  # type: ignore[arg-type]
    await ensure_topics(settings)
    return settings


async def drop_scratch(settings: Settings) -> None:
    """Remove what :func:`create_scratch` made: the topics, then the database."""
    await delete_topics(settings)
    await drop_database(settings)
