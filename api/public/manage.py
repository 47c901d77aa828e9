"""A resident's settings through their personal link: channels, topics, frequency, quiet hours.

The link comes by e-mail or text message, on request, to an address the person signed up with
(``/manage``); the answer to that request is the same whether or not the address is known. The
link (:mod:`.links`, ``manage``) then opens the settings, the copy of the person's data
(:mod:`.mydata`) and erasure (:mod:`.erasure`) for a day.

Settings are validated and stored by :func:`consumers.notifications.preferences.set_preferences`
(the notification worker reads the same table, so a change applies to the very next message),
then announced as ``resident.updated`` on Kafka. The database is the authority: if Kafka is
briefly unavailable the change still holds, and the failure is logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from typing import Any

import asyncpg
from aiohttp import web
from aiokafka.errors import KafkaError

from api.context import RESOURCES, SETTINGS
from api.public import audit, csrf
from api.public.forms import many, read_form, text
from api.public.links import MANAGE_TTL, check_link, issue_link
from api.public.mailer import manage_message, send_personal
from api.public.register import client_key
from api.public.render import (
    csrf_refused,
    link_refused,
    message_page,
    page,
    rate_limited,
    service_unavailable,
)
from api.public.state import public_state
from consumers.notifications.budget import DEFAULT_PREFERENCES
from consumers.notifications.preferences import KINDS, PreferenceError, set_preferences
from consumers.notifications.tokens import TokenRefused, TokenStatus
from lpt.kafka import publish
from lpt.logs import get_logger
from producers.intake import (
    PUBLIC_SOURCE,
    IntakeError,
    PublishFailed,
    ResidentNotFound,
    cell_location,
)
from schemas.residents import ResidentUpdated

log = get_logger(__name__)

AGAIN = ("/manage", "Ask for a new link")
CHANNEL_LABELS = {"email": "Email", "sms": "Text message", "push": "App notifications"}
KIND_LABELS: dict[str, tuple[str, str | None]] = {
    "you_said_we_did": ("What we did about issues people raised", "Our ‘You said, we did’ updates"),
    "survey_invitation": ("Our survey, every three months", None),
    "safety_alert": ("Safety alerts", "Urgent safety alerts always reach you, whatever you choose"),
    "setup_update": ("News about police operations near you", None),
    "other": ("Other news from your neighbourhood team", None),
}
FREQUENCIES: list[tuple[str, str, str | None]] = [
    ("1", "At most one message a week", "Anything more waits for a weekly round-up"),
    ("3", "Up to 3 messages a week", None),
    ("7", "Up to 7 messages a week", None),
    ("0", "Only urgent safety alerts", None),
]
HOURS = [(f"{h:02d}:00", f"{h:02d}:00") for h in range(24)]
_PHONE_STRIP = re.compile(r"[\s().-]")


@dataclass(frozen=True)
class CurrentSettings:
    registered_channels: tuple[str, ...]
    channels: tuple[str, ...]
    topics: tuple[str, ...]
    max_per_week: int
    quiet_start: time
    quiet_end: time
    opted_out: bool


async def current_settings(
    conn: asyncpg.Connection | asyncpg.Pool, resident_id: str
) -> CurrentSettings | None:
    """What the resident chose (or the defaults), for the settings form and the data copy.

    (``preferences.get_preferences`` returns only the budget-relevant part; the form also needs
    channels and topics, so they are read here.)
    """
    row = await conn.fetchrow(
        """SELECT p.channels AS registered, p.opted_out_at, n.channels, n.topics,
                  n.max_per_week, n.quiet_start, n.quiet_end
           FROM identity_people p
           LEFT JOIN notification_preferences n USING (resident_id)
           WHERE p.resident_id = $1""",
        resident_id,
    )
    if row is None:
        return None
    registered = tuple(row["registered"])
    d = DEFAULT_PREFERENCES
    return CurrentSettings(
        registered_channels=registered,
        channels=tuple(c for c in (row["channels"] or registered) if c in registered),
        topics=tuple(row["topics"]) if row["topics"] is not None else KINDS,
        max_per_week=row["max_per_week"] if row["max_per_week"] is not None else d.max_per_week,
        quiet_start=row["quiet_start"] or d.quiet_start,
        quiet_end=row["quiet_end"] or d.quiet_end,
        opted_out=row["opted_out_at"] is not None,
    )


def _form_values(s: CurrentSettings) -> dict[str, Any]:
    return {
        "channels": list(s.channels),
        "topics": list(s.topics),
        "max_per_week": str(s.max_per_week),
        "quiet_start": s.quiet_start.strftime("%H:00"),
        "quiet_end": s.quiet_end.strftime("%H:00"),
    }


def _settings_page(
    request: web.Request,
    token: str,
    current: CurrentSettings,
    values: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
    saved: bool = False,
) -> web.Response:
    frequencies = list(FREQUENCIES)
    if values["max_per_week"] not in {v for v, _, _ in FREQUENCIES}:
        n = values["max_per_week"]
        frequencies.insert(0, (n, f"Up to {n} messages a week", None))
    return page(
        request,
        "manage.html",
        status=status,
        token=token,
        values=values,
        errors=errors,
        saved=saved,
        opted_out=current.opted_out,
        channels=[(c, CHANNEL_LABELS.get(c, c), None) for c in current.registered_channels],
        topics=[(k, *KIND_LABELS.get(k, (k, None))) for k in KINDS],
        frequencies=frequencies,
        hours=HOURS,
        hours_valid=int(MANAGE_TTL.total_seconds() // 3600),
    )


async def _resident(request: web.Request, token: str) -> str | web.Response:
    """The link's resident, or the page explaining why the link does not work."""
    try:
        return await check_link(
            request.app[RESOURCES].pool, token, "manage", public_state(request).clock()
        )
    except TokenRefused as exc:
        return link_refused(request, exc.status, AGAIN)


