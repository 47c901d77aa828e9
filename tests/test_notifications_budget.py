"""The message budget, message composition, unsubscribe links and safeguarding words, as pure
functions (no servers needed: the clock is a parameter)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from email import message_from_bytes, policy

import pytest

from consumers.notifications.budget import (
    Action,
    Preferences,
    decide,
    digest_due,
    in_quiet_hours,
    quiet_hours_end,
)
from consumers.notifications.compose import MessageTemplate
from consumers.notifications.replies import needs_escalation
from consumers.notifications.tokens import (
    unsubscribe_key,
    unsubscribe_token,
    unsubscribe_url,
    verify_unsubscribe_token,
)

LONDON = Preferences()
WINTER = datetime(2026, 1, 14, tzinfo=UTC)  # GMT: London = UTC
SUMMER = datetime(2026, 7, 14, tzinfo=UTC)  # BST: London = UTC+1


def at(day: datetime, hh: int, mm: int = 0) -> datetime:
    return day.replace(hour=hh, minute=mm)


def test_ordinary_message_goes_now_and_is_charged() -> None:
    d = decide(at(WINTER, 12), urgent=False, charges_in_window=0)
    assert d.action is Action.SEND and d.charged


def test_second_ordinary_message_in_a_week_is_held_for_the_digest() -> None:
    d = decide(at(WINTER, 12), urgent=False, charges_in_window=1)
    assert d.action is Action.HOLD and not d.charged
    # A resident who allows three a week still gets the third.
    three = Preferences(max_per_week=3)
    assert decide(at(WINTER, 12), urgent=False, charges_in_window=2, prefs=three).action is (
        Action.SEND
    )
    assert decide(at(WINTER, 12), urgent=False, charges_in_window=3, prefs=three).action is (
        Action.HOLD
    )


@pytest.mark.parametrize(
    ("day", "utc_hour", "utc_minute", "quiet"),
    [
        (WINTER, 20, 59, False),
        (WINTER, 21, 0, True),
        (WINTER, 0, 30, True),
        (WINTER, 7, 59, True),
        (WINTER, 8, 0, False),
        # In summer London is an hour ahead: 20:00 UTC is already 21:00 local.
        (SUMMER, 19, 59, False),
        (SUMMER, 20, 0, True),
        (SUMMER, 6, 59, True),
        (SUMMER, 7, 0, False),
    ],
)
def test_quiet_hours_are_local_time(
    day: datetime, utc_hour: int, utc_minute: int, quiet: bool
) -> None:
    assert in_quiet_hours(at(day, utc_hour, utc_minute), LONDON) is quiet


def test_message_in_quiet_hours_is_scheduled_for_the_morning_and_charged() -> None:
    d = decide(at(WINTER, 22, 30), urgent=False, charges_in_window=0)
    assert d.action is Action.SCHEDULE and d.charged
    assert d.release_at == datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
    # After midnight: the same morning.
    d = decide(at(WINTER, 3), urgent=False, charges_in_window=0)
    assert d.release_at == datetime(2026, 1, 14, 8, 0, tzinfo=UTC)
    # Summer: 08:00 BST is 07:00 UTC.
    d = decide(at(SUMMER, 23), urgent=False, charges_in_window=0)
    assert d.release_at == datetime(2026, 7, 15, 7, 0, tzinfo=UTC)


def test_quiet_hours_end_across_the_clock_change() -> None:
    # Night of 28-29 March 2026: clocks go forward at 01:00 UTC; 08:00 BST = 07:00 UTC.
    assert quiet_hours_end(datetime(2026, 3, 28, 22, 0, tzinfo=UTC), LONDON) == datetime(
        2026, 3, 29, 7, 0, tzinfo=UTC
    )
    # A quiet period ending at a wall time the change skips still ends (at the next instant).
    odd = Preferences(quiet_start=time(0, 0), quiet_end=time(1, 30))
    end = quiet_hours_end(datetime(2026, 3, 29, 0, 30, tzinfo=UTC), odd)
    assert end == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 02:30 BST


def test_urgent_alert_is_exempt_but_reports_what_it_overrode() -> None:
    d = decide(at(WINTER, 23), urgent=True, charges_in_window=5)
    assert d.action is Action.SEND_URGENT and not d.charged
    assert d.over_budget and d.in_quiet_hours
    d = decide(at(WINTER, 12), urgent=True, charges_in_window=0)
    assert d.action is Action.SEND_URGENT and not d.over_budget and not d.in_quiet_hours


def test_resident_wanting_no_ordinary_messages_gets_only_urgent_ones() -> None:
    none = Preferences(max_per_week=0)
    assert decide(at(WINTER, 12), urgent=False, charges_in_window=0, prefs=none).action is (
        Action.SKIP
    )
    assert decide(at(WINTER, 12), urgent=True, charges_in_window=0, prefs=none).action is (
        Action.SEND_URGENT
    )


def test_no_quiet_hours_when_start_equals_end() -> None:
    always = Preferences(quiet_start=time(0, 0), quiet_end=time(0, 0))
    assert decide(at(WINTER, 2), urgent=False, charges_in_window=0, prefs=always).action is (
        Action.SEND
    )


def test_digest_waits_for_budget_room_and_daytime() -> None:
    assert not digest_due(at(WINTER, 12), charges_in_window=1, prefs=LONDON)
    assert not digest_due(at(WINTER, 22), charges_in_window=0, prefs=LONDON)
    assert digest_due(at(WINTER, 12), charges_in_window=0, prefs=LONDON)
    assert not digest_due(at(WINTER, 12), charges_in_window=0, prefs=Preferences(max_per_week=0))


# -- composition -------------------------------------------------------------------------------


def test_rendered_email_parses_with_rfc8058_headers_and_links() -> None:
    t = MessageTemplate(
        "n-1", "Café closed — road works", "Line one.\n\nÜnïcode line " + "x" * 200, "LPT <a@b.org>"
    )
    raw = t.render_email(
        "someone@example.org", "r-abc12345", "https://p.example/unsubscribe/r-abc12345.mac",
        "https://p.example/reply/tok",
    )  # fmt: skip
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == "Café closed — road works"
    assert msg["To"] == "someone@example.org"
    assert msg["List-Unsubscribe"] == "<https://p.example/unsubscribe/r-abc12345.mac>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Message-ID"] == "<n-1.r-abc12345@b.org>"
    body = msg.get_content()
    assert "Ünïcode line " + "x" * 200 in body
    assert "https://p.example/reply/tok" in body
    assert "https://p.example/unsubscribe/r-abc12345.mac" in body
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_header_injection_is_impossible() -> None:
    t = MessageTemplate("n-2", "Hello\r\nBcc: victim@example.org", "Body", "LPT <a@b.org>")
    msg = message_from_bytes(
        t.render_email("x@example.org", "r-abc12345", "https://u", None), policy=policy.default
    )
    assert msg["Bcc"] is None and "Bcc" in msg["Subject"]
    with pytest.raises(ValueError):
        t.render_email("x@example.org\r\nBcc: y@example.org", "r-abc12345", "https://u", None)


def test_no_reply_link_when_replies_are_not_allowed() -> None:
    t = MessageTemplate("n-3", "Subject", "Body", "LPT <a@b.org>")
    body = message_from_bytes(
        t.render_email("x@example.org", "r-abc12345", "https://u/unsub", None),
        policy=policy.default,
    ).get_content()  # type: ignore[attr-defined]
    assert "/reply/" not in body and "https://u/unsub" in body


def test_unsubscribe_tokens_verify_and_refuse_forgeries() -> None:
    key = unsubscribe_key(b"m" * 32)
    token = unsubscribe_token(key, "r-abc12345")
    assert verify_unsubscribe_token(key, token) == "r-abc12345"
    assert unsubscribe_url("https://p", key, "r-abc12345") == f"https://p/unsubscribe/{token}"
    forged = "r-other999." + token.split(".")[1]
    assert verify_unsubscribe_token(key, forged) is None
    assert verify_unsubscribe_token(key, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert verify_unsubscribe_token(unsubscribe_key(b"n" * 32), token) is None
    assert verify_unsubscribe_token(key, "no-dot-at-all") is None


@pytest.mark.parametrize(
    ("text", "escalate"),
    [
        ("Thanks, the parking is much better now.", False),
        ("My neighbour threatened me with a KNIFE last night", True),
        ("I think my friend may self harm", True),
        ("I'm scared for\nmy life", True),
        ("Knifeless comment about knives-free zone", False),  # whole words only
    ],
)
def test_safeguarding_words_escalate(text: str, escalate: bool) -> None:
    assert needs_escalation(text) is escalate
