"""The database side of delivery: requests, outbox rows, budget charges, held messages.

Why the outbox is the idempotency record: every (message, resident, channel) gets its row
*before* anything is sent, and only rows in status ``pending`` are ever handed to a channel.
A redelivered request finds its request row and its outbox rows and sends nothing twice; a
request interrupted half-way resumes with the rows still pending. (A crash in the instant
between the mail server accepting a message and the status update could resend that one
message; it carries the same Message-ID, so mail clients show it once.)

Bulk by design: one statement per step for a whole batch (``unnest`` of arrays), never one
round trip per resident; a 60,000-resident update is a handful of statements.

Budget decisions take a transaction-scoped advisory lock, so two workers deciding for the same
resident at the same moment cannot both spend the last unit of the weekly budget.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from schemas.notifications import NotificationRequested

#: pg_advisory_xact_lock key serialising budget decisions across workers ("LPTB").
BUDGET_LOCK = 0x4C505442
#: A pending row untouched this long was left by a worker that stopped: send it again.
STALE_PENDING = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class RequestState:
    new: bool
    completed: bool


@dataclass(frozen=True, slots=True)
class StoredRequest:
    notification_id: str
    kind: str
    urgent: bool
    subject: str
    body: str
    allow_reply: bool


@dataclass(frozen=True, slots=True)
class Row:
    """An outbox row to create."""

    message_id: str
    resident_id: str
    channel: str
    status: str
    urgent: bool = False
    is_digest: bool = False
    scheduled_for: datetime | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class PendingRow:
    message_id: str
    resident_id: str
    channel: str
    urgent: bool
    is_digest: bool
    attempts: int


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome to record for one outbox row."""

    message_id: str
    resident_id: str
    channel: str
    status: str
    attempts: int
    detail: str | None = None
    scheduled_for: datetime | None = None


@dataclass(frozen=True, slots=True)
class Contact:
    """What the send step needs, read fresh at send time (opt-out and erasure take effect)."""

    email: str | None
    phone: str | None
    cell: str | None
    ward_code: str | None
    opted_out: bool


