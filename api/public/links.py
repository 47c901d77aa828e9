"""Residents' own links: confirm an e-mail address, manage a registration, without a login.

Same rules as the reply links (DESIGN §6), with the same building blocks
(:func:`consumers.notifications.tokens.new_token`, 256 random bits; only the SHA-256 stored):

- ``confirm_email``: single use (redeemed by one conditional UPDATE, so two clicks cannot both
  win), expires after :data:`CONFIRM_TTL`;
- ``manage``: the key to the settings, the copy of one's data and erasure. It is usable several
  times (a resident looks, changes, downloads) but only for :data:`MANAGE_TTL`, and is sent
  only to an address the person registered with, on request.

Tampering changes the hash: a tampered token is refused exactly like one never issued. All
links of a person go with the identity row when they are erased (foreign key cascade).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, TypeAlias

import asyncpg

from consumers.notifications.tokens import TokenRefused, TokenStatus, new_token, token_hash

Purpose = Literal["confirm_email", "manage"]
CONFIRM_TTL = timedelta(hours=48)
MANAGE_TTL = timedelta(hours=24)
TTL: dict[str, timedelta] = {"confirm_email": CONFIRM_TTL, "manage": MANAGE_TTL}
#: Expired links are deleted this long after expiry (kept a little to say "expired", not
#: "unknown", to someone clicking an old e-mail).
KEEP_EXPIRED = timedelta(days=7)

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


def _well_formed(token: str) -> bool:
    return 20 <= len(token) <= 64 and all(c.isalnum() or c in "-_" for c in token)


async def issue_link(
    conn: Executor,
    resident_id: str,
    purpose: Purpose,
    now: datetime,
    ttl: timedelta | None = None,
) -> str:
    """A new raw token for ``resident_id``; only its hash is stored. Returned once, never kept."""
    token = new_token()
    await conn.execute(
        """INSERT INTO public_tokens (token_hash, purpose, resident_id, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5)""",
        token_hash(token),
        purpose,
        resident_id,
        now,
        now + (ttl or TTL[purpose]),
    )
    await conn.execute("DELETE FROM public_tokens WHERE expires_at <= $1", now - KEEP_EXPIRED)
    return token


async def check_link(conn: Executor, token: str, purpose: Purpose, now: datetime) -> str:
    """The resident a valid link belongs to, without using it; :class:`TokenRefused` if not."""
    if not _well_formed(token):
        raise TokenRefused(TokenStatus.UNKNOWN)
    row = await conn.fetchrow(
        """SELECT resident_id, expires_at, used_at FROM public_tokens
           WHERE token_hash = $1 AND purpose = $2""",
        token_hash(token),
        purpose,
    )
    if row is None:
        raise TokenRefused(TokenStatus.UNKNOWN)
    if row["used_at"] is not None:
        raise TokenRefused(TokenStatus.USED)
    if row["expires_at"] <= now:
        raise TokenRefused(TokenStatus.EXPIRED)
    return str(row["resident_id"])


async def redeem_link(conn: Executor, token: str, purpose: Purpose, now: datetime) -> str:
    """Use a single-use link up; returns its resident. Only one caller can ever win."""
    if not _well_formed(token):
        raise TokenRefused(TokenStatus.UNKNOWN)
    resident_id = await conn.fetchval(
        """UPDATE public_tokens SET used_at = $3
           WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3
           RETURNING resident_id""",
        token_hash(token),
        purpose,
        now,
    )
    if resident_id is None:
        await check_link(conn, token, purpose, now)  # raises with the precise reason
        raise TokenRefused(TokenStatus.USED)  # pragma: no cover - lost a race just now
    return str(resident_id)
