"""The weekly digest: messages held because a resident's budget was used go out together.

When: as soon as the resident's budget has room again (a rolling seven days after the last
message, so at most weekly) and it is not their quiet hours. The digest is one message: it uses
one unit of the budget, whatever number of updates it carries, each with its own reply link.

Each digest gets an id of its own (``dg-...``) that stands in the outbox, the budget ledger and
the status events where a notification id would, so digests are idempotent the same way.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from consumers.notifications import outbox
from consumers.notifications.audience import channels_from_row, preferences_from_row
from consumers.notifications.budget import WINDOW, digest_due
from consumers.notifications.compose import (
    DigestItem,
    MessageTemplate,
    digest_body,
    digest_subject,
)
from consumers.notifications.tokens import TokenGrant, issue_reply_tokens, reply_url
from lpt.logs import get_logger
from schemas.common import score_cell_of

if TYPE_CHECKING:
    from consumers.notifications.dispatch import Dispatcher, Summary

log = get_logger(__name__)

_WAITING_SQL = """
SELECT p.resident_id, p.channels, p.email_confirmed_at IS NOT NULL AS email_confirmed,
       pref.channels AS pref_channels, pref.quiet_start,
       pref.quiet_end, pref.timezone, pref.max_per_week, COALESCE(c.n, 0) AS charges_in_window
FROM (SELECT DISTINCT resident_id FROM notification_held WHERE digest_id IS NULL) h
JOIN identity_people p USING (resident_id)
LEFT JOIN notification_preferences pref USING (resident_id)
LEFT JOIN LATERAL (
    SELECT count(*) AS n FROM notification_budget_ledger l
    WHERE l.resident_id = p.resident_id AND l.charged_at > $1
) c ON true
WHERE p.opted_out_at IS NULL
ORDER BY p.resident_id
LIMIT $2
"""


def new_digest_id() -> str:
    return "dg-" + secrets.token_hex(12)


async def run_digests(dispatcher: Dispatcher, limit: int = 20_000) -> Summary:
    """Start the digests that are due now and send them; returns what was sent."""
    now = dispatcher.clock()
    for attempt in range(3):
        try:
            digest_ids = await _start_digests(dispatcher.pool, now, limit)
            break
        except asyncpg.ForeignKeyViolationError:
            if attempt == 2:  # a resident erased mid-way: nothing recorded, start again
                raise
    if digest_ids:
        log.info("notify.digests_started", digests=len(digest_ids))
    pending = await outbox.pending_rows_many(dispatcher.pool, digest_ids)
    return await dispatcher.send(pending)


async def _start_digests(pool: asyncpg.Pool, now: datetime, limit: int) -> list[str]:
    """Under the budget lock: pick due residents, attach their held messages to a new digest,
    charge one budget unit each and create the digest's outbox rows. Returns the digest ids."""
    async with pool.acquire() as conn, conn.transaction():
        await outbox.lock_budget(conn)
        waiting = await conn.fetch(_WAITING_SQL, now - WINDOW, limit)
        due = [
            r
            for r in waiting
            if channels_from_row(r)
            and digest_due(
                now, charges_in_window=int(r["charges_in_window"]), prefs=preferences_from_row(r)
            )
        ]
        ids = {r["resident_id"]: new_digest_id() for r in due}
        if ids:
            residents, digest_ids = list(ids), list(ids.values())
            await conn.execute(
                """UPDATE notification_held h SET digest_id = u.d
                   FROM unnest($1::text[], $2::text[]) AS u(r, d)
                   WHERE h.resident_id = u.r AND h.digest_id IS NULL""",
                residents,
                digest_ids,
            )
            await conn.execute(
                """UPDATE notification_outbox o SET status = 'digested', updated_at = $2
                   FROM notification_held h
                   WHERE h.digest_id = ANY($1::text[]) AND o.message_id = h.notification_id
                     AND o.resident_id = h.resident_id AND o.status = 'held_for_digest'""",
                digest_ids,
                now,
            )
            await conn.execute(
                """INSERT INTO notification_budget_ledger (resident_id, message_id, charged_at)
                   SELECT r, d, $3 FROM unnest($1::text[], $2::text[]) AS u(r, d)
                   ON CONFLICT DO NOTHING""",
                residents,
                digest_ids,
                now,
            )
            rows = [
                outbox.Row(ids[r["resident_id"]], r["resident_id"], ch, "pending", is_digest=True)
                for r in due
                for ch in channels_from_row(r)
            ]
            await outbox.insert_rows(conn, rows, now)
    return sorted(ids.values())


async def build_digest_templates(
    conn: asyncpg.Connection,
    pairs: Sequence[tuple[str, str]],
    now: datetime,
    mail_from: str,
    public_base: str,
) -> dict[tuple[str, str], MessageTemplate]:
    """One template per (digest, resident): the held updates, each with its own reply link."""
    rows = await conn.fetch(
        """SELECT h.digest_id, h.resident_id, h.notification_id, r.subject, r.body,
                  r.allow_reply, p.cell, p.ward_code
           FROM unnest($1::text[], $2::text[]) AS u(d, rid)
           JOIN notification_held h ON h.digest_id = u.d AND h.resident_id = u.rid
           JOIN notification_requests r ON r.notification_id = h.notification_id
           JOIN identity_people p ON p.resident_id = h.resident_id
           ORDER BY h.digest_id, h.resident_id, h.held_at, h.notification_id""",
        [d for d, _ in pairs],
        [r for _, r in pairs],
    )
    grants = [
        TokenGrant(
            r["digest_id"],
            r["notification_id"],
            r["resident_id"],
            score_cell_of(r["cell"]) if r["cell"] else None,
            r["ward_code"],
        )
        for r in rows
        if r["allow_reply"]
    ]
    tokens = iter(await issue_reply_tokens(conn, grants, now))
    items: dict[tuple[str, str], list[DigestItem]] = defaultdict(list)
    for r in rows:
        link = reply_url(public_base, next(tokens)) if r["allow_reply"] else None
        items[(r["digest_id"], r["resident_id"])].append(DigestItem(r["subject"], r["body"], link))
    return {
        key: MessageTemplate(key[0], digest_subject(len(its)), digest_body(its), mail_from)
        for key, its in items.items()
    }
