"""The officer web pages: server-rendered (Jinja2, autoescaped), mobile-first, minimal JS.

Every page works without JavaScript except the map itself (Leaflet) and the live feed
(EventSource); the list view carries the same information as the map for screen readers and
for phones without a good connection. Forms post back here with the session's CSRF token and
call the same functions as the JSON API, so the access rules and audit are the same.
"""

from __future__ import annotations

import json
import secrets
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from pydantic import ValidationError

from api.http import HTTPProblem
from api.officer import audit, contacts, feedback, reports
from api.officer.access import (
    FIELD,
    MANAGERS,
    READERS,
    REPORTERS,
    current_session,
    require,
    session_token,
)
from api.officer.accounts import Account, Role
from api.officer.auth import CSRF_FIELD, tokens_match
from api.officer.cells import H3_LEVELS, area_detail, cells_in_scope, parse_level
from api.officer.doorknocks import KnockIn, door_list, record_knock
from api.officer.feedback import FeedbackIn
from api.officer.session_api import audit_entries, clear_session_cookie, log_in, set_session_cookie
from api.officer.setups import (
    SetupIn,
    SetupPatch,
    Targets,
    archive_setup,
    create_setup,
    load_setup,
    setup_json,
    setups_for,
    update_setup,
)
from api.officer.state import officer_state
from lpt.settings import PROJECT_ROOT
from schemas.common import DOOR_KNOCK_OUTCOMES
from schemas.registry import describe_validation_error

TEMPLATES = Path(__file__).with_name("templates")
LOGIN_CSRF_COOKIE = "lpt_login_csrf"
HULL_BOUNDARY = PROJECT_ROOT / "lpt" / "data" / "hull_local_authority.geojson"

#: The knock form's outcomes, most common first (the first is preselected).
KNOCK_FORM_OUTCOMES = ("spoke", "registered", "leaflet_left", "no_answer", "declined")
assert set(KNOCK_FORM_OUTCOMES) == set(DOOR_KNOCK_OUTCOMES)

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["words"] = lambda s: str(s).replace("_", " ")

#: Navigation: (path, label, roles that see it).
NAV: tuple[tuple[str, str, tuple[Role, ...]], ...] = (
    ("/officer/", "Map", READERS),
    ("/officer/list", "List", READERS),
    ("/officer/setups", "Set-ups", READERS),
    ("/officer/reports", "Reports", REPORTERS),
    ("/officer/compose", "You said, we did", FIELD),
    ("/officer/contacts", "Contacts", FIELD),
    ("/officer/audit", "Audit log", MANAGERS),
)


async def render(
    request: web.Request,
    template: str,
    account: Account | None,
    status: int = 200,
    **context: Any,
) -> web.Response:
    session = await current_session(request) if account else None
    nav = [(p, label) for p, label, roles in NAV if account and account.role in roles]
    html = _ENV.get_template(template).render(
        account=account,
        nav=nav,
        path=request.path,
        csrf_field=CSRF_FIELD,
        csrf_token=session.csrf_token if session else "",
        force_name=officer_state(request).settings.force_name,
        notice=request.query.get("done", ""),
        **context,
    )
    return web.Response(text=html, status=status, content_type="text/html")


async def page_account(request: web.Request, roles: tuple[Role, ...] = READERS) -> Account:
    """The account for a page: to the login page when there is none (after the check)."""
    try:
        return await require(request, roles)
    except HTTPProblem as problem:
        if problem.status == 401:
            target = request.path_qs if request.method == "GET" else "/officer/"
            raise web.HTTPSeeOther("/officer/login?next=" + quote(target)) from None
        raise


async def problem_page(request: web.Request, problem: HTTPProblem) -> web.Response:
    session = await current_session(request)
    return await render(
        request,
        "error.html",
        session.account if session else None,
        status=problem.status,
        problem=problem,
    )


