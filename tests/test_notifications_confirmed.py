"""E-mail goes only to confirmed addresses (real PostgreSQL, real SMTP server, real pages).

Anyone can type someone else's address into the sign-up form; that person never opted in. So
an unconfirmed address is never selected for the e-mail channel: no message, no budget charge,
no outbox row. The resident's other channels still count, and confirming the address through
the link in the sign-up e-mail (``api/public/confirm.py``, ``email_confirmed_at``) is what
turns e-mail on.
"""

from __future__ import annotations

from datetime import UTC, datetime

from test_notifications_support import (  # noqa: F401 - fixtures
    HULL,
    NOON,
    WARD_HULL,
    Env,
    add_people,
    env_fixture,
    request,
    smtp_server_fixture,
)

from consumers.notifications.audience import criteria_for, resolve
from schemas.envelope import utcnow
from schemas.notifications import Audience, NotificationRequested
from tests.test_public_support import (  # noqa: F401 - the fixture
    WARD,
    Site,
    confirm_email,
    register,
    site_fixture,
    unique_person,
)


async def test_unconfirmed_addresses_are_not_selected_for_email(env: Env) -> None:
    [confirmed] = await add_people(env.pool, env.settings, [(HULL, WARD_HULL)])
    [unconfirmed] = await add_people(env.pool, env.settings, [(HULL, WARD_HULL)], confirmed=False)
    [with_sms] = await add_people(
        env.pool, env.settings, [(HULL, WARD_HULL)], channels=("email", "sms"), confirmed=False
    )
    audience = Audience(ward_codes=[WARD_HULL])
    async with env.pool.acquire() as conn:
        criteria = await criteria_for(conn, audience)
        chosen = {r.resident_id: r.channels for r in await resolve(conn, criteria, "m-x", NOON)}
    assert chosen == {confirmed.resident_id: ("email",), with_sms.resident_id: ("sms",)}

    summary = await env.dispatcher.handle(request("n-confirmed", audience))
    assert summary.audience == 2 and summary.sent == 1
    assert len(env.smtp.inbox.to(confirmed.email)) == 1
    assert env.smtp.inbox.to(unconfirmed.email) == []
    assert env.smtp.inbox.to(with_sms.email) == []
    rows = await env.pool.fetch("SELECT resident_id, channel FROM notification_outbox")
    assert {(r["resident_id"], r["channel"]) for r in rows} == {
        (confirmed.resident_id, "email"),
        (with_sms.resident_id, "sms"),
    }
    charged = await env.pool.fetch("SELECT resident_id FROM notification_budget_ledger")
    assert unconfirmed.resident_id not in {r["resident_id"] for r in charged}


async def test_send_time_check_skips_an_address_no_longer_confirmed(env: Env) -> None:
    [person] = await add_people(env.pool, env.settings, [(HULL, WARD_HULL)])
    env.clock.now = datetime(2026, 3, 10, 22, 30, tzinfo=UTC)  # quiet hours: sent at 08:00
    summary = await env.dispatcher.handle(request("n-night", Audience(cells=[HULL])))
    assert summary.scheduled == 1
    # Before the morning the confirmation goes (e.g. the address changed and awaits a new one).
    await env.pool.execute(
        "UPDATE identity_people SET email_confirmed_at = NULL WHERE resident_id = $1",
        person.resident_id,
    )
    env.clock.now = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
    released = await env.dispatcher.release_due()
    assert released.sent == 0 and released.failed == 1
    assert env.smtp.inbox.to(person.email) == []
    detail = await env.pool.fetchval("SELECT detail FROM notification_outbox")
    assert detail == "no email address"


def _update(nid: str) -> NotificationRequested:
    return NotificationRequested(
        occurred_at=utcnow(),
        source="officer-app",
        notification_id=nid,
        kind="you_said_we_did",
        audience=Audience(ward_codes=[WARD]),
        subject=f"Update {nid}",
        body="We patrolled the park every evening this week.",
        sender="officer-0042",
    )


async def test_signing_up_sends_nothing_until_the_confirmation_link_is_used(site: Site) -> None:
    email, _, _ = unique_person()
    rid, _ = await register(site, email=email)
    dispatcher = await site.dispatcher()
    summary = await dispatcher.handle(_update("n-before-confirm"))
    assert summary.audience == 0 and summary.sent == 0
    assert [m["Subject"] for m in site.inbox.to(email)] == ["Confirm your email address"]

    await confirm_email(site, email)  # the real page stores email_confirmed_at
    assert await site.pool.fetchval(
        "SELECT email_confirmed_at IS NOT NULL FROM identity_people WHERE resident_id = $1", rid
    )
    summary = await dispatcher.handle(_update("n-after-confirm"))
    assert summary.sent == 1
    assert [m["Subject"] for m in site.inbox.to(email)] == [
        "Confirm your email address",
        "Update n-after-confirm",
    ]
