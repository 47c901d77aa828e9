"""The append-only audit log: every view or export of an identified person (DESIGN §6).

Rows are written in the same request as the view, before the data leaves the server: if the
audit row cannot be written, the person's data is not shown. The table refuses UPDATE, DELETE
and TRUNCATE (a trigger in the migration), so this module can only add and read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import asyncpg

from api.http import HTTPProblem
from api.officer.accounts import Account

Action = Literal["view", "export"]
REASON_MAX = 300


def check_reason(reason: str | None) -> str:
    """The reason an officer gives for looking at a person's details: required, short."""
    text = (reason or "").strip()
    if not text:
        raise HTTPProblem(422, "give a reason for viewing personal details", "reason")
    if len(text) > REASON_MAX:
        raise HTTPProblem(422, f"reason must be at most {REASON_MAX} characters", "reason")
    return text


async def record(
    db: asyncpg.Pool | asyncpg.Connection,
    account: Account,
    action: Action,
    subject_kind: str,
    subject_ids: Sequence[str],
    reason: str,
    area: str | None = None,
    detail: str | None = None,
) -> int:
    audit_id = await db.fetchval(
        """INSERT INTO officer_audit_log (account_id, username, role, action, subject_kind,
               subject_ids, area, reason, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING audit_id""",
        account.account_id,
        account.username,
        account.role,
        action,
        subject_kind,
        list(subject_ids),
        area,
        reason,
        detail,
    )
    return int(audit_id)


async def entries(
    db: asyncpg.Pool,
    account: Account,
    wards_in_scope: set[str],
    limit: int = 200,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Audit rows the account may read: admins all; supervisors their own and those of
    accounts whose scope overlaps theirs (their teams; ``wards_in_scope`` includes the wards
    of their local authorities)."""
    params: list[Any] = [limit, offset]
    where = ""
    if not account.scope.force_wide:
        params += [
            account.account_id,
            sorted(wards_in_scope),
            sorted(account.scope.local_authority_codes),
        ]
        where = """WHERE l.account_id = $3 OR EXISTS (
                     SELECT 1 FROM officer_accounts a WHERE a.account_id = l.account_id
                       AND (a.ward_codes && $4::text[] OR a.local_authority_codes && $5::text[]))"""
    rows = await db.fetch(
        f"""SELECT l.audit_id, l.at, l.account_id, l.username, l.role, l.action,
                   l.subject_kind, l.subject_ids, l.area, l.reason, l.detail
            FROM officer_audit_log l {where}
            ORDER BY l.at DESC, l.audit_id DESC LIMIT $1 OFFSET $2""",
        *params,
    )
    out = []
    for r in rows:
        item = dict(r)
        at: datetime = item["at"]
        item["at"] = at.isoformat()
        out.append(item)
    return out
