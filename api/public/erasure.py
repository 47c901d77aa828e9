"""Deleting one's details: a confirmation step, then crypto-shredding.

Erasure is :meth:`producers.intake.Intake.request_erasure`: the person's key and identity row
are destroyed first (every sealed copy, including those in the Kafka log, becomes unreadable at
that moment) and ``resident.erasure_requested`` is published for the stream processors. Rows
that belong to the person here (their links, preferences, reply tokens) go with the identity
row; what remains is pseudonymous ids and area counts.

If Kafka does not take the event, the erasure has still happened; the event is retried a few
times and then logged for an operator (the resident's link no longer exists to retry with).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from api.context import RESOURCES
from api.public import audit, csrf
from api.public.forms import read_form
from api.public.links import check_link
from api.public.manage import AGAIN
from api.public.render import csrf_refused, link_refused, message_page, page
from api.public.state import public_state
from consumers.notifications.tokens import TokenRefused
from lpt.logs import get_logger
from producers.intake import PublishFailed, ResidentNotFound

log = get_logger(__name__)

EVENT_RETRIES = (0.5, 2.0)


async def erase_page(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    try:
        await check_link(
            request.app[RESOURCES].pool, token, "manage", public_state(request).clock()
        )
    except TokenRefused as exc:
        return link_refused(request, exc.status, AGAIN)
    return page(request, "erase.html", token=token)


async def erase_submit(request: web.Request) -> web.Response:
    form = await read_form(request)
    if not csrf.valid(request, form):
        return csrf_refused(request)
    token = request.match_info["token"]
    res = request.app[RESOURCES]
    try:
        resident = await check_link(res.pool, token, "manage", public_state(request).clock())
    except TokenRefused as exc:
        return link_refused(request, exc.status, AGAIN)
    await audit.record(res.pool, resident, "erase", "manage_link")
    for delay in (*EVENT_RETRIES, None):
        try:
            await res.intake.request_erasure(resident)
            break
        except ResidentNotFound:
            break  # erased already (a second tab, a double press)
        except PublishFailed:
            if delay is None:
                log.error("public.erasure_event_pending", resident_id=resident)
                break
            await asyncio.sleep(delay)
    log.info("public.erased", resident_id=resident)
    return message_page(
        request,
        200,
        "Your details have been deleted",
        [
            "We have deleted your contact details and destroyed the key that protected "
            "everything else about you. We will not contact you again.",
            "Figures about your area that your answers were part of remain, but they cannot "
            "be linked back to you.",
        ],
        links=[("/register", "Sign up again")],
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/manage/{token}/erase", erase_page)
    app.router.add_post("/manage/{token}/erase", erase_submit)
