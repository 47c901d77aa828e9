"""Test fixtures: real Kafka and real PostgreSQL, never mocks.

With a Docker engine answering, testcontainers starts the official images. Without one (these
machines), the project's own scripts start Apache Kafka (KRaft) and PostgreSQL under a test
LPT_HOME on ports of their own, so a running ``make run`` is left alone.

Isolation: ``isolated_settings`` gives a test its own topic prefix and its own database, so tests
never see each other's events or rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_HOME = Path(os.environ.get("LPT_TEST_HOME", ROOT / ".lpt" / "test"))

# Settings come from the environment; fix it before any project module reads it.
os.environ.setdefault("LPT_HOME", str(TEST_HOME))
os.environ.setdefault("LPT_KAFKA_PORT", "29092")
os.environ.setdefault("LPT_KAFKA_CONTROLLER_PORT", "29093")
os.environ.setdefault("LPT_PG_PORT", "25432")
os.environ.setdefault("LPT_HTTP_PORT", "28080")
os.environ.setdefault("LPT_LOG_FORMAT", "console")
os.environ.setdefault("LPT_LOG_LEVEL", "warning")
os.environ.setdefault("LPT_TOPIC_PARTITIONS", "6")

from lpt.settings import Settings, get_settings  # noqa: E402

DATA_DIR = Path(os.environ.get("LPT_DATA_DIR", ROOT.parent / "shared" / "data"))


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """Kafka and PostgreSQL for the whole session, migrated, topics created."""
    from lpt.services import prepare, run_script

    containers: list[object] = []
    if os.environ.get("LPT_KAFKA_BOOTSTRAP") or os.environ.get("LPT_DATABASE_URL"):
        pass  # the caller gave servers
    elif docker_engine_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        kafka = KafkaContainer("apache/kafka:4.1.1").with_kraft()
        pg = PostgresContainer("postgres:15", username="lpt", password="lpt", dbname="lpt")
        kafka.start()
        pg.start()
        containers = [kafka, pg]
        os.environ["LPT_KAFKA_BOOTSTRAP"] = kafka.get_bootstrap_server()
        os.environ["LPT_DATABASE_URL"] = pg.get_connection_url().replace("+psycopg2", "")
    get_settings.cache_clear()
    settings = get_settings()
    if settings.local_kafka:
        run_script("kafka.sh", "start", settings=settings)
    if settings.local_postgres:
        run_script("postgres.sh", "start", settings=settings)
        run_script("postgres.sh", "wait", settings=settings)
    if settings.local_kafka:
        run_script("kafka.sh", "wait", settings=settings)
    asyncio.run(prepare(settings))
    yield settings
    for c in containers:
        c.stop()  # type: ignore[attr-defined]


@pytest.fixture
async def isolated_settings(stack: Settings) -> AsyncIterator[Settings]:
    """Settings with a fresh topic prefix (topics created) and a fresh migrated database."""
    from lpt.scratch import create_scratch, delete_topics, drop_database

    settings = await create_scratch(stack, "t")
    yield settings
    await drop_database(settings)
    with contextlib.suppress(Exception):  # topic cleanup must never fail a test
        await delete_topics(settings)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.exists():
        pytest.skip(f"sample data not found at {DATA_DIR}")
    return DATA_DIR
