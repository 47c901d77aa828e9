"""Who may use the ops page and replay dead letters.

Two ways in, both checked on every request:

* an officer session with the **admin** role (``api.officer.access.require``), for people in
  a browser: state-changing requests (replay) then also need the session's CSRF token;
* ``Authorization: Bearer <LPT_OPS_TOKEN>``, for scripts and monitoring (no cookie, so no
  CSRF exposure), compared in constant time; off when the setting is empty.

The officer app is optional here (imported lazily): a deployment without it still has the
token. Everything else answers 401 (not logged in) or 403 (logged in, not an admin).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aiohttp import web

from api.context import SETTINGS
from api.http import HTTPProblem

TOKEN_ACTOR = "ops-token"


@dataclass(frozen=True)
class Operator:
    """Who is acting: an account id (a pseudonym, never a name) or ``ops-token``."""

    actor: str
    via: str  # "session" or "token"
    csrf_token: str | None = None


def _token_ok(given: str, expected: str) -> bool:
    a = hashlib.sha256(given.encode()).digest()
    b = hashlib.sha256(expected.encode()).digest()
    return hmac.compare_digest(a, b)


def _officer_app_wired(request: web.Request) -> bool:
    try:
        from api.officer.state import OFFICER
    except ImportError:  # pragma: no cover - the officer app is not installed
        return False
    return OFFICER in request.app


async def require_operator(request: web.Request) -> Operator:
    """The operator behind the request, or :class:`HTTPProblem` 401/403."""
    settings = request.app[SETTINGS]
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        if settings.ops_token and _token_ok(credentials.strip(), settings.ops_token):
            return Operator(TOKEN_ACTOR, "token")
        raise HTTPProblem(
            401, "ops token is not valid", headers={"WWW-Authenticate": 'Bearer realm="ops"'}
        )
    if _officer_app_wired(request):
        from api.officer.access import ADMINS, current_session, require

        account = await require(request, ADMINS)
        session = await current_session(request)
        return Operator(account.account_id, "session", session.csrf_token if session else None)
    hint = (
        "send Authorization: Bearer <LPT_OPS_TOKEN>"
        if settings.ops_token
        else "set LPT_OPS_TOKEN (or enable admin accounts) to use the ops page"
    )
    raise HTTPProblem(
        401, f"ops access: {hint}", headers={"WWW-Authenticate": 'Bearer realm="ops"'}
    )
