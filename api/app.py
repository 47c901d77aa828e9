"""The web service: one aiohttp application for the gateway, the intake and the status page.

``create_app`` takes the settings explicitly so tests run the real application against their
own isolated topics and database; ``lpt serve`` (``cli``) runs it with the environment's.
``/healthz`` answers as long as the process serves requests (``lpt up`` waits for it);
``/readyz`` checks that Kafka and PostgreSQL answer, for load balancers and ``lpt status``.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from api import ingest, intake, officer, ops, public, status
from api.context import RESOURCES, SETTINGS, resources_ctx
from api.http import ApiKeys, error_middleware
from lpt.logs import get_logger
from lpt.settings import Settings, get_settings
from schemas.envelope import SourceSystem

log = get_logger(__name__)

READY_TIMEOUT_S = 5.0


def _check_systems(keys: dict[str, str]) -> None:
    """Fail at start-up, not on every request, when a key's system cannot be an event source."""
    adapter: TypeAdapter[str] = TypeAdapter(SourceSystem)
    for system in sorted(set(keys.values())):
        try:
            adapter.validate_python(system)
        except ValidationError:
            raise ValueError(
                f"LPT_INGEST_API_KEYS: system name {system!r} must be 1-64 lower-case letters, "
                "digits, '.', '_' or '-'"
            ) from None


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    res = request.app[RESOURCES]
    checks: dict[str, str] = {}

    async def kafka() -> None:
        await res.admin.list_topics()

    async def postgres() -> None:
        await res.pool.fetchval("SELECT 1")

    for name, probe in (("kafka", kafka), ("postgres", postgres)):
        try:
            await asyncio.wait_for(probe(), READY_TIMEOUT_S)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unavailable ({type(exc).__name__})"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


def create_app(settings: Settings) -> web.Application:
    _check_systems(settings.ingest_api_keys)
    app = web.Application(
        client_max_size=settings.max_request_bytes, middlewares=[error_middleware]
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(resources_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    ingest.setup(app, ApiKeys(settings.ingest_api_keys))
    intake.setup(app)
    status.setup(app)
    public.setup(app)
    officer.setup(app)
    ops.setup(app)
    return app


def cli(_: argparse.Namespace) -> int:
    """``lpt serve``: run the web service in the foreground until SIGINT/SIGTERM."""
    settings = get_settings()
    if not settings.ingest_api_keys:
        log.warning("web.no_ingest_keys", hint="set LPT_INGEST_API_KEYS=system:key")
    log.info("web.serving", url=settings.base_url + "/")
    web.run_app(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        print=None,
        access_log=None,
    )
    return 0
