"""Sign-up: the registration form, its validation, and what happens after a valid submission.

The checks are the intake's own (:class:`producers.intake.Registration`, postcode lookup), so the
page and the JSON API accept and refuse exactly the same things; this module only turns their
errors into sentences a resident understands, on the field they are about.

A postcode that is not in the reference data is refused on the postcode field. A real postcode
without coordinates is accepted: the intake flags the resident ``unlocated`` and the page tells
them what that means.

Signing up with an address that is already registered does not say so on the page (that would
let anyone test whether someone is signed up): the page is the same as for a new sign-up, and
the address's owner gets an e-mail with a link to their settings instead.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from api.context import RESOURCES, SETTINGS
from api.public import csrf, equality
from api.public.forms import Errors, field_errors, many, optional, ordered, read_form, text
from api.public.links import CONFIRM_TTL, MANAGE_TTL, issue_link
from api.public.mailer import already_registered_message, confirm_message, send_personal
from api.public.render import csrf_refused, page, rate_limited, service_unavailable
from api.public.state import public_state
from lpt.logs import get_logger
from producers.intake import (
    AlreadyRegistered,
    IntakeError,
    PublishFailed,
    Registration,
    UnknownPostcode,
    lookup_postcode,
)
from schemas.common import normalise_postcode

log = get_logger(__name__)

#: The consent text shown on the form; a change of wording gets a new version.
CONSENT_VERSION = "public-2026-11"
MAX_GROUPS = 20

FIELD_ORDER = (
    "channels",
    "email",
    "phone",
    "postcode",
    "name",
    "community_groups",
    "other_groups",
    "age_band",
    "sex",
    "ethnic_group",
    "disability",
    "consent",
)
CHANNELS: list[equality.Choice] = [
    ("email", "Email", None),
    ("sms", "Text message", "To a mobile phone"),
]
COMMUNITY_GROUPS: list[equality.Choice] = [
    ("Neighbourhood Watch", "Neighbourhood Watch", None),
    ("Residents' or tenants' association", "Residents' or tenants' association", None),
    ("Community Speedwatch", "Community Speedwatch", None),
    ("Farm or rural watch", "Farm or rural watch", None),
    ("Business or shop watch", "Business or shop watch", None),
    ("Parents' and schools' group", "Parents' and schools' group", None),
]

_MESSAGES: dict[tuple[str, str], str] = {
    ("postcode", "not a valid UK postcode"): "Enter a full UK postcode, like HU1 1AA",
    ("email", "not a valid e-mail address"): (
        "Enter an email address in the correct format, like name@example.com"
    ),
    ("email", "channel 'email' needs an e-mail address"): (
        "Enter your email address, or untick ‘Email’"
    ),
    ("phone", "not a valid phone number"): (
        "Enter a mobile number, like 07700 900 982 or +44 7700 900 982"
    ),
    ("phone", "channel 'sms' needs a phone number"): (
        "Enter your mobile number, or untick ‘Text message’"
    ),
    ("phone", "give an e-mail address or a phone number"): (
        "Enter an email address or a mobile number"
    ),
}
_DEFAULTS: dict[str, str] = {
    "postcode": "Enter a full UK postcode, like HU1 1AA",
    "email": "Enter an email address in the correct format, like name@example.com",
    "phone": "Enter a mobile number, like 07700 900 982",
    "channels": "Select how you want us to contact you",
    "name": "Your name must be 120 characters or fewer",
    "community_groups": f"Enter up to {MAX_GROUPS} groups, each 80 characters or fewer",
    "age_band": "Select your age group, or ‘Prefer not to say’",
    "ethnic_group": "Select your ethnic group, or ‘Prefer not to say’",
}
UNKNOWN_POSTCODE = "We cannot find this postcode. Check it and enter it again"


def client_key(request: web.Request) -> str:
    return request.remote or "unknown"


def _message(field: str, _type: str, msg: str) -> str:
    return _MESSAGES.get((field, msg)) or _DEFAULTS.get(field, "Check this answer")


def _values(form: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: text(form, name, 2000)
        for name in (
            "email",
            "phone",
            "postcode",
            "name",
            "other_groups",
            "age_band",
            "sex",
            "ethnic_group",
            "disability",
            "consent",
        )
    }
    values["channels"] = many(form, "channels")
    values["community_groups"] = many(form, "community_groups")
    return values


def validate(values: dict[str, Any]) -> tuple[Errors, Registration | None, dict[str, str]]:
    """Errors by field, or the registration and the counted-only equality answers."""
    errors: dict[str, str] = {}
    groups = list(values["community_groups"])
    for line in str(values["other_groups"]).splitlines():
        if line.strip() and line.strip() not in groups:
            groups.append(line.strip())
    if len(groups) > MAX_GROUPS or any(len(g) > 80 for g in groups):
        errors["other_groups"] = _DEFAULTS["community_groups"]
    counted: dict[str, str] = {}
    for question, choices in equality.COUNTED.items():
        answer = values[question]
        if answer and answer not in equality.allowed(choices):
            errors[question] = "Select one of the options, or leave this question out"
        elif answer:
            counted[question] = answer
    if values["consent"] != "yes":
        errors["consent"] = "Tick the box to say you agree to us keeping your details"
    registration: Registration | None = None
    try:
        registration = Registration(
            postcode=values["postcode"],
            channels=values["channels"],
            consent_version=CONSENT_VERSION,
            email=optional(values["email"]),
            phone=optional(values["phone"]),
            name=optional(values["name"]),
            age_band=optional(values["age_band"]),
            ethnic_group=optional(values["ethnic_group"]),
            community_groups=[g for g in groups if len(g) <= 80][:MAX_GROUPS],
        )
    except ValidationError as exc:
        found = field_errors(exc, _message)
        if "postcode" in found and values["postcode"] == "":
            found["postcode"] = "Enter your postcode"
        for field, message in found.items():
            errors.setdefault("other_groups" if field == "community_groups" else field, message)
    if errors:
        return ordered(errors, FIELD_ORDER), None, {}
    return {}, registration, counted


def form_page(
    request: web.Request, values: dict[str, Any], errors: Errors, status: int = 200
) -> web.Response:
    return page(
        request,
        "register.html",
        status=status,
        values=values,
        errors=errors,
        channels=CHANNELS,
        community_groups=COMMUNITY_GROUPS,
        age_bands=equality.AGE_BANDS,
        ethnic_groups=equality.ETHNIC_GROUPS,
        sexes=equality.SEX,
        disability=equality.DISABILITY,
        consent_version=CONSENT_VERSION,
    )


async def register_form(request: web.Request) -> web.Response:
    return form_page(request, {"channels": [], "community_groups": []}, {})


async def _postcode_known(pool: asyncpg.Pool, postcode: str) -> bool:
    try:
        await lookup_postcode(pool, normalise_postcode(postcode))
    except (UnknownPostcode, ValueError):
        return False
    return True


async def send_confirmation(request: web.Request, resident_id: str, email: str) -> bool:
    """Issue a confirm link and e-mail it; False when the mail server did not take it."""
    settings, state = request.app[SETTINGS], public_state(request)
    token = await issue_link(
        request.app[RESOURCES].pool, resident_id, "confirm_email", state.clock()
    )
    base = settings.public_base_url
    message = confirm_message(
        settings.force_name,
        f"{base}/confirm/{token}",
        int(CONFIRM_TTL.total_seconds() // 3600),
        f"{base}/manage",
    )
    return await send_personal(state, settings, resident_id, "email", email, message)


async def _tell_registered_owner(request: web.Request, email: str) -> None:
    """The address is signed up already: its owner gets a settings link (the page says nothing)."""
    res, settings, state = request.app[RESOURCES], request.app[SETTINGS], public_state(request)
    resident_id = await res.pool.fetchval(
        "SELECT resident_id FROM identity_people WHERE lower(email) = lower($1)", email
    )
    if resident_id is None:
        return
    token = await issue_link(res.pool, resident_id, "manage", state.clock())
    message = already_registered_message(
        settings.force_name,
        f"{settings.public_base_url}/manage/{token}",
        int(MANAGE_TTL.total_seconds() // 3600),
    )
    await send_personal(state, settings, resident_id, "email", email, message)


async def register_submit(request: web.Request) -> web.Response:
    state = public_state(request)
    wait = state.register_limit.hit(client_key(request))
    if wait is not None:
        return rate_limited(request, wait)
    form = await read_form(request)
    if not csrf.valid(request, form):
        return csrf_refused(request)
    values = _values(form)
    errors, registration, counted = validate(values)
    res = request.app[RESOURCES]
    if registration is None:
        # Report an unknown postcode together with the other errors, not on the next attempt.
        if "postcode" not in errors and not await _postcode_known(res.pool, values["postcode"]):
            errors = ordered({**errors, "postcode": UNKNOWN_POSTCODE}, FIELD_ORDER)
        return form_page(request, values, errors, 422)
    try:
        done = await res.intake.register_resident(registration)
    except UnknownPostcode:
        return form_page(request, values, {"postcode": UNKNOWN_POSTCODE}, 422)
    except AlreadyRegistered:
        assert registration.email is not None
        await _tell_registered_owner(request, registration.email)
        return page(request, "registered.html", unlocated=False, email=True, email_sent=True)
    except PublishFailed:
        return service_unavailable(request)
    except IntakeError as exc:  # any other refusal, on its field
        field = exc.field if exc.field in FIELD_ORDER else "email"
        return form_page(request, values, {field: _DEFAULTS.get(field, exc.message)}, 422)
    ward = await res.pool.fetchval(
        "SELECT ward_code FROM identity_people WHERE resident_id = $1", done.resident_id
    )
    await equality.add_answers(res.pool, ward, counted)
    email_sent = False
    if registration.email:
        email_sent = await send_confirmation(request, done.resident_id, registration.email)
    return page(
        request,
        "registered.html",
        unlocated=done.unlocated,
        email=registration.email is not None,
        email_sent=email_sent,
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/register", register_form)
    app.router.add_post("/register", register_submit)
