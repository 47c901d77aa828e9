"""The public pages on real Kafka, PostgreSQL and SMTP, driven like a browser without JavaScript.

Every form is sent as a plain ``application/x-www-form-urlencoded`` POST after a GET of the
page (for its CSRF field), which is all a browser without JavaScript can do.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest

from api.public import surveys
from api.public.links import issue_link
from api.public.ratelimit import RateLimiter
from api.public.state import PUBLIC
from api.public.surveys import issue_wave
from consumers.notifications.channels import SmtpChannel, SmtpConfig
from consumers.notifications.retry import Backoff
from identity.vault import KeyShredded, PersonDetails
from producers.intake import current_wave
from schemas.common import SURVEY_PRIORITIES, EncryptedField
from schemas.engagement import SurveyAnswered
from schemas.envelope import utcnow
from schemas.notifications import Audience, NotificationRequested
from schemas.registry import InvalidEvent, decode
from schemas.residents import ResidentRegistered
from schemas.topics import NOTIFICATIONS_REQUESTED, REPLIES, RESIDENTS, SURVEYS
from streams.items import entity_item
from tests.test_public_support import (  # noqa: F401 - the fixture
    WARD,
    Site,
    confirm_email,
    csrf_token,
    database_tables,
    events_on,
    free_port,
    kafka_dump,
    kafka_records,
    link_in,
    needle_forms,
    post_form,
    register,
    registration_fields,
    resources,
    service_log_fixture,
    site_fixture,
    text_of,
    unique_person,
)


class FormAudit(HTMLParser):
    """Collects what accessibility checks need: labels, controls, fieldsets, headings."""

    def __init__(self) -> None:
        super().__init__()
        self.label_for: set[str] = set()
        self.controls: list[tuple[str, dict[str, str | None]]] = []
        self.fieldsets = 0
        self.legends = 0
        self.h1 = 0
        self.html_lang: str | None = None
        self.ids: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "html":
            self.html_lang = a.get("lang")
        elif tag == "label" and a.get("for"):
            self.label_for.add(str(a["for"]))
        elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append((tag, a))
        elif tag == "fieldset":
            self.fieldsets += 1
        elif tag == "legend":
            self.legends += 1
        elif tag == "h1":
            self.h1 += 1
        elif tag == "script":
            self._in_script = not a.get("src")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def notice(nid: str, ward: str, **kw: object) -> NotificationRequested:
    """An ordinary update for everyone in a ward, as the officer app would request it."""
    return NotificationRequested(
        occurred_at=utcnow(),
        source="officer-app",
        notification_id=nid,
        kind=kw.pop("kind", "you_said_we_did"),  # type: ignore[arg-type]
        audience=Audience(ward_codes=[ward]),
        subject=str(kw.pop("subject", "Road closure on Whitefriargate")),
        body="The road is closed on Saturday for the parade.",
        sender="officer-0042",
    )


def audit_page(page: str) -> FormAudit:
    audit = FormAudit()
    audit.feed(page)
    return audit


# -- registration ------------------------------------------------------------------------------


async def test_registration_page_is_an_accessible_plain_form(site: Site) -> None:
    resp = await site.client.get("/register")
    assert resp.status == 200
    page = await resp.text()
    audit = audit_page(page)
    assert audit.html_lang == "en"
    assert audit.h1 == 1
    assert 'href="#main-content"' in page and 'id="main-content"' in page  # skip link
    # Every control has a label, and ids are unique (the error summary links to them).
    assert audit.controls
    for _, attrs in audit.controls:
        assert attrs["id"] in audit.label_for, attrs["id"]
    assert len(audit.ids) == len(set(audit.ids))
    # Radios and checkboxes are grouped with a legend; equality questions offer a refusal.
    assert audit.fieldsets == audit.legends >= 7
    assert page.count('value="prefer_not_to_say"') == 4
    # Autocomplete purposes (WCAG 1.3.5) and a plain POST form that needs no script.
    for purpose in ("email", "tel", "postal-code", "name"):
        assert f'autocomplete="{purpose}"' in page
    assert '<form method="post" action="/register"' in page
    assert audit.inline_scripts == 0
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "no-store"
    # Consent text: what we hold, why, how to stop, how to delete.
    words = text_of(page)
    for phrase in ("What we keep", "Why", "one click", "delete them"):
        assert phrase in words


async def test_govuk_frontend_is_served_with_its_assets(site: Site) -> None:
    css = await site.client.get("/static/vendor/govuk/govuk-frontend.min.css")
    assert css.status == 200 and css.content_type == "text/css"
    body = await css.text()
    assert ".govuk-error-summary" in body
    assert "url(/assets/" not in body  # rewritten under our prefix
    assert "@font-face" not in body  # GDS Transport is for GOV.UK services only
    font = await site.client.get("/static/vendor/govuk/assets/fonts/bold-b542beb274-v2.woff2")
    assert font.status == 200
    js = await site.client.get("/static/vendor/govuk/govuk-frontend.min.js")
    assert js.status == 200 and "initAll" in await js.text()
    own = await site.client.get("/static/public/init.mjs")
    assert own.status == 200


async def test_unknown_postcode_is_an_error_on_the_postcode_field(site: Site) -> None:
    email, _, _ = unique_person()
    status, page = await post_form(
        site.client, "/register", registration_fields(email=email, postcode="ZZ9 9ZZ")
    )
    assert status == 422
    assert "<title>Error: " in page
    # The error summary links to the field, and the field shows the message beside it.
    assert '<a href="#postcode">We cannot find this postcode' in page
    assert 'id="postcode-error"' in page
    assert re.search(r'class="govuk-input[^"]*govuk-input--error" id="postcode"', page)
    assert 'aria-describedby="postcode-hint postcode-error"' in page
    assert f'value="{email}"' in page  # what they typed is kept for them to correct
    assert await site.pool.fetchval("SELECT count(*) FROM identity_people") == 0


async def test_form_errors_name_each_field_in_page_order(site: Site) -> None:
    status, page = await post_form(
        site.client,
        "/register",
        registration_fields(
            email="not-an-address", postcode="nonsense", channels=("email", "sms"), consent=False
        ),
    )
    assert status == 422
    summary = re.findall(r'<li><a href="#([a-z_]+)">', page)
    assert summary == ["email", "phone", "postcode", "consent"]
    assert "Enter an email address in the correct format" in page
    assert "Enter your mobile number, or untick" in page
    assert "Enter a full UK postcode" in page
    assert "Tick the box to say you agree" in page
    # A well-formed but unknown postcode is reported together with the other errors.
    status, page = await post_form(
        site.client, "/register", registration_fields(email="x", postcode="ZZ9 9ZZ")
    )
    assert status == 422
    assert re.findall(r'<li><a href="#([a-z_]+)">', page) == ["email", "postcode"]


async def test_real_postcode_without_coordinates_is_accepted_and_flagged(site: Site) -> None:
    email, phone, name = unique_person()
    rid, page = await register(
        site, email=email, phone=phone, name=name, postcode="hu7 9aa", channels=("email", "sms")
    )
    assert "We could not put your postcode on our map" in text_of(page)
    row = await site.pool.fetchrow(
        "SELECT postcode, unlocated, cell, phone FROM identity_people WHERE resident_id = $1", rid
    )
    assert row["postcode"] == "HU7 9AA" and row["unlocated"] is True and row["cell"] is None
    assert row["phone"] == phone.replace(" ", "")
    [event] = [e for e in await events_on(site.settings, RESIDENTS) if e.resident_id == rid]
    assert isinstance(event, ResidentRegistered)
    assert event.unlocated is True and event.location is None


async def test_equality_answers_are_kept_only_as_area_counts(site: Site) -> None:
    email, _, _ = unique_person()
    rid, _ = await register(
        site,
        email=email,
        age_band="prefer_not_to_say",
        ethnic_group="white",
        sex="female",
        disability="prefer_not_to_say",
        community_groups="Neighbourhood Watch",
        other_groups="Hessle Road Allotments\n",
    )
    groups = await site.pool.fetchval(
        "SELECT community_groups FROM identity_people WHERE resident_id = $1", rid
    )
    assert groups == ["Neighbourhood Watch", "Hessle Road Allotments"]
    counts = await site.pool.fetch(
        "SELECT ward_code, question, answer, residents FROM equality_counts ORDER BY question"
    )
    assert [tuple(c) for c in counts] == [
        ("E05001677", "disability", "prefer_not_to_say", 1),
        ("E05001677", "sex", "female", 1),
    ]
    dump = await site.pool.fetchval(
        "SELECT string_agg(t::text, ' ') FROM identity_people t WHERE resident_id = $1", rid
    )
    assert "female" not in dump
    [event] = [e for e in await events_on(site.settings, RESIDENTS) if e.resident_id == rid]
    assert event.ethnic_group == "white" and event.age_band == "prefer_not_to_say"


async def test_form_posts_without_a_valid_csrf_token_are_refused(site: Site) -> None:
    email, _, _ = unique_person()
    fields = registration_fields(email=email)
    # No token at all (a cross-site form post: the browser sends no cookie or a foreign one).
    resp = await site.client.post("/register", data=aiohttp.FormData(fields))
    assert resp.status == 403
    # A token that does not belong to this browser's cookie.
    await csrf_token(site.client, "/register")
    forged = aiohttp.FormData([("csrf_token", "A" * 43), *fields])
    assert (await site.client.post("/register", data=forged)).status == 403
    # A real token, but posted by a browser without the matching cookie.
    token = await csrf_token(site.client, "/register")
    site.client.session.cookie_jar.clear()
    stolen = aiohttp.FormData([("csrf_token", token), *fields])
    assert (await site.client.post("/register", data=stolen)).status == 403
    assert await site.pool.fetchval("SELECT count(*) FROM identity_people") == 0
    # The same post with the browser's own token goes through.
    status, _ = await post_form(site.client, "/register", fields)
    assert status == 200
    assert await site.pool.fetchval("SELECT count(*) FROM identity_people") == 1


async def test_registration_is_rate_limited_per_client_address(site: Site) -> None:
    site.app[PUBLIC].register_limit = RateLimiter(2, 600)
    for _ in range(2):
        email, _, _ = unique_person()
        status, _ = await post_form(site.client, "/register", registration_fields(email=email))
        assert status == 200
    email, _, _ = unique_person()
    status, page = await post_form(site.client, "/register", registration_fields(email=email))
    assert status == 429
    assert "Too many attempts" in page
    assert await site.pool.fetchval("SELECT count(*) FROM identity_people") == 2


# -- confirming an e-mail address ----------------------------------------------------------------


async def test_confirmation_email_is_delivered_and_its_link_works_once(site: Site) -> None:
    email, _, name = unique_person()
    rid, page = await register(site, email=email, name=name)
    assert "We have sent an email" in text_of(page)
    [mail] = site.inbox.to(email)
    assert mail["Subject"] == "Confirm your email address"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["List-Unsubscribe"].startswith("<https://lpt.example.org/unsubscribe/")
    path = link_in(mail, "confirm")
    token = path.rsplit("/", 1)[1]
    # Only the hash is stored.
    dump = await site.pool.fetchval("SELECT string_agg(t::text, ' ') FROM public_tokens t")
    assert token not in dump

    # Opening the link changes nothing (mail scanners open links); the button confirms.
    resp = await site.client.get(path)
    assert resp.status == 200 and "Confirm my email address" in await resp.text()
    confirmed = "SELECT email_confirmed_at FROM identity_people WHERE resident_id = $1"
    assert await site.pool.fetchval(confirmed, rid) is None
    status, page = await post_form(site.client, path, [])
    assert status == 200 and "Email address confirmed" in page
    assert await site.pool.fetchval(confirmed, rid) is not None
    assert re.search(r'href="/manage/[A-Za-z0-9_-]{43}"', page)

    # Single use: the second press is refused, and so is opening it again.
    status, page = await post_form(site.client, path, [], token_from="/register")
    assert status == 410 and "already been used" in page
    assert (await site.client.get(path)).status == 410

    # A tampered link is refused like one never issued.
    tampered = path[:-1] + ("A" if path[-1] != "A" else "B")
    assert (await site.client.get(tampered)).status == 404
    status, _ = await post_form(site.client, tampered, [], token_from="/register")
    assert status == 404


async def test_expired_confirmation_link_is_refused(site: Site) -> None:
    email, _, _ = unique_person()
    rid, _ = await register(site, email=email)
    old = await issue_link(site.pool, rid, "confirm_email", utcnow() - timedelta(days=3))
    resp = await site.client.get(f"/confirm/{old}")
    assert resp.status == 410 and "expired" in await resp.text()
    status, _ = await post_form(site.client, f"/confirm/{old}", [], token_from="/register")
    assert status == 410
    assert (
        await site.pool.fetchval(
            "SELECT email_confirmed_at FROM identity_people WHERE resident_id = $1", rid
        )
        is None
    )


async def test_signing_up_twice_says_nothing_on_the_page_and_emails_the_owner(site: Site) -> None:
    email, _, _ = unique_person()
    await register(site, email=email)
    status, second = await post_form(site.client, "/register", registration_fields(email=email))
    assert status == 200
    assert "You are signed up" in second  # the same page as a new sign-up
    mails = site.inbox.to(email)
    assert [m["Subject"] for m in mails] == [
        "Confirm your email address",
        "You are already signed up",
    ]
    assert link_in(mails[1], "manage")
    assert await site.pool.fetchval("SELECT count(*) FROM identity_people") == 1


# -- unsubscribing -----------------------------------------------------------------------------


async def test_one_click_unsubscribe_stops_messages_at_once(site: Site) -> None:
    email, _, _ = unique_person()
    other, _, _ = unique_person()
    rid, _ = await register(site, email=email)
    await register(site, email=other)
    await confirm_email(site, other)
    [mail] = site.inbox.to(email)
    header = mail["List-Unsubscribe"]
    path = header.strip("<>").removeprefix("https://lpt.example.org")
    assert path.startswith("/unsubscribe/")
    opted = "SELECT opted_out_at FROM identity_people WHERE resident_id = $1"

    # GET (a mail scanner, a link preview, the resident) only shows the button.
    resp = await site.client.get(path)
    assert resp.status == 200 and "Stop all messages" in await resp.text()
    assert await site.pool.fetchval(opted, rid) is None

    # A tampered link changes nothing.
    bad = path[:-2] + ("xx" if not path.endswith("xx") else "yy")
    resp = await site.client.post(bad, data="List-Unsubscribe=One-Click")
    assert resp.status == 404
    assert await site.pool.fetchval(opted, rid) is None

    # RFC 8058: the mail client POSTs List-Unsubscribe=One-Click, no cookies, no CSRF token.
    site.client.session.cookie_jar.clear()
    resp = await site.client.post(
        path,
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 200 and "You have been unsubscribed" in await resp.text()
    assert await site.pool.fetchval(opted, rid) is not None
    events = [e for e in await events_on(site.settings, RESIDENTS) if e.resident_id == rid]
    assert [e.type for e in events] == ["resident.registered", "resident.opted_out"]
    # Repeating it is harmless.
    assert (await site.client.post(path, data="List-Unsubscribe=One-Click")).status == 200

    # The very next message for the area reaches the other resident, not this one.
    dispatcher = await site.dispatcher()
    summary = await dispatcher.handle(notice("n-after-unsubscribe", WARD))
    assert summary.sent == 1
    assert [m["Subject"] for m in site.inbox.to(email)] == ["Confirm your email address"]
    assert [m["Subject"] for m in site.inbox.to(other)] == [
        "Confirm your email address",
        "Road closure on Whitefriargate",
    ]


# -- surveys -----------------------------------------------------------------------------------


async def add_residents(site: Site, n: int, ward: str | None, cell: str | None) -> list[str]:
    """Residents straight into the identity vault (only the form's sign-ups are under test)."""
    ids = []
    for i in range(n):
        key = await site.vault.create_person(
            PersonDetails(
                postcode="HU1 1AA" if ward else "HU7 9AA",
                channels=("email",),
                consent_version="v1",
                email=f"neighbour{i}.{uuid.uuid4().hex[:8]}@example.org",
                cell=cell,
                unlocated=cell is None,
                ward_code=ward,
                local_authority_code="E06000010",
            )
        )
        ids.append(key.resident_id)
    # E-mail goes only to confirmed addresses: these are confirmed, as by their sign-up link.
    await site.pool.execute(
        "UPDATE identity_people SET email_confirmed_at = now() WHERE resident_id = ANY($1)", ids
    )
    return ids


async def test_survey_link_is_personal_single_use_and_the_concern_is_sealed(site: Site) -> None:
    email, _, _ = unique_person()
    rid, _ = await register(site, email=email)
    await confirm_email(site, email)
    cell = await site.pool.fetchval("SELECT cell FROM identity_people WHERE resident_id = $1", rid)
    neighbours = await add_residents(site, 10, WARD, cell)
    [elsewhere] = await add_residents(site, 1, None, None)
    wave = current_wave()

    producer = resources(site).producer
    issued = await issue_wave(site.pool, producer, site.settings, wave)
    assert issued.invited == 12 and len(issued.notification_ids) == 1
    again = await issue_wave(site.pool, producer, site.settings, wave)
    assert again.invited == 0 and again.notification_ids == []  # nobody invited twice
    [request] = await events_on(site.settings, NOTIFICATIONS_REQUESTED)
    assert request.kind == "survey_invitation" and request.allow_reply
    assert sorted(request.audience.resident_ids) == sorted([rid, *neighbours, elsewhere])

    # The notification worker sends it; the personal link is the message's reply link.
    summary = await (await site.dispatcher()).handle(request)
    assert summary.sent == 12
    [invitation] = [m for m in site.inbox.to(email) if m["Subject"] == surveys.SUBJECT]
    path = link_in(invitation, "reply")
    resp = await site.client.get(path)
    page = await resp.text()
    assert resp.status == 200
    assert "How much confidence do you have in your local police?" in page
    for label in surveys.PRIORITY_LABELS.values():
        assert html.escape(label) in page
    assert audit_page(page).fieldsets == 3

    # More than three priorities: an error on that field, nothing recorded.
    too_many = [("priorities", p) for p in SURVEY_PRIORITIES[:4]]
    status, page = await post_form(
        site.client, path, [("confidence", "4"), *too_many, ("wants_contact", "no")]
    )
    assert status == 422 and '<a href="#priorities">Select up to 3 priorities</a>' in page

    concern = f"Motorbikes racing across the green every night ({uuid.uuid4().hex[:6]})"
    answer = [
        ("confidence", "2"),
        ("priorities", "drugs"),
        ("priorities", "speeding_and_road_safety"),
        ("concern", concern),
        ("wants_contact", "yes"),
    ]
    status, page = await post_form(site.client, path, answer)
    assert status == 200 and "Thank you for your answers" in page
    # Single use.
    status, page = await post_form(site.client, path, answer, token_from="/register")
    assert status == 410 and "already been used" in page
    assert (await site.client.get(path)).status == 410

    [event] = await events_on(site.settings, SURVEYS)
    assert isinstance(event, SurveyAnswered)
    assert (event.resident_id, event.wave, event.confidence) == (rid, wave, 2)
    assert event.priorities == ["drugs", "speeding_and_road_safety"] and event.wants_contact
    assert event.location is not None and event.location.cell == cell
    # The concern travels sealed: not in the bytes of any Kafka message, but readable with
    # the resident's key while they exist.
    raw = await kafka_dump(site.settings)
    assert event.concern is not None and event.concern.ciphertext.encode() in raw
    assert concern.encode() not in raw
    assert await site.vault.unseal(event.concern) == concern

    # Response rates by ward for the officer app; areas under 10 people show no figures.
    rates = await surveys.response_rates(site.pool, wave)
    assert rates == [
        surveys.ResponseRate(WARD, 11, 1, 1 / 11),
        surveys.ResponseRate(None, None, None, None),
    ]
    by_council = await surveys.response_rates(site.pool, wave, by="local_authority")
    assert by_council == [surveys.ResponseRate("E06000010", 12, 1, 1 / 12)]


# -- replies -----------------------------------------------------------------------------------


async def test_reply_link_records_the_reply_once_in_the_area_inbox(site: Site) -> None:
    email, _, _ = unique_person()
    rid, _ = await register(site, email=email)
    await confirm_email(site, email)
    await (await site.dispatcher()).handle(notice("n-reply", WARD))
    [update] = [m for m in site.inbox.to(email) if m["Subject"] == "Road closure on Whitefriargate"]
    path = link_in(update, "reply")
    resp = await site.client.get(path)
    assert resp.status == 200 and "Road closure on Whitefriargate" in await resp.text()

    status, page = await post_form(site.client, path, [("body", "   ")])
    assert status == 422 and '<a href="#body">Enter your reply</a>' in page

    text = "Thanks. There was a man with a knife outside the chip shop last night."
    status, page = await post_form(site.client, path, [("body", text)])
    assert status == 200 and "Your reply has been sent" in page
    row = await site.pool.fetchrow(
        "SELECT * FROM reply_inbox WHERE resident_id = $1 AND notification_id = 'n-reply'", rid
    )
    assert row["ward_code"] == WARD and row["escalated"] is True  # safeguarding word
    assert text not in json.dumps(dict(row), default=str)
    sealed = EncryptedField(
        key_id=row["body_key_id"], nonce=row["body_nonce"], ciphertext=row["body_ciphertext"]
    )
    assert await site.vault.unseal(sealed) == text
    [reply_event] = await events_on(site.settings, REPLIES)
    assert reply_event.reply_id == row["reply_id"] and reply_event.escalated

    status, _ = await post_form(site.client, path, [("body", text)], token_from="/register")
    assert status == 410
    tampered = path[:-1] + ("A" if path[-1] != "A" else "B")
    assert (await site.client.get(tampered)).status == 404
    assert await site.pool.fetchval("SELECT count(*) FROM reply_inbox") == 1


# -- settings, a copy of my data, erasure ---------------------------------------------------------


async def manage_link(site: Site, contact: str, email: str) -> str:
    """Ask for a settings link the way a resident does, and take it from their inbox."""
    status, page = await post_form(site.client, "/manage", [("contact", contact)])
    assert status == 200 and "Check your messages" in page
    [mail] = [
        m for m in site.inbox.to(email) if m["Subject"] == "Your link to change your settings"
    ]
    return link_in(mail, "manage")


async def test_settings_link_changes_preferences_for_the_next_message(site: Site) -> None:
    email, _, _ = unique_person()
    rid, _ = await register(site, email=email)
    await confirm_email(site, email)
    # Asking with an address nobody signed up with looks the same and sends nothing.
    stranger, _, _ = unique_person()
    status, page = await post_form(site.client, "/manage", [("contact", stranger)])
    assert status == 200 and "Check your messages" in page and site.inbox.to(stranger) == []

    path = await manage_link(site, email.upper(), email)
    resp = await site.client.get(path)
    assert resp.status == 200 and "Your settings" in await resp.text()

    status, page = await post_form(site.client, path, [("max_per_week", "3")])
    assert status == 422 and '<a href="#channels">Select at least one way' in page

    choice = [
        ("channels", "email"),
        ("topics", "you_said_we_did"),
        ("topics", "safety_alert"),
        ("max_per_week", "3"),
        ("quiet_start", "22:00"),
        ("quiet_end", "07:00"),
    ]
    status, page = await post_form(site.client, path, choice)
    assert status == 200 and "Your settings have been saved" in page  # after the redirect
    row = await site.pool.fetchrow(
        "SELECT * FROM notification_preferences WHERE resident_id = $1", rid
    )
    assert row["channels"] == ["email"] and row["topics"] == ["you_said_we_did", "safety_alert"]
    assert row["max_per_week"] == 3
    assert (row["quiet_start"].hour, row["quiet_end"].hour) == (22, 7)
    [updated] = [
        e for e in await events_on(site.settings, RESIDENTS) if e.type == "resident.updated"
    ]
    assert updated.resident_id == rid and updated.quiet_hours == (22, 7)
    assert updated.max_per_week == 3

    # The worker applies it to the very next message: survey invitations are now turned off.
    dispatcher = await site.dispatcher()
    summary = await dispatcher.handle(notice("n-survey-off", WARD, kind="survey_invitation"))
    assert summary.audience == 1 and summary.sent == 0
    assert (await dispatcher.handle(notice("n-wanted", WARD))).sent == 1

    # Stop everything from the settings page: the page then says so.
    status, page = await post_form(site.client, f"{path}/stop", [], token_from=path)
    assert status == 200 and "You have stopped all messages" in page
    assert await site.pool.fetchval(
        "SELECT opted_out_at IS NOT NULL FROM identity_people WHERE resident_id = $1", rid
    )


async def test_data_copy_then_erasure_leaves_nothing_readable(
    site: Site, service_log: Path
) -> None:
    email, phone, name = unique_person()
    rid, _ = await register(
        site, email=email, phone=phone, name=name, channels=("email", "sms"), sex="male"
    )
    compact_phone = phone.replace(" ", "")
    [confirm_mail] = site.inbox.to(email)
    await post_form(site.client, link_in(confirm_mail, "confirm"), [], token_from="/register")
    # A reply, so that something sealed with the person's key exists in the inbox and on Kafka.
    await (await site.dispatcher()).handle(notice("n-before-erasure", WARD))
    [update] = [m for m in site.inbox.to(email) if m["Subject"] == "Road closure on Whitefriargate"]
    reply_text = f"Thanks, this is {name} from number 12."
    status, _ = await post_form(site.client, link_in(update, "reply"), [("body", reply_text)])
    assert status == 200

    # A copy of my data: on a page and as a download, both audited.
    path = await manage_link(site, email, email)
    resp = await site.client.get(f"{path}/data")
    assert resp.status == 200
    shown = text_of(await resp.text())
    for value in (email, compact_phone, name, "HU1 1AA", WARD, reply_text):
        assert value in shown
    resp = await site.client.get(f"{path}/data.json")
    assert resp.status == 200
    assert resp.headers["Content-Disposition"] == 'attachment; filename="my-details.json"'
    data = json.loads(await resp.text())
    assert data["contact"] == {
        "email": email,
        "phone": compact_phone,
        "name": name,
        "address": None,
    }
    assert data["email_confirmed_at"] is not None
    # One outbox row per channel: e-mail sent; SMS failed as no SMS provider is configured here.
    assert sorted((m["subject"], m["channel"], m["status"]) for m in data["messages"]) == [
        ("Road closure on Whitefriargate", "email", "sent"),
        ("Road closure on Whitefriargate", "sms", "failed"),
    ]
    assert [r["text"] for r in data["replies"]] == [reply_text]
    assert "sex" not in json.dumps(data)  # kept only as an area count
    audit = "SELECT action FROM public_audit_log WHERE resident_id = $1 ORDER BY audit_id"
    assert [r["action"] for r in await site.pool.fetch(audit, rid)] == ["view", "export"]

    # Erasure: a confirmation page, then crypto-shredding.
    resp = await site.client.get(f"{path}/erase")
    assert resp.status == 200 and "You cannot undo this" in await resp.text()
    status, page = await post_form(site.client, f"{path}/erase", [], token_from=f"{path}/erase")
    assert status == 200 and "Your details have been deleted" in page
    assert (await site.client.get(path)).status == 404  # the link went with the person
    assert [r["action"] for r in await site.pool.fetch(audit, rid)] == ["view", "export", "erase"]
    lifecycle = [e for e in await events_on(site.settings, RESIDENTS) if e.resident_id == rid]
    assert lifecycle[-1].type == "resident.erasure_requested"
    with pytest.raises(KeyShredded):
        await site.vault.unseal(lifecycle[0].contact)

    # Nothing readable about the person anywhere (DESIGN §6). Each search also finds the
    # pseudonymous id, which remains by design: proof that it did read that store.
    needles = [email, phone, compact_phone, "+44" + compact_phone[1:], name, reply_text]
    # PostgreSQL: every row of every table, cast to text (bytea as hex).
    tables = await database_tables(site.pool)
    assert {"identity_people", "identity_keys", "notification_outbox", "reply_inbox",
            "reply_tokens", "public_audit_log", "public_tokens"} <= set(tables)  # fmt: skip
    dump = "\n".join(tables.values()).lower()
    assert rid.lower() in dump
    for needle in needles:
        for form in needle_forms(needle):
            assert form not in dump, needle
    # The notification outbox keeps the person's delivery rows, pseudonymous only.
    assert rid.lower() in tables["notification_outbox"].lower()
    # Kafka: every key, value and header on every topic of this test's prefix (dead letters
    # and any internal topics included).
    records = await kafka_records(site.settings)
    raw = b"\n".join(
        part for r in records for part in (r.key or b"", r.value or b"", *(v for _, v in r.headers))
    ).lower()
    assert b"hu1 1aa" in raw and rid.lower().encode() in raw
    for needle in needles:
        assert needle.lower().encode() not in raw, needle
    # The stream worker's state (RocksDB tables and their changelog topics) is built only from
    # the entity items of streams/items.py: what they make of every event here carries the
    # pseudonymous id and never a contact detail, before or after the erasure.
    items = []
    for r in records:
        try:
            keyed = entity_item(decode(r.value)) if r.value else None
        except InvalidEvent:
            continue  # dead letters and internal records are not events: the raw search covers them
        if keyed is not None:
            items.append(keyed)
    item_text = json.dumps(items).lower()
    assert rid.lower() in item_text
    for needle in needles:
        assert needle.lower() not in item_text, needle
    # The logs written while all this ran (JSON lines as deployed, at debug level).
    logged = service_log.read_text().lower()
    assert rid.lower() in logged and "public.erased" in logged
    for needle in needles:
        assert needle.lower() not in logged, needle
    # Area figures remain.
    assert (
        await site.pool.fetchval(
            "SELECT residents FROM equality_counts WHERE question = 'sex' AND answer = 'male'"
        )
        == 1
    )


async def test_later_calls_invite_only_new_residents_and_bad_waves_are_refused(site: Site) -> None:
    first = await add_residents(site, 1, WARD, None)
    one = await surveys.issue_wave_with(site.settings, "2026Q4")
    assert (one.invited, one.notification_ids) == (1, ["survey-2026Q4-0001"])
    second = await add_residents(site, 2, WARD, None)
    two = await surveys.issue_wave_with(site.settings, "2026Q4")
    assert (two.invited, two.notification_ids) == (2, ["survey-2026Q4-0002"])
    requests = await events_on(site.settings, NOTIFICATIONS_REQUESTED)
    requests.sort(key=lambda r: r.notification_id)  # two keys: two partitions, any order
    assert [sorted(r.audience.resident_ids) for r in requests] == [first, sorted(second)]
    with pytest.raises(surveys.WaveError):
        await surveys.issue_wave_with(site.settings, "2026Q5")


async def test_sign_up_survives_a_mail_server_outage_and_says_so(site: Site) -> None:
    dead = SmtpChannel(SmtpConfig("127.0.0.1", free_port()), connections=1, backoff=Backoff(1))
    site.app[PUBLIC].channels = {"email": dead}
    email, _, _ = unique_person()
    _, page = await register(site, email=email)
    assert "We could not send the email to confirm your address" in text_of(page)
    assert 'href="/confirm"' in page
    # The resident asks again once the server is back: a new link arrives.
    site.app[PUBLIC].channels = site.live_channels
    status, page = await post_form(site.client, "/confirm", [("email", email)])
    assert status == 200 and "Check your email" in page
    [mail] = site.inbox.to(email)
    assert link_in(mail, "confirm")
    await dead.close()
