"""Quarterly surveys: issuing a wave, the survey form behind a personal link, response rates.

How a resident's personal, single-use link is made: a wave is sent as ``survey_invitation``
notifications (:func:`issue_wave`), and the notification worker gives every message its own
reply link (:mod:`consumers.notifications.tokens`: 256 random bits, only the hash stored,
single use, expires after 30 days). The page behind a reply link (:mod:`.reply`) sees that the
link belongs to a survey notification (``survey_wave_notifications``) and shows the survey
instead of a reply box. So the raw link exists only inside the one message; it is never stored
and never travels on Kafka, and the message budget, quiet hours, digests, topic choices and
opt-outs apply to survey invitations as to any other message.

Answers go through :meth:`producers.intake.Intake.record_survey_answer`: published as
``survey.answered`` at the resident's street cell, with the free-text concern sealed with the
resident's own key. Using the link up, publishing and marking the invitation answered happen in
one transaction: if Kafka refuses, nothing is kept and the link still works.

Response rates (:func:`response_rates`) are per wave and ward (or council), counted from the
invitations table, with figures about fewer than 10 people suppressed (DESIGN §6).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg
from aiokafka import AIOKafkaProducer

from api.public.equality import MIN_PEOPLE
from consumers.notifications.tokens import redeem_reply_token
from lpt.db import create_pool
from lpt.kafka import make_producer, publish
from lpt.logs import get_logger
from lpt.settings import Settings, get_settings
from producers.intake import Intake, Published, SurveySubmission, current_wave
from schemas.common import SURVEY_PRIORITIES
from schemas.envelope import deterministic_id, utcnow
from schemas.notifications import Audience, NotificationRequested

log = get_logger(__name__)

KIND = "survey_invitation"
#: Residents per invitation request (the most an audience may name).
BATCH = 1000
SENDER = "public-survey"
SOURCE = "public-web"
_WAVE = re.compile(r"^[0-9]{4}Q[1-4]$")

SUBJECT = "Tell us what matters where you live"
BODY = (
    "Every three months we ask the people who get our updates what they want their "
    "neighbourhood police team to focus on. It takes about two minutes: four short "
    "questions.\n\n"
    "Your personal survey link is at the end of this message, under 'Reply to this "
    "message'. It works once, only for you.\n\n"
    "Your answers are used for figures about your area. If you tell us about a concern in "
    "your own words, they are encrypted with your personal key."
)

#: Plain-English labels of :data:`schemas.common.SURVEY_PRIORITIES` (every one has a label).
PRIORITY_LABELS: dict[str, str] = {
    "anti_social_behaviour": "Anti-social behaviour",
    "burglary": "Burglary (break-ins)",
    "drugs": "Drug dealing and drug use",
    "violence": "Violence",
    "knife_crime": "Knife crime",
    "vehicle_crime": "Car crime, including theft of or from vehicles",
    "speeding_and_road_safety": "Speeding and road safety",
    "criminal_damage": "Vandalism and criminal damage",
    "shoplifting": "Shoplifting",
    "youth_disorder": "Young people causing a nuisance or disorder",
    "fly_tipping_and_litter": "Fly-tipping and litter",
    "domestic_abuse": "Domestic abuse",
}
assert set(PRIORITY_LABELS) == set(SURVEY_PRIORITIES), "a survey priority has no label"

CONFIDENCE: list[tuple[str, str, str | None]] = [
    ("5", "A great deal", None),
    ("4", "Quite a lot", None),
    ("3", "Some", None),
    ("2", "Not very much", None),
    ("1", "None at all", None),
]
MAX_PRIORITIES = 3
MAX_CONCERN = 2000


class WaveError(ValueError):
    field = "wave"


class AlreadyAnswered(Exception):
    """This resident has answered this wave already (through another link)."""


@dataclass(frozen=True)
class WaveIssued:
    wave: str
    #: Residents invited by this call (0 when everybody registered was already invited).
    invited: int
    notification_ids: list[str]


def _check_wave(wave: str) -> str:
    if not _WAVE.match(wave):
        raise WaveError("a wave looks like 2026Q4")
    return wave


async def issue_wave(
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    settings: Settings,
    wave: str,
    now: datetime | None = None,
) -> WaveIssued:
    """Invite every registered resident not yet invited to ``wave`` (for the worker to send).

    Residents who opted out, turned survey invitations off, take urgent alerts only or can be
    reached only at an e-mail address they have not confirmed are not invited (and not counted
    in the response rates). Calling it again later in the quarter
    invites only those who registered since. The requests are published inside the
    transaction that records the invitations, so a Kafka failure leaves nothing half done; their
    ids are deterministic, so the worker treats a re-published request as the same one.
    """
    _check_wave(wave)
    now = now or utcnow()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO survey_waves (wave, issued_at) VALUES ($1, $2)
               ON CONFLICT (wave) DO NOTHING""",
            wave,
            now,
        )
        await conn.execute("SELECT 1 FROM survey_waves WHERE wave = $1 FOR UPDATE", wave)
        await conn.execute(
            """INSERT INTO survey_invitations (wave, resident_id, ward_code,
                   local_authority_code, invited_at)
               SELECT $1, p.resident_id, p.ward_code, p.local_authority_code, $2
               FROM identity_people p
               LEFT JOIN notification_preferences n USING (resident_id)
               WHERE p.opted_out_at IS NULL
                 AND (p.email_confirmed_at IS NOT NULL
                      OR EXISTS (SELECT 1 FROM unnest(p.channels) c WHERE c <> 'email'))
                 AND (n.topics IS NULL OR $3 = ANY(n.topics))
                 AND COALESCE(n.max_per_week, 1) > 0
               ON CONFLICT (wave, resident_id) DO NOTHING""",
            wave,
            now,
            KIND,
        )
        waiting = [
            r["resident_id"]
            for r in await conn.fetch(
                """SELECT resident_id FROM survey_invitations
                   WHERE wave = $1 AND notification_id IS NULL ORDER BY resident_id""",
                wave,
            )
        ]
        first = await conn.fetchval(
            "SELECT count(*) FROM survey_wave_notifications WHERE wave = $1", wave
        )
        requests: list[NotificationRequested] = []
        for n, start in enumerate(range(0, len(waiting), BATCH), start=int(first) + 1):
            batch = waiting[start : start + BATCH]
            nid = f"survey-{wave}-{n:04d}"
            await conn.execute(
                "INSERT INTO survey_wave_notifications (notification_id, wave) VALUES ($1, $2)",
                nid,
                wave,
            )
            await conn.execute(
                """UPDATE survey_invitations SET notification_id = $3
                   WHERE wave = $1 AND resident_id = ANY($2::text[])""",
                wave,
                batch,
                nid,
            )
            requests.append(
                NotificationRequested(
                    event_id=deterministic_id("notification.requested", nid),
                    occurred_at=now,
                    source=SOURCE,
                    notification_id=nid,
                    kind=KIND,
                    audience=Audience(resident_ids=batch),
                    subject=SUBJECT,
                    body=BODY,
                    sender=SENDER,
                    allow_reply=True,
                )
            )
        await conn.execute(
            "UPDATE survey_waves SET invited = invited + $2 WHERE wave = $1", wave, len(waiting)
        )
        await publish(producer, requests, settings)
    log.info("survey.wave_issued", wave=wave, invited=len(waiting), requests=len(requests))
    return WaveIssued(wave, len(waiting), [r.notification_id for r in requests])


