"""One-click unsubscribe: the link at the end of every message, and RFC 8058 one-click POST.

The link carries the resident's pseudonymous id and an HMAC of it
(:func:`consumers.notifications.tokens.unsubscribe_token`); nothing is looked up to check it.

- GET shows a page with one button and changes nothing: mail scanners and link previews open
  links by themselves, and must not unsubscribe anyone.
- POST unsubscribes at once. It is what the button sends, and what a mail client sends for
  ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058), without cookies, so there is
  no CSRF check: the signed token is the proof. The opt-out is committed to the identity store
  before anything else (:meth:`producers.intake.Intake.opt_out`), so the notification worker,
  which re-reads it before every send, stops at once, even if Kafka is briefly down.

Repeating it is harmless; a link of someone already erased says the same (nothing can be sent
to them any more).
"""

from __future__ import annotations

from aiohttp import web

from api.context import RESOURCES
from api.public.render import link_refused, message_page, page
from api.public.state import public_state
from consumers.notifications.tokens import TokenStatus, verify_unsubscribe_token
from lpt.logs import get_logger
from producers.intake import PublishFailed, ResidentNotFound

log = get_logger(__name__)


def _resident(request: web.Request) -> str | None:
    return verify_unsubscribe_token(
        public_state(request).unsubscribe_key, request.match_info["token"]
    )


async def unsubscribe_page(request: web.Request) -> web.Response:
    if _resident(request) is None:
        return link_refused(request, TokenStatus.UNKNOWN)
    return page(request, "unsubscribe.html", token=request.match_info["token"])


async def unsubscribe_submit(request: web.Request) -> web.Response:
    resident = _resident(request)
    if resident is None:
        return link_refused(request, TokenStatus.UNKNOWN)
    try:
        await request.app[RESOURCES].intake.opt_out(resident, reason="unsubscribe_link")
    except ResidentNotFound:
        pass  # erased: nothing can be sent to them
    except PublishFailed:
        # The opt-out is in effect (identity store); its event is late. Logged by the intake's
        # caller here so an operator can see it; the resident is unsubscribed either way.
        log.warning("public.opt_out_event_pending", resident_id=resident)
    return message_page(
        request,
        200,
        "You have been unsubscribed",
        [
            "We will not send you any more messages, starting now.",
            "We still hold your details until you ask us to delete them.",
        ],
        links=[("/manage", "Get a link to see or delete your details")],
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/unsubscribe/{token}", unsubscribe_page)
    app.router.add_post("/unsubscribe/{token}", unsubscribe_submit)
