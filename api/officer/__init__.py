"""The officer app: accounts and access, the priority API and pages, set-ups, door knocks,
reports, feedback and live updates (issue 4). ``setup(app)`` wires it into the web service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import h3
from aiohttp import web

from api.context import RESOURCES, SETTINGS
from api.officer import (
    cells,
    contacts,
    doorknocks,
    feedback,
    live_api,
    openapi,
    pages,
    reports,
    session_api,
    setups,
)
from api.officer.accounts import AccountStore, Scope
from api.officer.areas import AreaCache
from api.officer.auth import LoginThrottle, PasswordBackend, SessionStore
from api.officer.cache import ShortCache
from api.officer.demo import seed_demo_accounts
from api.officer.live import LiveHub
from api.officer.projection import Projection
from api.officer.state import OFFICER, OfficerState
from lpt.logs import get_logger
from lpt.settings import PROJECT_ROOT

log = get_logger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
LEAFLET_DIR = PROJECT_ROOT / "web" / "node_modules" / "leaflet" / "dist"
PROJECTION = web.AppKey("officer_projection", Projection)


async def officer_ctx(app: web.Application) -> AsyncIterator[None]:
    """Runs after ``resources_ctx``: the pool and producer exist by now."""
    settings = app[SETTINGS]
    pool = app[RESOURCES].pool
    accounts = AccountStore(pool)
    areas = AreaCache(pool)

    async def in_scope(scope: Scope, cell: str, ward: str | None, la: str | None) -> bool:
        if scope.force_wide or scope.covers(ward, la):
            return True
        index = await areas.get()
        if ward and index.ward_in_scope(ward, scope):
            return True
        try:
            res = h3.get_resolution(cell)
        except Exception:
            return False
        probe = h3.cell_to_parent(cell, 9) if res > 9 else cell
        return index.cell_in_scope(probe, scope)

    live = LiveHub(settings, in_scope)
    app[OFFICER] = OfficerState(
        settings=settings,
        pool=pool,
        accounts=accounts,
        sessions=SessionStore(pool),
        throttle=LoginThrottle(pool),
        backend=PasswordBackend(accounts),
        areas=areas,
        live=live,
        cache=ShortCache(),
    )
    if settings.demo_mode:
        await seed_demo_accounts(accounts)
    projection = Projection(settings, pool, areas)
    await live.start()
    await projection.start()
    app[PROJECTION] = projection
    try:
        yield
    finally:
        await projection.stop()
        await live.stop()


CSP = (
    "default-src 'self'; img-src 'self' data: {tiles}; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Officer pages and API: no framing, no sniffing, no referrer, a strict CSP."""
    path = request.path
    if not (path.startswith("/officer") or path.startswith("/api/v1/")):
        return
    tiles = ""
    tile_url = request.app[SETTINGS].tile_url
    if tile_url:
        scheme, _, rest = tile_url.partition("://")
        host = rest.split("/", 1)[0].replace("{s}", "*")
        tiles = f"{scheme}://{host}"
    response.headers.setdefault("Content-Security-Policy", CSP.format(tiles=tiles))
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if path.startswith("/api/v1/") or path.startswith("/officer"):
        response.headers.setdefault("Cache-Control", "no-store")


async def close_live_streams(app: web.Application) -> None:
    if OFFICER in app:
        app[OFFICER].live.close_all()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(officer_ctx)
    app.on_shutdown.append(close_live_streams)
    app.on_response_prepare.append(security_headers)
    session_api.setup(app)
    cells.setup(app)
    setups.setup(app)
    doorknocks.setup(app)
    reports.setup(app)
    feedback.setup(app)
    contacts.setup(app)
    live_api.setup(app)
    openapi.setup(app)
    pages.setup(app)
    app.router.add_static("/static/officer/", STATIC_DIR)
    if LEAFLET_DIR.is_dir():
        app.router.add_static("/static/vendor/leaflet/", LEAFLET_DIR)
    else:
        log.warning("officer.leaflet_missing", hint="run `make install` (npm ci in web/)")