async def lock_budget(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", BUDGET_LOCK)


async def record_request(
    conn: asyncpg.Connection, req: NotificationRequested, now: datetime
) -> RequestState:
    inserted = await conn.fetchval(
        """INSERT INTO notification_requests (notification_id, event_id, kind, urgent, sender,
               subject, body, allow_reply, audience, requested_at, received_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11)
           ON CONFLICT (notification_id) DO NOTHING
           RETURNING true""",
        req.notification_id,
        req.event_id,
        req.kind,
        req.urgent,
        req.sender,
        req.subject,
        req.body,
        req.allow_reply,
        json.dumps(req.audience.model_dump(mode="json")),
        req.occurred_at,
        now,
    )
    if inserted:
        return RequestState(new=True, completed=False)
    completed = await conn.fetchval(
        "SELECT completed_at IS NOT NULL FROM notification_requests WHERE notification_id = $1",
        req.notification_id,
    )
    return RequestState(new=False, completed=bool(completed))


async def complete_request(
    conn: asyncpg.Connection | asyncpg.Pool, notification_id: str, size: int, now: datetime
) -> None:
    await conn.execute(
        """UPDATE notification_requests
           SET completed_at = COALESCE(completed_at, $3),
               audience_size = COALESCE(audience_size, 0) + $2
           WHERE notification_id = $1""",
        notification_id,
        size,
        now,
    )


async def stored_requests(
    conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[str]
) -> dict[str, StoredRequest]:
    rows = await conn.fetch(
        """SELECT notification_id, kind, urgent, subject, body, allow_reply
           FROM notification_requests WHERE notification_id = ANY($1::text[])""",
        list(ids),
    )
    return {r["notification_id"]: StoredRequest(**dict(r)) for r in rows}


async def insert_rows(conn: asyncpg.Connection, rows: Sequence[Row], now: datetime) -> int:
    """Create outbox rows (existing ones are left exactly as they are)."""
    if not rows:
        return 0
    result = await conn.execute(
        """INSERT INTO notification_outbox (message_id, resident_id, channel, status, urgent,
               is_digest, scheduled_for, detail, created_at, updated_at)
           SELECT u.m, u.r, u.c, u.s, u.urgent, u.digest, u.due, u.detail, $9, $9
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::bool[],
                       $7::timestamptz[], $8::text[])
                AS u(m, r, c, s, urgent, digest, due, detail)
           ON CONFLICT DO NOTHING""",
        [r.message_id for r in rows],
        [r.resident_id for r in rows],
        [r.channel for r in rows],
        [r.status for r in rows],
        [r.urgent for r in rows],
        [r.is_digest for r in rows],
        [r.scheduled_for for r in rows],
        [r.detail for r in rows],
        now,
    )
    return int(result.split()[-1])


async def charge(
    conn: asyncpg.Connection, message_id: str, resident_ids: Sequence[str], now: datetime
) -> None:
    """One budget unit per resident for this message (whatever the number of channels)."""
    if resident_ids:
        await conn.execute(
            """INSERT INTO notification_budget_ledger (resident_id, message_id, charged_at)
               SELECT r, $2, $3 FROM unnest($1::text[]) AS r ON CONFLICT DO NOTHING""",
            list(resident_ids),
            message_id,
            now,
        )


async def refund(conn: asyncpg.Connection | asyncpg.Pool, pairs: Sequence[tuple[str, str]]) -> None:
    """Give the unit back where a message reached the resident on no channel at all."""
    if pairs:
        await conn.execute(
            """DELETE FROM notification_budget_ledger l
               USING unnest($1::text[], $2::text[]) AS u(m, r)
               WHERE l.message_id = u.m AND l.resident_id = u.r""",
            [m for m, _ in pairs],
            [r for _, r in pairs],
        )


async def hold(
    conn: asyncpg.Connection, notification_id: str, resident_ids: Sequence[str], now: datetime
) -> None:
    if resident_ids:
        await conn.execute(
            """INSERT INTO notification_held (resident_id, notification_id, held_at)
               SELECT r, $2, $3 FROM unnest($1::text[]) AS r ON CONFLICT DO NOTHING""",
            list(resident_ids),
            notification_id,
            now,
        )


async def log_urgent(
    conn: asyncpg.Connection,
    req: NotificationRequested,
    recipients: int,
    over_budget: int,
    in_quiet_hours: int,
    now: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO notification_urgent_log (notification_id, kind, sender, audience,
               recipients, over_budget, in_quiet_hours, logged_at)
           VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8)
           ON CONFLICT (notification_id) DO UPDATE
           SET recipients = notification_urgent_log.recipients + EXCLUDED.recipients,
               over_budget = notification_urgent_log.over_budget + EXCLUDED.over_budget,
               in_quiet_hours = notification_urgent_log.in_quiet_hours + EXCLUDED.in_quiet_hours""",
        req.notification_id,
        req.kind,
        req.sender,
        json.dumps(req.audience.model_dump(mode="json")),
        recipients,
        over_budget,
        in_quiet_hours,
        now,
    )


_PENDING_COLUMNS = "message_id, resident_id, channel, urgent, is_digest, attempts"


def _pending(rows: Sequence[asyncpg.Record]) -> list[PendingRow]:
    return [
        PendingRow(
            r["message_id"],
            r["resident_id"],
            r["channel"],
            r["urgent"],
            r["is_digest"],
            r["attempts"],
        )
        for r in rows
    ]


async def pending_rows(
    conn: asyncpg.Connection | asyncpg.Pool, message_id: str
) -> list[PendingRow]:
    rows = await conn.fetch(
        f"""SELECT {_PENDING_COLUMNS} FROM notification_outbox
            WHERE message_id = $1 AND status = 'pending'
            ORDER BY resident_id, channel""",
        message_id,
    )
    return _pending(rows)


async def pending_rows_many(
    conn: asyncpg.Connection | asyncpg.Pool, message_ids: Sequence[str]
) -> list[PendingRow]:
    if not message_ids:
        return []
    rows = await conn.fetch(
        f"""SELECT {_PENDING_COLUMNS} FROM notification_outbox
            WHERE message_id = ANY($1::text[]) AND status = 'pending'
            ORDER BY message_id, resident_id, channel""",
        list(message_ids),
    )
    return _pending(rows)


async def claim_due(
    conn: asyncpg.Connection | asyncpg.Pool, now: datetime, limit: int
) -> list[PendingRow]:
    """Rows to send now, claimed: scheduled rows whose time has come (quiet hours over, retry
    due), and pending rows left behind by a worker that stopped mid-send (untouched for
    :data:`STALE_PENDING`; a live worker records a chunk within seconds).

    ``SKIP LOCKED``: several workers can release at once without taking the same rows.
    """
    rows = await conn.fetch(
        f"""UPDATE notification_outbox o SET status = 'pending', updated_at = $1
            FROM (SELECT message_id, resident_id, channel FROM notification_outbox
                  WHERE (status = 'scheduled' AND scheduled_for <= $1)
                     OR (status = 'pending' AND updated_at < $3)
                  ORDER BY scheduled_for NULLS FIRST LIMIT $2 FOR UPDATE SKIP LOCKED) due
            WHERE o.message_id = due.message_id AND o.resident_id = due.resident_id
              AND o.channel = due.channel
            RETURNING {", ".join("o." + c.strip() for c in _PENDING_COLUMNS.split(","))}""",
        now,
        limit,
        now - STALE_PENDING,
    )
    return sorted(_pending(rows), key=lambda r: (r.message_id, r.resident_id, r.channel))


async def contacts(
    conn: asyncpg.Connection | asyncpg.Pool, resident_ids: Sequence[str]
) -> dict[str, Contact]:
    """Current contact details; residents erased since the decision are simply absent.

    An e-mail address counts only once confirmed (the audience already requires it; read again
    here so that a message decided earlier never goes to an address that is not confirmed now).
    """
    rows = await conn.fetch(
        """SELECT resident_id,
                  CASE WHEN email_confirmed_at IS NOT NULL THEN email END AS email,
                  phone, cell, ward_code, opted_out_at
           FROM identity_people WHERE resident_id = ANY($1::text[])""",
        list(resident_ids),
    )
    return {
        r["resident_id"]: Contact(
            r["email"], r["phone"], r["cell"], r["ward_code"], r["opted_out_at"] is not None
        )
        for r in rows
    }


async def record_results(
    conn: asyncpg.Connection | asyncpg.Pool, results: Sequence[Result], now: datetime
) -> None:
    """Write the outcomes of a batch in one statement. Only rows still pending are touched."""
    if not results:
        return
    await conn.execute(
        """UPDATE notification_outbox o
           SET status = u.s, attempts = o.attempts + u.a, detail = u.detail,
               scheduled_for = u.due, updated_at = $8,
               sent_at = CASE WHEN u.s = 'sent' THEN $8 ELSE o.sent_at END
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[],
                       $7::timestamptz[]) AS u(m, r, c, s, a, detail, due)
           WHERE o.message_id = u.m AND o.resident_id = u.r AND o.channel = u.c
             AND o.status = 'pending'""",
        [x.message_id for x in results],
        [x.resident_id for x in results],
        [x.channel for x in results],
        [x.status for x in results],
        [x.attempts for x in results],
        [x.detail for x in results],
        [x.scheduled_for for x in results],
        now,
    )
