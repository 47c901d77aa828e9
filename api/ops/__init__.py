"""Operations for the web service (issue 6): ``/metrics``, the ops page, dead-letter replay.

``setup(app)`` adds the routes, a trace-id middleware (outermost, so every log line of a
request carries its trace id) and the process-wide state (lag sampler, HTTP client for worker
scrapes). Module map: ``lag`` (consumer lag and throughput), ``metrics`` (aggregation of the
workers' metrics), ``deadletters`` (inspect and replay), ``workers`` (health from
``ops_workers``), ``auth`` (admin role or ops token), ``views`` (pages and JSON), ``trace``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import asyncpg
from aiohttp import web
from aiokafka.errors import KafkaError

from api.context import RESOURCES, SETTINGS
from lpt.logs import get_logger

from . import views
from .lag import LagSampler
from .metrics import aggregate_response, export_heartbeats, local_response, scrape_workers
from .state import OPS, OpsState, ops_state
from .trace import trace_middleware
from .workers import list_workers

log = get_logger(__name__)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; ``?scope=local`` for this process only (see ``api.ops.metrics``).

    Open like ``/healthz``: it holds counts and names of topics and groups, never personal
    data; restrict it at the network if even that should stay inside.
    """
    res = request.app[RESOURCES]
    state = ops_state(request)
    try:
        await state.sampler.snapshot(res.admin, res.offsets)
    except (KafkaError, TimeoutError, OSError) as exc:
        log.warning("ops.lag_unavailable", error=type(exc).__name__)
    try:
        workers = await list_workers(res.pool)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("ops.workers_unavailable", error=type(exc).__name__)
        workers = []
    export_heartbeats(workers)
    if request.query.get("scope") == "local":
        return local_response()
    return aggregate_response(await scrape_workers(state.http, workers))


async def _ops_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as http:
        app[OPS] = OpsState(LagSampler(app[SETTINGS]), http)
        yield


def setup(app: web.Application) -> None:
    app.middlewares.insert(0, trace_middleware)
    app.cleanup_ctx.append(_ops_ctx)
    app.router.add_get("/metrics", metrics)
    views.setup_routes(app)
