"""Server-rendered HTML for the public pages: templates, security headers, error pages.

Why server-rendered with Jinja2 (autoescaped): the pages must work without JavaScript on any
phone, and everything a resident typed is escaped by default when it is shown back to them.

Every page gets the same headers: a strict Content-Security-Policy (no inline script, forms
post only to us, no framing), ``Referrer-Policy: no-referrer`` (personal links carry a token in
the path, which must not leak to another site), and ``Cache-Control: no-store`` (a shared
computer must not keep someone's details or links in its cache).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from api.context import SETTINGS
from api.public import csrf
from api.public.state import public_state
from consumers.notifications.tokens import TokenStatus

TEMPLATES = Path(__file__).with_name("templates")

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; object-src 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


#: Times are shown in the force's own time zone, the way people read them.
LOCAL_ZONE = ZoneInfo("Europe/London")


def when(value: str | datetime | None) -> str:
    """``2026-11-25T22:14:58+00:00`` -> ``25 November 2026 at 10:14pm`` (GOV.UK style)."""
    if value is None or value == "":
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = moment.astimezone(LOCAL_ZONE)
    hour = local.strftime("%I").lstrip("0") or "12"
    return f"{local.day} {local:%B %Y} at {hour}:{local:%M}{local:%p}".replace("AM", "am").replace(
        "PM", "pm"
    )


def lookup(values: list[str], table: Mapping[str, str]) -> list[str]:
    """Codes to words (``email`` -> ``Email``), unknown codes as they are."""
    return [table.get(v, v) for v in values]


def make_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["lookup"] = lookup
    return env


def service_name(request: web.Request) -> str:
    return f"{request.app[SETTINGS].force_name}: your neighbourhood"


def page(
    request: web.Request,
    template: str,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> web.Response:
    """Render ``template`` with the common context; sets the CSRF cookie when it was created."""
    settings = request.app[SETTINGS]
    context.setdefault("errors", {})
    context.setdefault("values", {})
    html = (
        public_state(request)
        .templates.get_template(template)
        .render(
            service_name=service_name(request),
            force_name=settings.force_name,
            csrf_field=csrf.FIELD,
            csrf_token=csrf.form_token(request),
            **context,
        )
    )
    response = web.Response(
        text=html,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )
    csrf.set_cookie(request, response)
    return response


def message_page(
    request: web.Request,
    status: int,
    title: str,
    paragraphs: list[str],
    *,
    headers: Mapping[str, str] | None = None,
    links: list[tuple[str, str]] | None = None,
) -> web.Response:
    """A plain page that explains an outcome or a problem in a sentence or two."""
    return page(
        request,
        "message.html",
        status=status,
        headers=headers,
        title=title,
        paragraphs=paragraphs,
        links=links or [],
    )


def csrf_refused(request: web.Request) -> web.Response:
    return message_page(
        request,
        403,
        "Your form could not be sent",
        [
            "For your security, forms on this site only work for a limited time and only from "
            "this site. Nothing you entered has been saved.",
            "Go back, reload the page and try again.",
        ],
    )


def rate_limited(request: web.Request, retry_after: float) -> web.Response:
    minutes = max(1, round(retry_after / 60))
    return message_page(
        request,
        429,
        "Too many attempts",
        [
            "There have been too many attempts from your connection. Nothing has been saved.",
            f"Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
        ],
        headers={"Retry-After": str(int(retry_after) + 1)},
    )


def service_unavailable(request: web.Request) -> web.Response:
    return message_page(
        request,
        503,
        "Sorry, there is a problem with the service",
        ["Nothing has been saved. Try again in a few minutes."],
        headers={"Retry-After": "60"},
    )


def link_refused(
    request: web.Request, status: TokenStatus, again: tuple[str, str] | None = None
) -> web.Response:
    """Why a personal link does not work, in words (tampered links look like unknown ones)."""
    if status is TokenStatus.USED:
        code, title = 410, "This link has already been used"
        text = ["Each link works only once."]
    elif status is TokenStatus.EXPIRED:
        code, title = 410, "This link has expired"
        text = ["Links work for a limited time, to keep your details safe."]
    else:
        code, title = 404, "This link does not work"
        text = [
            "Check that you copied the whole link from the message. If you did, it may be "
            "an old link that no longer exists."
        ]
    return message_page(request, code, title, text, links=[again] if again else None)
