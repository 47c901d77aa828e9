"""Reply tokens and unsubscribe links: how a resident acts on a message without logging in.

Reply tokens (DESIGN §6): ``secrets.token_urlsafe(32)`` (256 random bits, unguessable), sent
only inside the message; the database keeps only their SHA-256, so neither a database copy nor
a log can be used to reply. A token is single-use (redeeming it is one conditional UPDATE, so
two racing replies cannot both win) and expires (:data:`REPLY_TTL`). A changed character gives
a hash nobody stored: refused like an unknown token.

Unsubscribe links must work for as long as any message is in a mailbox, and there is one per
e-mail (60,000 per update), so they are not stored: the link carries the pseudonymous resident
id and an HMAC of it under the link key (:func:`identity.linkkey.load_link_key`, a secret of
its own, so rotating the master key leaves mailed links working). Verifying recomputes the
HMAC. Opting out is harmless to repeat, so these links need not be single-use.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeAlias

import asyncpg

from identity.linkkey import legacy_link_key

#: How long a reply link works.
REPLY_TTL = timedelta(days=30)
#: Length of the token in bytes before base64 (secrets.token_urlsafe(32) -> 43 characters).
TOKEN_BYTES = 32

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def reply_url(public_base: str, token: str) -> str:
    return f"{public_base}/reply/{token}"


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a reply token was issued for (its hash is the database key)."""

    message_id: str
    notification_id: str
    resident_id: str
    area_cell: str | None
    ward_code: str | None


async def issue_reply_tokens(
    conn: asyncpg.Connection,
    grants: Sequence[TokenGrant],
    now: datetime,
    ttl: timedelta = REPLY_TTL,
) -> list[str]:
    """Create one token per grant (bulk COPY); returns the raw tokens, in order.

    The raw tokens exist only in the returned list: they go into the messages and are gone.
    """
    tokens = [new_token() for _ in grants]
    if not grants:
        return tokens
    expires = now + ttl
    records = [
        (token_hash(t), g.message_id, g.notification_id, g.resident_id, g.area_cell, g.ward_code,
         now, expires)
        for t, g in zip(tokens, grants, strict=True)
    ]  # fmt: skip
    columns = [
        "token_hash",
        "message_id",
        "notification_id",
        "resident_id",
        "area_cell",
        "ward_code",
        "created_at",
        "expires_at",
    ]
    await conn.copy_records_to_table("reply_tokens", records=records, columns=columns)
    return tokens


class TokenStatus(enum.StrEnum):
    VALID = "valid"
    UNKNOWN = "unknown"  # never issued, mistyped or tampered with
    USED = "used"
    EXPIRED = "expired"


class TokenRefused(ValueError):
    """A reply token that cannot be used; ``status`` says why (shown to the resident)."""

    def __init__(self, status: TokenStatus) -> None:
        super().__init__(f"reply link {status.value}")
        self.status = status


@dataclass(frozen=True, slots=True)
class TokenInfo:
    notification_id: str
    message_id: str
    resident_id: str
    area_cell: str | None
    ward_code: str | None
    expires_at: datetime


def _well_formed(token: str) -> bool:
    return 20 <= len(token) <= 64 and all(c.isalnum() or c in "-_" for c in token)


async def check_reply_token(conn: Executor, token: str, now: datetime) -> TokenInfo:
    """Look at a token without using it (to show the reply form); :class:`TokenRefused` if bad."""
    if not _well_formed(token):
        raise TokenRefused(TokenStatus.UNKNOWN)
    row = await conn.fetchrow(
        """SELECT notification_id, message_id, resident_id, area_cell, ward_code,
                  expires_at, used_at
           FROM reply_tokens WHERE token_hash = $1""",
        token_hash(token),
    )
    if row is None:
        raise TokenRefused(TokenStatus.UNKNOWN)
    if row["used_at"] is not None:
        raise TokenRefused(TokenStatus.USED)
    if row["expires_at"] <= now:
        raise TokenRefused(TokenStatus.EXPIRED)
    return TokenInfo(
        row["notification_id"],
        row["message_id"],
        row["resident_id"],
        row["area_cell"],
        row["ward_code"],
        row["expires_at"],
    )


async def redeem_reply_token(conn: asyncpg.Connection, token: str, now: datetime) -> TokenInfo:
    """Use a token up (single use): one conditional UPDATE, so only one caller can win."""
    if not _well_formed(token):
        raise TokenRefused(TokenStatus.UNKNOWN)
    row = await conn.fetchrow(
        """UPDATE reply_tokens SET used_at = $2
           WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
           RETURNING notification_id, message_id, resident_id, area_cell, ward_code,
                     expires_at""",
        token_hash(token),
        now,
    )
    if row is None:
        await check_reply_token(conn, token, now)  # raises with the precise reason
        raise TokenRefused(TokenStatus.USED)  # pragma: no cover - lost a race just now
    return TokenInfo(
        row["notification_id"],
        row["message_id"],
        row["resident_id"],
        row["area_cell"],
        row["ward_code"],
        row["expires_at"],
    )


async def purge_expired_tokens(conn: Executor, now: datetime) -> int:
    """Delete token rows past their expiry (they can never be used again)."""
    result = await conn.execute("DELETE FROM reply_tokens WHERE expires_at <= $1", now)
    return int(result.split()[-1])


# -- unsubscribe links ----------------------------------------------------------------------


def unsubscribe_key(master_key: bytes) -> bytes:
    """The key links were signed with before the link key had a secret of its own.

    Only for links mailed back then (the link key file is seeded with it) and for tests that
    need a key from given bytes; services use :func:`identity.linkkey.load_link_key`.
    """
    return legacy_link_key(master_key)


def _mac(key: bytes, resident_id: str) -> str:
    digest = hmac.new(key, resident_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def unsubscribe_token(key: bytes, resident_id: str) -> str:
    """``<resident_id>.<hmac>``: resident ids never contain a dot."""
    return f"{resident_id}.{_mac(key, resident_id)}"


def unsubscribe_url(public_base: str, key: bytes, resident_id: str) -> str:
    return f"{public_base}/unsubscribe/{unsubscribe_token(key, resident_id)}"


def verify_unsubscribe_token(key: bytes, token: str) -> str | None:
    """The resident id an unsubscribe token was made for, or None if it was not made by us."""
    resident_id, dot, mac = token.rpartition(".")
    if not dot or not resident_id or len(token) > 200:
        return None
    if not hmac.compare_digest(mac, _mac(key, resident_id)):
        return None
    return resident_id
