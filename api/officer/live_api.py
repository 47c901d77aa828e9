"""``/api/v1/live``: the server-sent event stream of priority changes and alerts in scope."""

from __future__ import annotations

from aiohttp import web

from api.officer.access import READERS, require
from api.officer.live import stream
from api.officer.state import officer_state


async def live_handler(request: web.Request) -> web.StreamResponse:
    account = await require(request, READERS)
    return await stream(request, officer_state(request).live, account.scope)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/live", live_handler)
