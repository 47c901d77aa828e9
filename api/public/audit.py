"""The residents' side of the audit trail: every look at, export or erasure of their own data.

DESIGN §6 asks that every view or export of an identified person is written to an append-only
log. When residents open their own data through a personal link, that is such a view: it is
written here (pseudonymous id, what, through which kind of link, when) before the data is
sent, so if the row cannot be written the page fails instead of showing the data unrecorded.
The table refuses UPDATE, DELETE and TRUNCATE (migration 009).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg

Action = Literal["view", "export", "erase", "preferences"]


async def record(
    db: asyncpg.Connection | asyncpg.Pool,
    resident_id: str,
    action: Action,
    via: str,
    detail: str | None = None,
) -> int:
    audit_id = await db.fetchval(
        """INSERT INTO public_audit_log (resident_id, action, via, detail)
           VALUES ($1, $2, $3, $4) RETURNING audit_id""",
        resident_id,
        action,
        via,
        detail,
    )
    return int(audit_id)


async def entries(
    db: asyncpg.Connection | asyncpg.Pool, resident_id: str, limit: int = 50
) -> list[tuple[datetime, str, str]]:
    """(when, action, via) for a resident, newest first: shown to them in their data copy."""
    rows = await db.fetch(
        """SELECT at, action, via FROM public_audit_log WHERE resident_id = $1
           ORDER BY at DESC, audit_id DESC LIMIT $2""",
        resident_id,
        limit,
    )
    return [(r["at"], r["action"], r["via"]) for r in rows]
