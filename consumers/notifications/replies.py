"""Residents' replies: recorded in the inbox of their area, sealed, escalated when worrying.

A reply arrives with the token from the resident's reply link (no login). In one transaction
the token is used up (single use), the body is sealed with the resident's own key and stored
in ``reply_inbox`` under the resident's area (resolution-9 cell and ward), and ``ReplyReceived``
is published with the sealed body. If Kafka refuses, everything rolls back and the link still
works, so the resident can simply send again.

Safeguarding: a reply that mentions risk of harm is flagged ``escalated`` so that it is seen
first and by a supervisor (:data:`SAFEGUARDING_TERMS`). The list is deliberately short and
literal: it is a tripwire for human review, not a classifier, and it errs towards escalating.
Matching is on whole words, case-insensitive; the matched words are never stored or logged
(they are the resident's words).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaProducer

from consumers.notifications.tokens import TokenInfo, redeem_reply_token
from identity.vault import IdentityVault
from lpt.kafka import publish
from lpt.logs import get_logger
from lpt.settings import Settings
from schemas.common import EncryptedField
from schemas.envelope import utcnow
from schemas.notifications import ReplyReceived

log = get_logger(__name__)

SOURCE = "public-web"
MAX_REPLY_CHARS = 4000

#: Words and phrases that send a reply to the top of the inbox for a supervisor (see above).
SAFEGUARDING_TERMS: tuple[str, ...] = (
    "abuse",
    "abused",
    "abusing",
    "assault",
    "assaulted",
    "attacked",
    "beaten",
    "child at risk",
    "domestic violence",
    "exploited",
    "exploitation",
    "forced",
    "groomed",
    "grooming",
    "gun",
    "hit me",
    "hurt me",
    "kill myself",
    "knife",
    "missing",
    "rape",
    "raped",
    "scared for my life",
    "self harm",
    "self-harm",
    "stalking",
    "suicide",
    "suicidal",
    "threatened",
    "trafficked",
    "unsafe",
    "weapon",
)
_TERMS_RE = re.compile(
    r"\b(?:" + "|".join(re.escape(t).replace(r"\ ", r"\s+") for t in SAFEGUARDING_TERMS) + r")\b",
    re.IGNORECASE,
)


def needs_escalation(text: str) -> bool:
    return _TERMS_RE.search(text) is not None


class ReplyInvalid(ValueError):
    """The reply itself is unacceptable (empty, too long); ``field`` is ``body``."""

    field = "body"


@dataclass(frozen=True)
class ReplyRecorded:
    reply_id: str
    notification_id: str
    area_cell: str | None
    ward_code: str | None
    escalated: bool


async def record_reply(
    pool: asyncpg.Pool,
    vault: IdentityVault,
    producer: AIOKafkaProducer,
    settings: Settings,
    token: str,
    body: str,
    now: datetime | None = None,
) -> ReplyRecorded:
    """Record a reply sent with a reply link.

    Raises :class:`~consumers.notifications.tokens.TokenRefused` (unknown, tampered, used or
    expired link), :class:`ReplyInvalid`, or :class:`identity.vault.KeyShredded` when the
    resident was erased in the meantime (nothing of theirs can be stored any more).
    """
    text = body.replace("\r\n", "\n").strip()
    if not text:
        raise ReplyInvalid("the reply is empty")
    if len(text) > MAX_REPLY_CHARS:
        raise ReplyInvalid(f"the reply is longer than {MAX_REPLY_CHARS} characters")
    now = now or utcnow()
    escalated = needs_escalation(text)
    reply_id = "rp-" + uuid.uuid4().hex
    async with pool.acquire() as conn, conn.transaction():
        info: TokenInfo = await redeem_reply_token(conn, token, now)
        sealed = await vault.seal_for(info.resident_id, text, conn)
        await conn.execute(
            """INSERT INTO reply_inbox (reply_id, notification_id, resident_id, area_cell,
                   ward_code, body_key_id, body_nonce, body_ciphertext, escalated, received_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
            reply_id,
            info.notification_id,
            info.resident_id,
            info.area_cell,
            info.ward_code,
            sealed.key_id,
            sealed.nonce,
            sealed.ciphertext,
            escalated,
            now,
        )
        event = ReplyReceived(
            occurred_at=now,
            source=SOURCE,
            reply_id=reply_id,
            notification_id=info.notification_id,
            resident_id=info.resident_id,
            cell=info.area_cell,
            body=sealed,
            escalated=escalated,
        )
        await publish(producer, [event], settings)
    if escalated:
        log.warning(
            "reply.escalated",
            reply_id=reply_id,
            notification_id=info.notification_id,
            ward_code=info.ward_code,
            cell=info.area_cell,
        )
    else:
        log.info("reply.recorded", reply_id=reply_id, notification_id=info.notification_id)
    return ReplyRecorded(reply_id, info.notification_id, info.area_cell, info.ward_code, escalated)


@dataclass(frozen=True)
class InboxEntry:
    """A reply as officers list it; the body stays sealed until an audited view opens it."""

    reply_id: str
    notification_id: str
    resident_id: str
    area_cell: str | None
    ward_code: str | None
    body: EncryptedField
    escalated: bool
    received_at: datetime


async def area_inbox(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    ward_codes: Sequence[str] = (),
    area_cells: Sequence[str] = (),
    limit: int = 200,
) -> list[InboxEntry]:
    """Replies for an officer's area (their wards and/or res-9 cells), escalated first."""
    rows = await conn.fetch(
        """SELECT reply_id, notification_id, resident_id, area_cell, ward_code, body_key_id,
                  body_nonce, body_ciphertext, escalated, received_at
           FROM reply_inbox
           WHERE ward_code = ANY($1::text[]) OR area_cell = ANY($2::text[])
           ORDER BY escalated DESC, received_at DESC
           LIMIT $3""",
        list(ward_codes),
        list(area_cells),
        limit,
    )
    return [
        InboxEntry(
            r["reply_id"],
            r["notification_id"],
            r["resident_id"],
            r["area_cell"],
            r["ward_code"],
            EncryptedField(
                key_id=r["body_key_id"], nonce=r["body_nonce"], ciphertext=r["body_ciphertext"]
            ),
            r["escalated"],
            r["received_at"],
        )
        for r in rows
    ]