def _handle(handler: Any) -> Any:
    """Page handlers render refusals as pages (the JSON error middleware is for the API)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except HTTPProblem as problem:
            return await problem_page(request, problem)

    wrapped.__name__ = handler.__name__
    return wrapped


def redirect(path: str, done: str = "") -> web.Response:
    """303 to ``path`` (a notice for the next page in ``done``)."""
    location = path + (("?" + urlencode({"done": done})) if done else "")
    return web.Response(status=303, headers={"Location": location})


def form_problem(exc: ValidationError) -> HTTPProblem:
    summary, field, _ = describe_validation_error(exc)
    return HTTPProblem(422, summary, field)


def _safe_next(target: str) -> str:
    return target if target.startswith("/officer") and not target.startswith("//") else "/officer/"


# -- login ------------------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = await render(
        request,
        "login.html",
        None,
        login_csrf=token,
        next=_safe_next(request.query.get("next", "/officer/")),
        error="",
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=officer_state(request).settings.cookie_secure,
        path="/officer/login",
        max_age=3600,
    )
    return response


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    next_url = _safe_next(str(form.get("next", "/officer/")))
    # Double-submit check: a cross-site form cannot read or set our login cookie.
    if not tokens_match(str(form.get(CSRF_FIELD, "")), request.cookies.get(LOGIN_CSRF_COOKIE, "")):
        return redirect("/officer/login?next=" + quote(next_url))
    try:
        _, token, _ = await log_in(
            request, str(form.get("username", "")), str(form.get("password", ""))
        )
    except HTTPProblem as problem:
        token_again = secrets.token_urlsafe(24)
        response = await render(
            request,
            "login.html",
            None,
            status=problem.status,
            login_csrf=token_again,
            next=next_url,
            error=problem.message,
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token_again,
            httponly=True,
            samesite="Strict",
            secure=officer_state(request).settings.cookie_secure,
            path="/officer/login",
        )
        return response
    response = redirect(next_url)
    set_session_cookie(response, officer_state(request), token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/officer/login")
    return response


async def logout_submit(request: web.Request) -> web.StreamResponse:
    await page_account(request)
    token = session_token(request)
    state = officer_state(request)
    if token:
        await state.sessions.revoke(token)
    response = redirect("/officer/login")
    clear_session_cookie(response, state)
    return response


# -- map, list, cell --------------------------------------------------------------------------


async def map_page(request: web.Request) -> web.Response:
    account = await page_account(request)
    level = parse_level(request.query.get("level"))
    if level not in H3_LEVELS:
        level = "9"
    return await render(
        request,
        "map.html",
        account,
        level=level,
        tile_url=officer_state(request).settings.tile_url,
    )


async def list_page(request: web.Request) -> web.Response:
    account = await page_account(request)
    level = parse_level(request.query.get("level"))
    items = await cells_in_scope(request, account, level)
    return await render(request, "list.html", account, level=level, items=items[:200])


async def cell_page(request: web.Request) -> web.Response:
    account = await page_account(request)
    level = parse_level(request.match_info["level"])
    item = await area_detail(request, account, level, request.match_info["area_id"])
    return await render(request, "cell.html", account, item=item)


_BOUNDARIES: dict[str, Any] = {}


async def boundaries(request: web.Request) -> web.Response:
    """The force area and Hull's boundary: the base layer when no tiles are configured."""
    await require(request, READERS)
    if not _BOUNDARIES:
        features = []
        for path, name in (
            (officer_state(request).settings.force_boundary, "force"),
            (HULL_BOUNDARY, "local_authority"),
        ):
            if path.exists():
                data = json.loads(path.read_text())
                for f in data.get("features", [data] if data.get("type") == "Feature" else []):
                    f.setdefault("properties", {})["layer"] = name
                    features.append(f)
        _BOUNDARIES.update({"type": "FeatureCollection", "features": features})
    return web.json_response(_BOUNDARIES, headers={"Cache-Control": "private, max-age=3600"})


# -- set-ups ----------------------------------------------------------------------------------


def _lines(raw: str) -> list[str]:
    return [p.strip() for p in raw.replace(",", "\n").splitlines() if p.strip()]


def _int_or_none(raw: Any) -> int | None:
    text = str(raw or "").strip()
    return int(text) if text.isdigit() else None


async def setups_page(request: web.Request) -> web.Response:
    account = await page_account(request)
    items = await setups_for(request, account)
    index = await officer_state(request).areas.get()
    today = date.today()
    return await render(
        request,
        "setups.html",
        account,
        live=[i for i in items if not i["archived"]],
        archived=[i for i in items if i["archived"]],
        can_manage=account.role in MANAGERS,
        wards=sorted(index.wards_in_scope(account.scope))[:300],
        default_start=today.isoformat(),
        default_end=(today + timedelta(days=28)).isoformat(),
        error="",
    )


