"""Information pages: how residents' information is used (the full privacy notice)."""

from __future__ import annotations

from aiohttp import web

from api.public.links import CONFIRM_TTL, MANAGE_TTL
from api.public.render import page


async def privacy(request: web.Request) -> web.Response:
    return page(
        request,
        "privacy.html",
        confirm_hours=int(CONFIRM_TTL.total_seconds() // 3600),
        manage_hours=int(MANAGE_TTL.total_seconds() // 3600),
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/privacy", privacy)
