"""Who may do what: the session behind a request, roles, CSRF, and area scope.

The access matrix (DESIGN §6, issue 4):

=============================  =======  ==========  =======  =====
what                           officer  supervisor  analyst  admin
=============================  =======  ==========  =======  =====
priority cells (aggregates)    scope    scope       scope    force
set-ups: read, reports         scope    scope       scope    force
set-ups: create/update/archive  -       scope       -        force
door-knock lists, record knock scope    scope       -        force
feedback compose, replies      scope    scope       -        force
key community contacts (audit) scope    scope       -        force
activity reports, CSV (audit)   -       scope       scope    force
audit log                       -       scope       -        force
accounts                        -       -           -        force
=============================  =======  ==========  =======  =====

Analysts see aggregates and pseudonymous data only: nothing that names a person or a household.
401 means "log in"; 403 means "logged in, but not this role or not this area".
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from api.http import HTTPProblem
from api.officer.accounts import Account, Role
from api.officer.auth import CSRF_FIELD, CSRF_HEADER, Session, cookie_name, tokens_match
from api.officer.state import officer_state


@dataclass(frozen=True)
class _Looked:
    """The session lookup of one request (None: no valid session)."""

    session: Session | None


_SESSION = web.RequestKey("officer_session", _Looked)

READERS: tuple[Role, ...] = ("officer", "supervisor", "analyst", "admin")
FIELD: tuple[Role, ...] = ("officer", "supervisor", "admin")
MANAGERS: tuple[Role, ...] = ("supervisor", "admin")
REPORTERS: tuple[Role, ...] = ("supervisor", "analyst", "admin")
ADMINS: tuple[Role, ...] = ("admin",)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_token(request: web.Request) -> str | None:
    secure = officer_state(request).settings.cookie_secure
    return request.cookies.get(cookie_name(secure))


async def current_session(request: web.Request) -> Session | None:
    """The request's session (looked up once per request), or None."""
    looked: _Looked | None = request.get(_SESSION)
    if looked is not None:
        return looked.session
    token = session_token(request)
    session = await officer_state(request).sessions.resolve(token) if token else None
    request[_SESSION] = _Looked(session)
    return session


async def csrf_ok(request: web.Request, session: Session) -> bool:
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        form = await request.post()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    return tokens_match(given, session.csrf_token)


async def require(request: web.Request, roles: tuple[Role, ...] = READERS) -> Account:
    """The logged-in account if it has one of ``roles``; 401/403 otherwise.

    State-changing methods also need the session's CSRF token (403 without it).
    """
    session = await current_session(request)
    if session is None:
        raise HTTPProblem(401, "log in first", headers={"WWW-Authenticate": "Session"})
    if request.method not in SAFE_METHODS and not await csrf_ok(request, session):
        raise HTTPProblem(403, "missing or wrong CSRF token", CSRF_FIELD)
    if session.account.role not in roles:
        raise HTTPProblem(403, f"the {session.account.role} role may not do this")
    return session.account


def forbid_out_of_scope(in_scope: bool) -> None:
    if not in_scope:
        raise HTTPProblem(403, "outside your area")