async def setup_create(request: web.Request) -> web.StreamResponse:
    account = await page_account(request, MANAGERS)
    form = await request.post()
    try:
        data = SetupIn.model_validate(
            {
                "name": form.get("name", ""),
                "goal": form.get("goal", ""),
                "ward_codes": form.getall("ward_codes", []),
                "area_cells": _lines(str(form.get("area_cells", ""))),
                "community_group": str(form.get("community_group", "")).strip() or None,
                "starts_on": form.get("starts_on", ""),
                "ends_on": form.get("ends_on", ""),
                "revisit_registered": form.get("revisit_registered") == "on",
                "targets": {
                    "doors": _int_or_none(form.get("target_doors")),
                    "registrations": _int_or_none(form.get("target_registrations")),
                    "survey_responses": _int_or_none(form.get("target_surveys")),
                },
            }
        )
    except ValidationError as exc:
        raise form_problem(exc) from None
    created = await create_setup(request, account, data)
    return redirect(f"/officer/setups/{created['setup_id']}", "Set-up created")


async def setup_page(request: web.Request) -> web.Response:
    account = await page_account(request)
    setup = await setup_json(request, account, request.match_info["setup_id"])
    return await render(
        request,
        "setup.html",
        account,
        setup=setup,
        can_manage=account.role in MANAGERS and not setup["archived"],
        can_knock=account.role in FIELD,
    )


async def setup_update(request: web.Request) -> web.StreamResponse:
    account = await page_account(request, MANAGERS)
    setup_id = request.match_info["setup_id"]
    form = await request.post()
    try:
        patch = SetupPatch.model_validate(
            {
                "name": form.get("name") or None,
                "goal": form.get("goal") or None,
                "ends_on": form.get("ends_on") or None,
                "revisit_registered": form.get("revisit_registered") == "on",
                "targets": Targets(
                    doors=_int_or_none(form.get("target_doors")),
                    registrations=_int_or_none(form.get("target_registrations")),
                    survey_responses=_int_or_none(form.get("target_surveys")),
                ),
            }
        )
    except ValidationError as exc:
        raise form_problem(exc) from None
    await update_setup(request, account, setup_id, patch)
    return redirect(f"/officer/setups/{setup_id}", "Set-up updated")


async def setup_archive(request: web.Request) -> web.StreamResponse:
    account = await page_account(request, MANAGERS)
    setup_id = request.match_info["setup_id"]
    await archive_setup(request, account, setup_id)
    return redirect(f"/officer/setups/{setup_id}", "Set-up archived: read-only, reports kept")


async def report_page(request: web.Request) -> web.Response:
    account = await page_account(request)
    report = await reports.setup_report(request, account, request.match_info["setup_id"])
    return await render(request, "report.html", account, report=report)


async def doors_page(request: web.Request) -> web.Response:
    account = await page_account(request, FIELD)
    setup = await load_setup(request, account, request.match_info["setup_id"])
    revisit = setup["revisit_registered"] or request.query.get("revisit") in ("1", "true")
    doors = await door_list(request, account, setup, revisit)
    return await render(
        request,
        "doors.html",
        account,
        setup=setup,
        doors=doors,
        outcomes=KNOCK_FORM_OUTCOMES,
        archived=setup["archived_at"] is not None,
    )


async def knock_submit(request: web.Request) -> web.StreamResponse:
    account = await page_account(request, FIELD)
    form = await request.post()
    setup_id = str(form.get("setup_id", "")) or None
    try:
        knock = KnockIn.model_validate(
            {
                "postcode": form.get("postcode", ""),
                "address_ref": str(form.get("address_ref", "")).strip() or None,
                "outcome": form.get("outcome", ""),
                "setup_id": setup_id,
            }
        )
    except ValidationError as exc:
        raise form_problem(exc) from None
    done = await record_knock(request, account, knock)
    message = f"Knock recorded at {done['postcode']}" + (
        " (hidden from every list until tomorrow)" if done["hidden_until_end_of_day"] else ""
    )
    back = f"/officer/setups/{setup_id}/doors" if setup_id else "/officer/setups"
    return redirect(back, message)


