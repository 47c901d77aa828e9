"""Log in and out over the JSON API, who am I, accounts (admins) and the audit log.

The JSON login answers with the CSRF token the client must send back in ``X-CSRF-Token`` on
every state-changing call; the session itself travels only in the HttpOnly cookie.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from api.http import HTTPProblem, parse_body
from api.officer import audit
from api.officer.access import ADMINS, MANAGERS, READERS, current_session, require, session_token
from api.officer.accounts import Account, Role
from api.officer.auth import SESSION_LIFETIME, client_address, cookie_name
from api.officer.state import OfficerState, officer_state
from lpt.logs import get_logger

log = get_logger(__name__)


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=120)
    password: str = Field(min_length=1, max_length=1000)


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    username: str = Field(min_length=3, max_length=120, pattern=r"^[A-Za-z0-9._@-]+$")
    display_name: str = Field(min_length=1, max_length=120)
    role: Role
    password: str = Field(min_length=12, max_length=1000)
    team: str | None = Field(default=None, max_length=120)
    ward_codes: list[str] = Field(default_factory=list, max_length=500)
    local_authority_codes: list[str] = Field(default_factory=list, max_length=50)


async def log_in(request: web.Request, username: str, password: str) -> tuple[Account, str, str]:
    """Check credentials (throttled); returns (account, session token, CSRF token)."""
    state = officer_state(request)
    client = client_address(request)
    wait = await state.throttle.retry_after(username, client)
    if wait is not None:
        raise HTTPProblem(
            429,
            "too many failed log-ins; try again later",
            headers={"Retry-After": str(wait)},
            retry_after=wait,
        )
    account = await state.backend.authenticate({"username": username, "password": password})
    await state.throttle.record(username, client, account is not None)
    if account is None:
        log.info("officer.login_failed")  # no username: it may be a mistyped password
        raise HTTPProblem(401, "wrong username or password", "password")
    token, csrf = await state.sessions.create(account)
    log.info("officer.login", account_id=account.account_id)
    return account, token, csrf


def set_session_cookie(response: web.StreamResponse, state: OfficerState, token: str) -> None:
    response.set_cookie(
        cookie_name(state.settings.cookie_secure),
        token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path="/",
        httponly=True,
        secure=state.settings.cookie_secure,
        samesite="Strict",
    )


def clear_session_cookie(response: web.StreamResponse, state: OfficerState) -> None:
    response.del_cookie(cookie_name(state.settings.cookie_secure), path="/")


async def login_handler(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        # Cross-site forms cannot send JSON without a preflight: this is the login's CSRF guard.
        raise HTTPProblem(415, "send the body as application/json")
    data = await parse_body(request, LoginIn)
    account, token, csrf = await log_in(request, data.username, data.password)
    response = web.json_response({"account": account.as_json(), "csrf_token": csrf})
    set_session_cookie(response, officer_state(request), token)
    return response


async def logout_handler(request: web.Request) -> web.Response:
    await require(request, READERS)
    token = session_token(request)
    state = officer_state(request)
    if token:
        await state.sessions.revoke(token)
    response = web.json_response({"logged_out": True})
    clear_session_cookie(response, state)
    return response


async def me_handler(request: web.Request) -> web.Response:
    account = await require(request, READERS)
    session = await current_session(request)
    assert session is not None
    return web.json_response({"account": account.as_json(), "csrf_token": session.csrf_token})


async def accounts_handler(request: web.Request) -> web.Response:
    await require(request, ADMINS)
    accounts = await officer_state(request).accounts.list_all()
    return web.json_response({"items": [a.as_json() for a in accounts]})


async def create_account_handler(request: web.Request) -> web.Response:
    await require(request, ADMINS)
    data = await parse_body(request, AccountIn)
    try:
        account = await officer_state(request).accounts.create(
            data.username,
            data.display_name,
            data.role,
            password=data.password,
            team=data.team,
            ward_codes=data.ward_codes,
            local_authority_codes=data.local_authority_codes,
        )
    except Exception as exc:
        if type(exc).__name__ == "UniqueViolationError":
            raise HTTPProblem(409, "this username is taken", "username") from None
        raise
    return web.json_response(account.as_json(), status=201)


async def disable_account_handler(request: web.Request) -> web.Response:
    await require(request, ADMINS)
    state = officer_state(request)
    done = await state.accounts.disable(request.match_info["account_id"])
    state.sessions.forget_account(request.match_info["account_id"])
    if not done:
        raise HTTPProblem(404, "no such active account", "account_id")
    return web.json_response({"disabled": True})


async def audit_entries(request: web.Request, account: Account) -> list[dict[str, Any]]:
    state = officer_state(request)
    index = await state.areas.get()
    wards = index.wards_in_scope(account.scope)
    return await audit.entries(state.pool, account, wards)


async def audit_handler(request: web.Request) -> web.Response:
    account = await require(request, MANAGERS)
    items = await audit_entries(request, account)
    return web.json_response({"count": len(items), "items": items})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/auth/login", login_handler)
    app.router.add_post("/api/v1/auth/logout", logout_handler)
    app.router.add_get("/api/v1/me", me_handler)
    app.router.add_get("/api/v1/accounts", accounts_handler)
    app.router.add_post("/api/v1/accounts", create_account_handler)
    app.router.add_post("/api/v1/accounts/{account_id}/disable", disable_account_handler)
    app.router.add_get("/api/v1/audit", audit_handler)
