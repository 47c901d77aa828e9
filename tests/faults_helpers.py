"""Helpers for the fault tests: a Kafka broker and a PostgreSQL cluster of their own, a worker
supervisor, a producer that keeps sending through a broker restart, and consumer-group lag.

Why a stack of their own: the fault tests stop and restart the broker and the database. The
shared test servers (conftest's ``stack``) serve every other test running at the same time, so
they are never touched here; the project's own scripts (``infra/kafka.sh``,
``infra/postgres.sh``) start a second pair under ``.lpt/faults`` on other loopback ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from api.topic_stats import StatusSnapshot, collect_status, make_offsets_consumer
from lpt.db import migrate, wait_for_postgres
from lpt.kafka import RawMessage, ensure_topics, make_producer, publish_raw, wait_for_kafka
from lpt.scratch import delete_topics, drop_database
from lpt.settings import Settings, get_settings
from streams.cli import wait_until_idle
from streams.lag import group_lag, stream_groups
from tests.streams_helpers import Worker

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
FAULTS_HOME = Path(os.environ.get("LPT_FAULTS_HOME", ROOT / ".lpt" / "faults"))
#: Loopback ports of the fault stack: never the shared test servers' 29092/29093/25432.
# Next to the suite's own servers (+100), so a second checkout on other ports does not collide.
_BASE_KAFKA = int(os.environ.get("LPT_KAFKA_PORT", "29092"))
_BASE_PG = int(os.environ.get("LPT_PG_PORT", "25432"))
KAFKA_PORT = int(os.environ.get("LPT_FAULTS_KAFKA_PORT", str(_BASE_KAFKA + 100)))
CONTROLLER_PORT = int(os.environ.get("LPT_FAULTS_KAFKA_CONTROLLER_PORT", str(_BASE_KAFKA + 101)))
PG_PORT = int(os.environ.get("LPT_FAULTS_PG_PORT", str(_BASE_PG + 100)))
#: The database every test database is copied from (migrated, reference data loaded once).
TEMPLATE_DB = "faults_template"


@dataclasses.dataclass
class FaultStack:
    """One Kafka broker and one PostgreSQL cluster that the tests may stop and start."""

    home: Path
    settings: Settings
    events: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def create(cls, home: Path = FAULTS_HOME) -> FaultStack:
        settings = dataclasses.replace(
            get_settings(),
            home=home,
            kafka_bootstrap="",
            kafka_port=KAFKA_PORT,
            kafka_controller_port=CONTROLLER_PORT,
            database_url="",
            pg_port=PG_PORT,
            topic_prefix="faults.",
            stream_app_id="",
        )
        assert settings.bootstrap_servers.endswith(f":{KAFKA_PORT}")
        return cls(home, settings)

    # ------------------------------------------------------------------ scripts

    def _script(self, script: str, *args: str, timeout: float = 180) -> None:
        env = dict(os.environ)
        for name in ("LPT_KAFKA_BOOTSTRAP", "LPT_DATABASE_URL"):
            env.pop(name, None)
        env.update(
            LPT_HOME=str(self.home),
            LPT_KAFKA_PORT=str(KAFKA_PORT),
            LPT_KAFKA_CONTROLLER_PORT=str(CONTROLLER_PORT),
            LPT_PG_PORT=str(PG_PORT),
            LPT_KAFKA_HEAP=env.get("LPT_FAULTS_KAFKA_HEAP", "512m"),
        )
        done = subprocess.run(
            ["bash", str(INFRA / script), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{script} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        self.events.append(f"{time.strftime('%H:%M:%S')} {script} {' '.join(args)}")

    def start_kafka(self) -> None:
        """Start the broker; a broker that exits at start-up is started again (twice at most).

        Why: in some runs a restarted broker exited within seconds. Its logs were empty then
        (its SLF4J calls went nowhere; fixed in ``infra/kafka/pom.xml``); once they worked,
        the reason was "Address already in use": the suite ran on ports inside the kernel's
        ephemeral range, and an outgoing connection had taken the broker's port while it was
        down (``infra/ports.sh`` warns of such ports; the defaults are below the range). The
        broker's start-up is not what these tests examine; each failure is kept in ``events``
        and beside the logs (``kafka.out.failed``, ``server.log.failed``)."""
        for attempt in (1, 2, 3):
            self._script("kafka.sh", "start")
            try:
                self._script("kafka.sh", "wait", "120")
                return
            except RuntimeError as exc:
                if attempt == 3:
                    raise
                kafka = self.home / "kafka"
                shutil.copy(kafka / "kafka.out", kafka / "kafka.out.failed")
                with contextlib.suppress(OSError):
                    shutil.copy(kafka / "logs" / "server.log", kafka / "server.log.failed")
                self.events.append(f"{time.strftime('%H:%M:%S')} broker exited at start: {exc}")

    def stop_kafka(self) -> None:
        self._script("kafka.sh", "stop")

    def start_postgres(self) -> None:
        self._script("postgres.sh", "start")
        self._script("postgres.sh", "wait", "60")

    def stop_postgres(self) -> None:
        self._script("postgres.sh", "stop")

    def reset_kafka_data(self) -> None:
        """A fresh log directory (topics of an earlier, interrupted run are gone)."""
        self.stop_kafka()
        shutil.rmtree(self.home / "kafka" / "data", ignore_errors=True)

    def reuse_kafka_jars(self) -> None:
        """Copy the broker's jars from another local home instead of asking Maven again (only
        a set fetched for the current ``infra/kafka/pom.xml``: ``kafka.sh`` keeps its digest)."""
        want = hashlib.sha256((INFRA / "kafka" / "pom.xml").read_bytes()).hexdigest()

        def current(libs: Path) -> bool:
            stamp = libs / ".pom.sha256"
            return stamp.exists() and stamp.read_text().strip() == want

        libs = self.home / "kafka" / "libs"
        if current(libs):
            return
        for other in sorted((ROOT / ".lpt").glob("*/kafka/libs")):
            if other != libs and current(other):
                shutil.rmtree(libs, ignore_errors=True)
                libs.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(other, libs)
                return

    # ------------------------------------------------------------------ lifecycle

    @contextlib.asynccontextmanager
    async def exclusive(self, timeout: float = 540) -> AsyncIterator[None]:
        """One test session at a time on this stack (two ``make test`` runs in one checkout
        would otherwise restart each other's broker)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "faults.lock", "w") as handle:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{self.home} is in use by another test run") from None
                    await asyncio.sleep(1)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    async def prepare(self, data_dir: Path) -> None:
        """Wait for both servers; build the template database with reference data."""
        from reference.loaders import load_reference

        await wait_for_kafka(self.settings)
        await wait_for_postgres(self.settings)
        conn = await asyncpg.connect(self.settings.dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        finally:
            await conn.close()
        template = _on_database(self.settings, TEMPLATE_DB)
        await migrate(template)
        await load_reference(template, data_dir, progress=False)

    async def scratch(self, label: str) -> Settings:
        """Own topic prefix (topics created), own consumer group, own database copied from
        the template (migrated, reference data in)."""
        tag = uuid.uuid4().hex[:8]
        name = f"{label}_{tag}"
        conn = await asyncpg.connect(self.settings.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
        finally:
            await conn.close()
        settings = dataclasses.replace(
            _on_database(self.settings, name), topic_prefix=f"{label}{tag}.", stream_app_id=""
        )
        await ensure_topics(settings)
        return settings

    async def drop(self, settings: Settings) -> None:
        with contextlib.suppress(Exception):  # cleanup must never fail a test
            await delete_topics(settings)
        with contextlib.suppress(Exception):
            await drop_database(settings)


def _on_database(settings: Settings, name: str) -> Settings:
    return dataclasses.replace(settings, database_url=f"{settings.dsn.rpartition('/')[0]}/{name}")


# ---------------------------------------------------------------------- workers


class Supervisor:
    """Keeps one stream worker running, as systemd or Kubernetes would: a worker that exits is
    started again with the same home (its RocksDB slot). Restarts are recorded, not hidden."""

    def __init__(self, settings: Settings, home: Path, name: str = "worker") -> None:
        self.settings = settings
        self.home = home
        self.name = name
        self.worker = Worker(settings, home, name)
        self.restarts: list[str] = []

    def check(self) -> None:
        code = self.worker.proc.poll()
        if code is None:
            return
        self.restarts.append(f"exit {code}: {self.worker.tail(15)}")
        self.worker.log.close()
        self.worker = Worker(self.settings, self.home, self.name)

    def kill(self) -> None:
        self.worker.kill()

    def restart(self) -> None:
        self.worker.kill()
        self.worker = Worker(self.settings, self.home, self.name)

    def stop(self) -> None:
        self.worker.stop()

    @property
    def alive(self) -> bool:
        return self.worker.proc.poll() is None


async def wait_idle_supervised(sup: Supervisor, timeout: float = 180) -> None:
    """Until the stream group has caught up and the scorer settled, restarting a dead worker."""
    deadline = time.monotonic() + timeout
    groups = stream_groups(sup.settings)
    while time.monotonic() < deadline:
        sup.check()
        try:
            if await wait_until_idle(sup.settings, 5, poll=0.3, only=groups):
                sup.check()
                return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass  # the database is coming back
        await asyncio.sleep(0.2)
    raise AssertionError(f"stream worker not idle in time:\n{sup.worker.tail()}")


async def stream_lag(settings: Settings) -> dict[str, int]:
    """Messages not committed yet per stream consumer group (input group, internal stages)."""
    return await group_lag(settings, only=stream_groups(settings))


async def ops_view(settings: Settings) -> StatusSnapshot:
    """Topic counts, dead-letter counts and group lags as the ops page shows them."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    consumer = make_offsets_consumer(settings)
    await admin.start()
    await consumer.start()
    try:
        return await collect_status(settings, admin, consumer)
    finally:
        await consumer.stop()
        await admin.close()


async def input_progress(settings: Settings) -> int:
    """Input messages committed by the stream worker so far (0 before the first commit)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from lpt.kafka import topic_name
    from schemas.topics import INPUT_TOPICS

    inputs = {topic_name(t, settings) for t in INPUT_TOPICS}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        await admin.start()
        offsets = await admin.list_consumer_group_offsets(stream_groups(settings)[0])
    except KafkaError:  # no coordinator yet (first group on a fresh broker) or broker down
        return 0
    finally:
        await admin.close()
    return sum(m.offset for tp, m in offsets.items() if tp.topic in inputs and m.offset > 0)


async def read_topic(settings: Settings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every message of ``topic`` from the beginning to its current end."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described and described[0].get("error_code", 0) == 0, f"no topic {topic}"
    tps = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        # Explicit offsets: seek_to_beginning() left a later consumer in the same process at
        # the end of the partitions now and then (aiokafka 0.14), reading nothing.
        begin = await consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, begin[tp])
        out: list[ConsumerRecord[bytes, bytes]] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


# ---------------------------------------------------------------------- live traffic


@dataclasses.dataclass
class LiveProducer:
    """Sends chunks of pre-encoded messages at a steady pace and keeps going through a broker
    outage: a chunk whose send fails is sent again (at-least-once, so the stream must drop the
    copies) with a fresh producer, until the broker acknowledged it."""

    settings: Settings
    topic: str
    chunks: Sequence[Sequence[RawMessage]]
    pause: float = 0.1
    sent_chunks: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)

    async def run(self) -> None:
        producer = make_producer(self.settings, request_timeout_ms=5000, retry_backoff_ms=200)
        await producer.start()
        try:
            for chunk in self.chunks:
                while True:
                    try:
                        await asyncio.wait_for(publish_raw(producer, self.topic, chunk), 20)
                        break
                    except Exception as exc:  # broker down: back off, reconnect, send again
                        self.failures.append(type(exc).__name__)
                        with contextlib.suppress(Exception):
                            await producer.stop()
                        await asyncio.sleep(0.5)
                        producer = make_producer(
                            self.settings, request_timeout_ms=5000, retry_backoff_ms=200
                        )
                        with contextlib.suppress(Exception):
                            await producer.start()
                self.sent_chunks += 1
                await asyncio.sleep(self.pause)
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()