# -- reports, feedback, contacts, audit ---------------------------------------------------------


async def reports_page(request: web.Request) -> web.Response:
    account = await page_account(request, REPORTERS)
    start, end, bucket = reports._period(request)
    rows = await reports.activity_rows(request, account, start, end, bucket)
    return await render(
        request,
        "reports.html",
        account,
        rows=rows,
        setups=await reports.setup_outcomes(request, account),
        start=start.isoformat(),
        end=end.isoformat(),
        bucket=bucket,
    )


async def compose_page(request: web.Request) -> web.Response:
    account = await page_account(request, FIELD)
    index = await officer_state(request).areas.get()
    sent = await feedback.sent_feedback(request, account)
    setups = [s for s in await setups_for(request, account) if not s["archived"]]
    replies = None
    if request.query.get("reason"):
        reason = audit.check_reason(request.query.get("reason"))
        replies = await feedback.inbox(request, account, reason)
    return await render(
        request,
        "compose.html",
        account,
        wards=sorted(index.wards_in_scope(account.scope))[:300],
        setups=setups,
        sent=sent[:20],
        replies=replies,
    )


async def compose_submit(request: web.Request) -> web.StreamResponse:
    account = await page_account(request, FIELD)
    form = await request.post()
    try:
        data = FeedbackIn.model_validate(
            {
                "subject": form.get("subject", ""),
                "body": form.get("body", ""),
                "ward_codes": form.getall("ward_codes", []),
                "setup_id": str(form.get("setup_id", "")) or None,
                "allow_reply": form.get("allow_reply") == "on",
            }
        )
    except ValidationError as exc:
        raise form_problem(exc) from None
    await feedback.compose(request, account, data)
    return redirect("/officer/compose", "Update sent for delivery")


async def contacts_page(request: web.Request) -> web.Response:
    account = await page_account(request, FIELD)
    items = None
    reason = request.query.get("reason", "")
    if reason:
        text = audit.check_reason(reason)
        rows = await officer_state(request).pool.fetch(
            "SELECT * FROM identity_contacts ORDER BY ward_code, name"
        )
        visible = [r for r in rows if await contacts._in_scope(request, account, r)]
        await audit.record(
            officer_state(request).pool,
            account,
            "view",
            "community_contact",
            [r["contact_id"] for r in visible],
            text,
        )
        items = [dict(r) for r in visible]
    return await render(request, "contacts.html", account, items=items, reason=reason)


async def audit_page(request: web.Request) -> web.Response:
    account = await page_account(request, MANAGERS)
    entries = await audit_entries(request, account)
    return await render(request, "audit.html", account, entries=entries)


async def to_app(_: web.Request) -> web.Response:
    return redirect("/officer/")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/officer", to_app)
    r.add_get("/officer/", _handle(map_page))
    r.add_get("/officer/login", _handle(login_page))
    r.add_post("/officer/login", _handle(login_submit))
    r.add_post("/officer/logout", _handle(logout_submit))
    r.add_get("/officer/list", _handle(list_page))
    r.add_get("/officer/cells/{level}/{area_id}", _handle(cell_page))
    r.add_get("/officer/boundaries.geojson", boundaries)
    r.add_get("/officer/setups", _handle(setups_page))
    r.add_post("/officer/setups", _handle(setup_create))
    r.add_get("/officer/setups/{setup_id}", _handle(setup_page))
    r.add_post("/officer/setups/{setup_id}", _handle(setup_update))
    r.add_post("/officer/setups/{setup_id}/archive", _handle(setup_archive))
    r.add_get("/officer/setups/{setup_id}/report", _handle(report_page))
    r.add_get("/officer/setups/{setup_id}/doors", _handle(doors_page))
    r.add_post("/officer/knocks", _handle(knock_submit))
    r.add_get("/officer/reports", _handle(reports_page))
    r.add_get("/officer/compose", _handle(compose_page))
    r.add_post("/officer/compose", _handle(compose_submit))
    r.add_get("/officer/contacts", _handle(contacts_page))
    r.add_get("/officer/audit", _handle(audit_page))