async def wave_of(conn: asyncpg.Connection | asyncpg.Pool, notification_id: str) -> str | None:
    """The survey wave a notification invited to, or None for any other message."""
    wave = await conn.fetchval(
        "SELECT wave FROM survey_wave_notifications WHERE notification_id = $1", notification_id
    )
    return str(wave) if wave is not None else None


@dataclass(frozen=True)
class Answer:
    confidence: int
    priorities: list[str]
    concern: str | None
    wants_contact: bool


def parse_answer(
    confidence: str, priorities: Sequence[str], concern: str, wants_contact: str
) -> tuple[Answer | None, dict[str, str]]:
    """The form's answers, or errors keyed by field id (in page order)."""
    errors: dict[str, str] = {}
    if confidence not in {v for v, _, _ in CONFIDENCE}:
        errors["confidence"] = "Select how much confidence you have in your local police"
    if any(p not in PRIORITY_LABELS for p in priorities):
        errors["priorities"] = "Select priorities from the list"
    elif len(priorities) > MAX_PRIORITIES:
        errors["priorities"] = f"Select up to {MAX_PRIORITIES} priorities"
    if len(concern) > MAX_CONCERN:
        errors["concern"] = f"Your concern must be {MAX_CONCERN} characters or fewer"
    if wants_contact not in ("yes", "no"):
        errors["wants_contact"] = "Select yes if you would like us to contact you"
    if errors:
        return None, errors
    return (
        Answer(int(confidence), list(priorities), concern or None, wants_contact == "yes"),
        {},
    )


