"""Confirming an e-mail address with the single-use link from the sign-up e-mail.

Opening the link (GET) only shows a button; pressing it (POST) uses the link up. Mail
scanners and link previews open links on their own, and must not spend a single-use link
before the person does.

A resident whose e-mail did not arrive asks for a new link by entering their address; the
answer is the same whether or not the address is signed up, so the form cannot be used to find
out who is.
"""

from __future__ import annotations

from aiohttp import web

from api.context import RESOURCES
from api.public import csrf
from api.public.forms import read_form, text
from api.public.links import MANAGE_TTL, check_link, issue_link, redeem_link
from api.public.register import client_key, send_confirmation
from api.public.render import csrf_refused, link_refused, message_page, page, rate_limited
from api.public.state import public_state
from consumers.notifications.tokens import TokenRefused
from lpt.logs import get_logger

log = get_logger(__name__)

AGAIN = ("/confirm", "Ask for a new link")


async def confirm_page(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    try:
        await check_link(
            request.app[RESOURCES].pool, token, "confirm_email", public_state(request).clock()
        )
    except TokenRefused as exc:
        return link_refused(request, exc.status, AGAIN)
    return page(request, "confirm.html", token=token)


async def confirm_submit(request: web.Request) -> web.Response:
    form = await read_form(request)
    if not csrf.valid(request, form):
        return csrf_refused(request)
    token = request.match_info["token"]
    pool, state = request.app[RESOURCES].pool, public_state(request)
    now = state.clock()
    async with pool.acquire() as conn, conn.transaction():
        try:
            resident_id = await redeem_link(conn, token, "confirm_email", now)
        except TokenRefused as exc:
            return link_refused(request, exc.status, AGAIN)
        await conn.execute(
            """UPDATE identity_people SET email_confirmed_at = COALESCE(email_confirmed_at, $2)
               WHERE resident_id = $1""",
            resident_id,
            now,
        )
        manage_token = await issue_link(conn, resident_id, "manage", now)
    log.info("public.email_confirmed", resident_id=resident_id)
    return page(
        request,
        "confirmed.html",
        manage_url=f"/manage/{manage_token}",
        hours=int(MANAGE_TTL.total_seconds() // 3600),
    )


async def resend_form(request: web.Request) -> web.Response:
    return page(request, "resend.html")


async def resend_submit(request: web.Request) -> web.Response:
    state = public_state(request)
    wait = state.link_limit.hit(client_key(request))
    if wait is not None:
        return rate_limited(request, wait)
    form = await read_form(request)
    if not csrf.valid(request, form):
        return csrf_refused(request)
    email = text(form, "email", 254)
    if "@" not in email:
        errors = {"email": "Enter the email address you signed up with, like name@example.com"}
        return page(request, "resend.html", status=422, errors=errors, values={"email": email})
    resident_id = await request.app[RESOURCES].pool.fetchval(
        """SELECT resident_id FROM identity_people
           WHERE lower(email) = lower($1) AND email_confirmed_at IS NULL
             AND opted_out_at IS NULL""",
        email,
    )
    if resident_id is not None:
        await send_confirmation(request, resident_id, email)
    return message_page(
        request,
        200,
        "Check your email",
        [
            "If that address is signed up and not yet confirmed, we have sent it a new link. "
            "It works once, for 48 hours.",
            "Nothing arrived after a few minutes? Check your spam folder.",
        ],
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/confirm", resend_form)
    app.router.add_post("/confirm", resend_submit)
    app.router.add_get("/confirm/{token}", confirm_page)
    app.router.add_post("/confirm/{token}", confirm_submit)
