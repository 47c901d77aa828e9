"""Static files of the public pages: GOV.UK Frontend (from npm) and our own small additions.

GOV.UK Frontend 6 is installed by ``make install`` (``npm ci`` in ``web/``); its compiled CSS
refers to its fonts and images as ``/assets/...``. We serve it under ``/static/vendor/govuk/``
and rewrite those URLs once, in memory, so no file in ``node_modules`` is changed.

The GDS Transport typeface and the crown are for services on GOV.UK only (GOV.UK Frontend's
licence terms); a police force's site is not one. The served CSS therefore drops the two
``@font-face`` rules, so pages fall back to Arial, and the pages use no crown or GOV.UK logo.
The font files themselves stay available under the assets path for a deployment that is on
GOV.UK and wants them back.

The JavaScript is progressive enhancement only (error-summary focus, character counts): every
page works without it.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from lpt.logs import get_logger
from lpt.settings import PROJECT_ROOT

log = get_logger(__name__)

GOVUK_DIST = PROJECT_ROOT / "web" / "node_modules" / "govuk-frontend" / "dist" / "govuk"
OWN_STATIC = Path(__file__).with_name("static")
VENDOR_PREFIX = "/static/vendor/govuk"
OWN_PREFIX = "/static/public"
_FONT_FACE = re.compile(r"@font-face\{[^}]*\}")
_CACHE = {"Cache-Control": "public, max-age=86400"}
CSS_KEY = web.AppKey("public.govuk_css", bytes)


def govuk_css(dist: Path = GOVUK_DIST) -> bytes:
    """The compiled GOV.UK CSS with asset URLs under our prefix and no GDS Transport faces."""
    css = (dist / "govuk-frontend.min.css").read_text(encoding="utf-8")
    css = css.replace("url(/assets/", f"url({VENDOR_PREFIX}/assets/")
    css = _FONT_FACE.sub("", css)
    return css.encode()


async def _css(request: web.Request) -> web.Response:
    body = request.app.get(CSS_KEY)
    if body is None:
        return web.Response(status=404, text="GOV.UK Frontend is not installed (make install)")
    return web.Response(body=body, content_type="text/css", charset="utf-8", headers=_CACHE)


async def _js(_: web.Request) -> web.StreamResponse:
    path = GOVUK_DIST / "govuk-frontend.min.js"
    if not path.is_file():
        return web.Response(status=404, text="GOV.UK Frontend is not installed (make install)")
    return web.FileResponse(path, headers={**_CACHE, "Content-Type": "text/javascript"})


def setup(app: web.Application) -> None:
    try:
        app[CSS_KEY] = govuk_css()
    except OSError:
        log.warning("public.govuk_frontend_missing", path=str(GOVUK_DIST), hint="make install")
    app.router.add_get(f"{VENDOR_PREFIX}/govuk-frontend.min.css", _css)
    app.router.add_get(f"{VENDOR_PREFIX}/govuk-frontend.min.js", _js)
    if (GOVUK_DIST / "assets").is_dir():
        app.router.add_static(f"{VENDOR_PREFIX}/assets", GOVUK_DIST / "assets")
    app.router.add_static(OWN_PREFIX, OWN_STATIC)