async def record_answer(
    intake: Intake, token: str, wave: str, answer: Answer, now: datetime | None = None
) -> Published:
    """Use the link up, publish the answer, mark the invitation answered: all or nothing.

    Raises :class:`~consumers.notifications.tokens.TokenRefused` (bad, used or expired link),
    :class:`AlreadyAnswered`, or the intake's errors (opted out, erased, Kafka unavailable).
    """
    now = now or utcnow()
    async with intake.pool.acquire() as conn, conn.transaction():
        info = await redeem_reply_token(conn, token, now)
        answered = await conn.fetchval(
            """SELECT responded_at FROM survey_invitations
               WHERE wave = $1 AND resident_id = $2 FOR UPDATE""",
            wave,
            info.resident_id,
        )
        if answered is not None:
            raise AlreadyAnswered()
        submission = SurveySubmission.model_validate(
            {
                "resident_id": info.resident_id,
                "confidence": answer.confidence,
                "priorities": answer.priorities,
                "concern": answer.concern,
                "wants_contact": answer.wants_contact,
                "wave": wave,
            }
        )
        published = await intake.record_survey_answer(submission)
        await conn.execute(
            """INSERT INTO survey_invitations (wave, resident_id, ward_code, local_authority_code,
                   invited_at, notification_id, responded_at)
               SELECT $1, $2, p.ward_code, p.local_authority_code, $3, $4, $3
               FROM identity_people p WHERE p.resident_id = $2
               ON CONFLICT (wave, resident_id) DO UPDATE SET responded_at = EXCLUDED.responded_at""",
            wave,
            info.resident_id,
            now,
            info.notification_id,
        )
    log.info("survey.answered", wave=wave, resident_id=info.resident_id)
    return published


@dataclass(frozen=True)
class ResponseRate:
    """One area's response to one wave; counts under :data:`MIN_PEOPLE` are suppressed."""

    area_code: str | None
    invited: int | None
    responded: int | None
    rate: float | None


async def response_rates(
    conn: asyncpg.Connection | asyncpg.Pool,
    wave: str,
    by: Literal["ward", "local_authority"] = "ward",
) -> list[ResponseRate]:
    """Response rates of a wave per ward (or council), for the officer app.

    An area with fewer than 10 invited residents shows no figures at all (the area is listed so
    that the totals can be seen to add up to more than the visible rows).
    """
    _check_wave(wave)
    column = "ward_code" if by == "ward" else "local_authority_code"
    rows = await conn.fetch(
        f"""SELECT {column} AS area, count(*) AS invited,
                   count(*) FILTER (WHERE responded_at IS NOT NULL) AS responded
            FROM survey_invitations WHERE wave = $1
            GROUP BY {column} ORDER BY {column} NULLS LAST""",
        wave,
    )
    out: list[ResponseRate] = []
    for r in rows:
        invited, responded = int(r["invited"]), int(r["responded"])
        if invited < MIN_PEOPLE:
            out.append(ResponseRate(r["area"], None, None, None))
        else:
            out.append(ResponseRate(r["area"], invited, responded, responded / invited))
    return out


async def issue_wave_with(settings: Settings, wave: str) -> WaveIssued:
    """:func:`issue_wave` with a pool and producer of its own (for the command line)."""
    pool = await create_pool(settings, min_size=1, max_size=2)
    producer = make_producer(settings)
    try:
        await producer.start()
        return await issue_wave(pool, producer, settings, wave)
    finally:
        await producer.stop()
        await pool.close()


def cli(args: argparse.Namespace) -> int:
    """Command-line handler: invite everyone registered to a wave (default: this quarter).

    Takes ``args.wave`` when the parser declares it. The notification worker then sends the
    invitations within each resident's message budget.
    """
    wave = getattr(args, "wave", None) or current_wave()
    try:
        done = asyncio.run(issue_wave_with(get_settings(), wave))
    except WaveError as exc:
        print(f"wave: {exc}", file=sys.stderr)
        return 2
    print(
        f"survey wave {done.wave}: {done.invited} residents invited "
        f"in {len(done.notification_ids)} notification requests"
    )
    return 0
