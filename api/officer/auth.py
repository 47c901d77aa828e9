"""Logging in: authentication backends, sessions, CSRF tokens and login throttling.

Why an interface: the force will bring its own single sign-on (OIDC/SAML). An
:class:`AuthBackend` turns whatever the identity provider vouches for into an :class:`Account`;
the password backend (argon2id hashes) is one implementation, an SSO backend would map the
provider's subject to ``officer_accounts.external_subject``. Everything after that (sessions,
CSRF, roles, scope, audit) is the same whichever backend vouched.

Sessions: the cookie carries a random 256-bit token; the database stores only its SHA-256, so
a leaked table cannot be replayed. The cookie is HttpOnly and SameSite=Strict, Secure unless
``LPT_COOKIE_SECURE=0`` (plain http on a developer's machine). Each session has its own CSRF
token, required on every state-changing request (header ``X-CSRF-Token`` or form field
``csrf_token``), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import asyncpg
from aiohttp import web

from api.officer.accounts import Account, AccountStore, account_from_row, verify_password
from lpt.logs import get_logger

log = get_logger(__name__)

#: A shift and a bit: after this a session ends whatever happens.
SESSION_LIFETIME = timedelta(hours=12)
#: Idle sessions end sooner (a phone left on a desk).
SESSION_IDLE = timedelta(hours=2)
#: How stale ``last_seen_at`` may get before a request refreshes it.
TOUCH_EVERY = timedelta(minutes=1)
#: Failed logins allowed per username, and per client address, in the window.
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_CLIENT = 20
THROTTLE_WINDOW = timedelta(minutes=15)

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def cookie_name(secure: bool) -> str:
    """``__Host-`` binds the cookie to this host and path / (browsers require Secure for it)."""
    return "__Host-lpt_session" if secure else "lpt_session"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def tokens_match(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class AuthBackend(Protocol):
    """Something that vouches for a person: password check here, the force's SSO later."""

    name: str

    async def authenticate(self, credentials: Mapping[str, str]) -> Account | None: ...


class PasswordBackend:
    """Username and password checked against an argon2id hash."""

    name = "password"

    def __init__(self, accounts: AccountStore) -> None:
        self.accounts = accounts

    async def authenticate(self, credentials: Mapping[str, str]) -> Account | None:
        account, stored = await self.accounts.credentials(credentials.get("username", ""))
        ok = verify_password(stored, credentials.get("password", ""))
        if account is None or account.auth_backend != self.name or not ok:
            return None
        return account


@dataclass(frozen=True)
class Session:
    account: Account
    csrf_token: str


class SessionStore:
    """Sessions in PostgreSQL, with a few seconds of in-process memory.

    Every API call needs its session; remembering a lookup for ``CACHE_SECONDS`` spares the
    database a query per request under load. Logging out in this process forgets at once; a
    session ended by another process (logout, disabled account) stops working here within
    ``CACHE_SECONDS``.
    """

    CACHE_SECONDS = 5.0
    CACHE_MAX = 10_000

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._recent: dict[bytes, tuple[float, Session]] = {}

    async def create(self, account: Account) -> tuple[str, str]:
        """A new session; returns (cookie token, CSRF token)."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        await self.pool.execute(
            """INSERT INTO officer_sessions (token_hash, account_id, csrf_token, expires_at)
               VALUES ($1, $2, $3, now() + $4::interval)""",
            _digest(token),
            account.account_id,
            csrf,
            SESSION_LIFETIME,
        )
        # Housekeeping in passing: expired sessions are of no use to anyone.
        await self.pool.execute("DELETE FROM officer_sessions WHERE expires_at < now()")
        return token, csrf

    async def resolve(self, token: str) -> Session | None:
        digest = _digest(token)
        now = time.monotonic()
        hit = self._recent.get(digest)
        if hit is not None and now - hit[0] < self.CACHE_SECONDS:
            return hit[1]
        session = await self._lookup(digest)
        if session is None:
            self._recent.pop(digest, None)
            return None
        if len(self._recent) >= self.CACHE_MAX:
            self._recent.clear()
        self._recent[digest] = (now, session)
        return session

    def forget_account(self, account_id: str) -> None:
        for key in [k for k, (_, s) in self._recent.items() if s.account.account_id == account_id]:
            del self._recent[key]

    async def _lookup(self, digest: bytes) -> Session | None:
        row = await self.pool.fetchrow(
            """SELECT a.account_id, a.username, a.display_name, a.role, a.team,
                      a.ward_codes, a.local_authority_codes, a.auth_backend, s.csrf_token,
                      s.last_seen_at < now() - $3::interval AS stale
               FROM officer_sessions s JOIN officer_accounts a USING (account_id)
               WHERE s.token_hash = $1 AND a.disabled_at IS NULL AND s.expires_at > now()
                 AND s.last_seen_at > now() - $2::interval""",
            digest,
            SESSION_IDLE,
            TOUCH_EVERY,
        )
        if row is None:
            return None
        if row["stale"]:
            # Idle time is kept to the minute: a write per request would cost more than it tells.
            await self.pool.execute(
                "UPDATE officer_sessions SET last_seen_at = now() WHERE token_hash = $1", digest
            )
        return Session(account_from_row(row), row["csrf_token"])

    async def revoke(self, token: str) -> None:
        self._recent.pop(_digest(token), None)
        await self.pool.execute(
            "DELETE FROM officer_sessions WHERE token_hash = $1", _digest(token)
        )


class LoginThrottle:
    """Too many failed logins for a username or from a client address: wait (HTTP 429)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def retry_after(self, username: str, client: str) -> int | None:
        """Seconds to wait, or None when a login attempt may go ahead."""
        row = await self.pool.fetchrow(
            """SELECT
                 count(*) FILTER (WHERE username_key = $1) AS by_user,
                 count(*) FILTER (WHERE client = $2) AS by_client,
                 min(attempted_at) FILTER (WHERE username_key = $1) AS first_user,
                 min(attempted_at) FILTER (WHERE client = $2) AS first_client
               FROM officer_login_attempts
               WHERE NOT succeeded AND attempted_at > now() - $3::interval
                 AND (username_key = $1 OR client = $2)""",
            username.lower(),
            client,
            THROTTLE_WINDOW,
        )
        assert row is not None
        firsts = []
        if row["by_user"] >= MAX_FAILURES_PER_USER:
            firsts.append(row["first_user"])
        if row["by_client"] >= MAX_FAILURES_PER_CLIENT:
            firsts.append(row["first_client"])
        if not firsts:
            return None
        wait = await self.pool.fetchval(
            "SELECT ceil(extract(epoch FROM ($1::timestamptz + $2::interval - now())))::int",
            min(firsts),
            THROTTLE_WINDOW,
        )
        return max(1, int(wait or 1))

    async def record(self, username: str, client: str, succeeded: bool) -> None:
        await self.pool.execute(
            "INSERT INTO officer_login_attempts (username_key, client, succeeded) "
            "VALUES ($1, $2, $3)",
            username.lower(),
            client,
            succeeded,
        )
        if succeeded:
            # A successful login clears that name's failures (the client's still count).
            await self.pool.execute(
                "DELETE FROM officer_login_attempts WHERE username_key = $1 AND NOT succeeded",
                username.lower(),
            )


def client_address(request: web.Request) -> str:
    """The peer address (a proxy in front should be trusted explicitly, not via headers)."""
    return request.remote or "unknown"
