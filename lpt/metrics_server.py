"""A worker's own ``/metrics`` endpoint and its entry in the worker registry (``ops_workers``).

Why each worker serves its metrics: prometheus-client counters live in the process that
counts, so the stream and notification workers must expose their own. Why a registry in
PostgreSQL: workers come and go (scaled with partitions, restarted, crashed) on ports chosen at
start-up, and the web service needs their addresses to aggregate their metrics into its own
``/metrics`` and to show worker health on the ops page. A heartbeat row per worker answers both
"where is it" and "is it alive" without another service.

Use from a worker's async start-up::

    async with worker_metrics(settings, "notifications"):
        await run_the_worker()

or keep a :class:`WorkerMetricsServer` and call ``start()`` / ``stop()`` yourself. Nothing here
can stop a worker: if the port is taken or PostgreSQL is away, it logs and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lpt.db import create_pool
from lpt.logs import get_logger
from lpt.metrics import REGISTRY
from lpt.settings import Settings

log = get_logger(__name__)

#: How often a worker refreshes ``ops_workers.last_seen``.
HEARTBEAT_SECONDS = 5.0
#: A worker whose heartbeat is older than this is shown as not responding.
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
#: Rows of workers unseen this long are deleted when another worker registers.
FORGET_AFTER_SECONDS = 24 * 3600

_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def worker_name(kind: str) -> str:
    """Unique per process and readable: ``<kind>-<host>-<pid>``."""
    return f"{kind}-{socket.gethostname()}-{os.getpid()}"


def advertised_host(settings: Settings) -> str:
    """The address other processes use to reach this one's metrics port.

    With a wildcard bind (containers), that is this machine's address on the route to the
    Kafka broker, which is the network the web service shares with the workers.
    """
    if settings.metrics_host not in _WILDCARD_HOSTS:
        return settings.metrics_host
    first = settings.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host.strip("[]") or first, int(port or 9092)))
            return str(probe.getsockname()[0])
    except (OSError, ValueError):
        return socket.gethostname()


async def metrics_handler(_: web.Request) -> web.Response:
    """This process's metrics in the Prometheus text format."""
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class WorkerMetricsServer:
    """Serves ``/metrics`` and ``/healthz`` on ``settings.metrics_port`` and heartbeats."""

    def __init__(self, settings: Settings, kind: str, *, register: bool = True) -> None:
        self.settings = settings
        self.kind = kind
        self.name = worker_name(kind)
        self.register = register
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._pool: asyncpg.Pool | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> str | None:
        """Start serving; returns the metrics URL (None if the port could not be bound)."""
        app = web.Application()
        app.router.add_get("/metrics", metrics_handler)
        app.router.add_get("/healthz", _healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.metrics_host, self.settings.metrics_port)
        try:
            await site.start()
        except OSError as exc:
            log.warning(
                "metrics.bind_failed",
                host=self.settings.metrics_host,
                port=self.settings.metrics_port,
                error=type(exc).__name__,
            )
            await runner.cleanup()
            return None
        self._runner = runner
        port = int(runner.addresses[0][1])
        self.url = f"http://{advertised_host(self.settings)}:{port}/metrics"
        log.info("metrics.serving", worker=self.name, url=self.url)
        if self.register:
            # Registered before start() returns, so the web service can scrape it at once.
            ok = await self._try_beat(failing=False)
            self._heartbeat = asyncio.create_task(self._beat(ok), name=f"heartbeat:{self.name}")
        return self.url

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._pool is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._pool.execute(
                    "UPDATE ops_workers SET stopped_at = now(), last_seen = now() WHERE name = $1",
                    self.name,
                )
            await self._pool.close()
            self._pool = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def beat_once(self) -> None:
        """Upsert this worker's row (re-creates it if the database lost it)."""
        if self._pool is None:
            self._pool = await create_pool(self.settings, min_size=0, max_size=1)
            await self._pool.execute(
                "DELETE FROM ops_workers WHERE last_seen < now() - make_interval(secs => $1)",
                float(FORGET_AFTER_SECONDS),
            )
        await self._pool.execute(
            """INSERT INTO ops_workers (name, kind, url, host, pid)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (name) DO UPDATE
                 SET url = EXCLUDED.url, last_seen = now(), stopped_at = NULL""",
            self.name,
            self.kind,
            self.url,
            socket.gethostname(),
            os.getpid(),
        )

    async def _try_beat(self, failing: bool) -> bool:
        """One heartbeat; logs only changes (failing <-> working), never raises."""
        try:
            await asyncio.wait_for(self.beat_once(), HEARTBEAT_SECONDS)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if not failing:
                log.warning("metrics.heartbeat_failed", worker=self.name, error=type(exc).__name__)
            if self._pool is not None:
                pool, self._pool = self._pool, None
                pool.terminate()
            return False
        if failing:
            log.info("metrics.heartbeat_restored", worker=self.name)
        return True

    async def _beat(self, ok: bool) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            ok = await self._try_beat(failing=not ok)


@asynccontextmanager
async def worker_metrics(
    settings: Settings, kind: str, *, register: bool = True
) -> AsyncIterator[WorkerMetricsServer]:
    """Serve this worker's metrics (and register it) for the duration of the block."""
    server = WorkerMetricsServer(settings, kind, register=register)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