async def settings_page(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    resident = await _resident(request, token)
    if isinstance(resident, web.Response):
        return resident
    current = await current_settings(request.app[RESOURCES].pool, resident)
    if current is None:
        return link_refused(request, TokenStatus.UNKNOWN, AGAIN)
    return _settings_page(
        request, token, current, _form_values(current), {}, saved=request.query.get("saved") == "1"
    )


def _parse(form: Any, current: CurrentSettings) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {
        "channels": many(form, "channels"),
        "topics": many(form, "topics"),
        "max_per_week": text(form, "max_per_week", 2),
        "quiet_start": text(form, "quiet_start", 5),
        "quiet_end": text(form, "quiet_end", 5),
    }
    errors: dict[str, str] = {}
    if not values["channels"] or any(
        c not in current.registered_channels for c in values["channels"]
    ):
        errors["channels"] = (
            "Select at least one way for us to contact you. To stop all messages, use "
            "‘Stop all messages’ below"
        )
    if any(t not in KINDS for t in values["topics"]):
        errors["topics"] = "Select from the list"
    if not values["max_per_week"].isdigit() or not 0 <= int(values["max_per_week"]) <= 7:
        errors["max_per_week"] = "Select how often we may send you messages"
    for name in ("quiet_start", "quiet_end"):
        if values[name] not in {h for h, _ in HOURS}:
            errors[name] = "Select a time from the list"
    return values, errors


async def settings_submit(request: web.Request) -> web.Response:
    form = await read_form(request)
    if not csrf.valid(request, form):
        return csrf_refused(request)
    token = request.match_info["token"]
    resident = await _resident(request, token)
    if isinstance(resident, web.Response):
        return resident
    res = request.app[RESOURCES]
    current = await current_settings(res.pool, resident)
    if current is None:
        return link_refused(request, TokenStatus.UNKNOWN, AGAIN)
    values, errors = _parse(form, current)
    if errors:
        return _settings_page(request, token, current, values, errors, 422)
    start = time.fromisoformat(values["quiet_start"])
    end = time.fromisoformat(values["quiet_end"])
    try:
        await set_preferences(
            res.pool,
            resident,
            channels=values["channels"],
            topics=values["topics"],
            quiet_hours=(start, end),
            max_per_week=int(values["max_per_week"]),
        )
    except PreferenceError as exc:
        message = str(exc).partition(": ")[2] or "Check this answer"
        return _settings_page(request, token, current, values, {exc.field: message}, 422)
    await audit.record(res.pool, resident, "preferences", "manage_link")
    await _announce(request, resident, values, start, end)
    raise web.HTTPSeeOther(f"/manage/{token}?saved=1")


async def _announce(
    request: web.Request, resident: str, values: dict[str, Any], start: time, end: time
) -> None:
    """``resident.updated`` for the log of record; the stored setting already applies."""
    res = request.app[RESOURCES]
    cell = await res.pool.fetchval(
        "SELECT cell FROM identity_people WHERE resident_id = $1", resident
    )
    event = ResidentUpdated(
        occurred_at=public_state(request).clock(),
        source=PUBLIC_SOURCE,
        resident_id=resident,
        location=cell_location(cell),
        channels=values["channels"],
        quiet_hours=(start.hour, end.hour),
        max_per_week=int(values["max_per_week"]),
    )
    try:
        await publish(res.producer, [event], request.app[SETTINGS])
    except KafkaError as exc:
        log.warning(
            "public.preferences_event_failed", resident_id=resident, error=type(exc).__name__
        )


async def stop_all(request: web.Request) -> web.Response:
    """Opt out from the settings page (the same as the one-click link in every message)."""
    form = await read_form(request)
    if not csrf.valid(request, form):
        return csrf_refused(request)
    token = request.match_info["token"]
    resident = await _resident(request, token)
    if isinstance(resident, web.Response):
        return resident
    try:
        await request.app[RESOURCES].intake.opt_out(resident, reason="preferences")
    except PublishFailed:
        pass  # the opt-out is in effect in the identity store; only its event is late
    except ResidentNotFound:
        pass
    except IntakeError:
        return service_unavailable(request)
    raise web.HTTPSeeOther(f"/manage/{token}")


# -- asking for a link ------------------------------------------------------------------------


async def request_form(request: web.Request) -> web.Response:
    return page(request, "manage_request.html")


async def _find(pool: asyncpg.Pool, contact: str) -> tuple[str, str, str] | None:
    """(resident, channel, address) for an e-mail address or a mobile number, if signed up."""
    if "@" in contact:
        row = await pool.fetchrow(
            "SELECT resident_id, email FROM identity_people WHERE lower(email) = lower($1)",
            contact,
        )
        return (row["resident_id"], "email", row["email"]) if row else None
    phone = _PHONE_STRIP.sub("", contact)
    row = await pool.fetchrow(
        """SELECT resident_id, phone FROM identity_people WHERE phone = $1
           ORDER BY registered_at DESC LIMIT 1""",
        phone,
    )
    return (row["resident_id"], "sms", row["phone"]) if row else None


async def request_submit(request: web.Request) -> web.Response:
    state = public_state(request)
    wait = state.link_limit.hit(client_key(request))
    if wait is not None:
        return rate_limited(request, wait)
    form = await read_form(request)
    if not csrf.valid(request, form):
        return csrf_refused(request)
    contact = text(form, "contact", 254)
    if len(contact) < 6:
        errors = {"contact": "Enter the email address or mobile number you signed up with"}
        return page(
            request, "manage_request.html", status=422, errors=errors, values={"contact": contact}
        )
    res, settings = request.app[RESOURCES], request.app[SETTINGS]
    found = await _find(res.pool, contact)
    if found is not None:
        resident, channel, address = found
        token = await issue_link(res.pool, resident, "manage", state.clock())
        message = manage_message(
            settings.force_name,
            f"{settings.public_base_url}/manage/{token}",
            int(MANAGE_TTL.total_seconds() // 3600),
        )
        await send_personal(state, settings, resident, channel, address, message)
    return message_page(
        request,
        200,
        "Check your messages",
        [
            "If that email address or mobile number is signed up, we have sent it a link to "
            "your settings. The link works for 24 hours.",
            "Nothing arrived after a few minutes? Check your spam folder, and check that you "
            "used the address or number you signed up with.",
        ],
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/manage", request_form)
    app.router.add_post("/manage", request_submit)
    app.router.add_get("/manage/{token}", settings_page)
    app.router.add_post("/manage/{token}", settings_submit)
    app.router.add_post("/manage/{token}/stop", stop_all)
