"""The OpenAPI 3.1 description of the officer API, served at ``/api/v1/openapi.json``.

Request bodies come from the pydantic models the handlers validate with, so the description
cannot drift from what the server accepts; responses are described in outline.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from api.officer.contacts import ContactIn
from api.officer.doorknocks import KnockIn
from api.officer.feedback import FeedbackIn
from api.officer.session_api import AccountIn, LoginIn
from api.officer.setups import SetupIn, SetupPatch

_MODELS: tuple[type[BaseModel], ...] = (
    LoginIn,
    AccountIn,
    SetupIn,
    SetupPatch,
    KnockIn,
    FeedbackIn,
    ContactIn,
)

ERRORS = {
    "401": {"description": "Not logged in"},
    "403": {"description": "Role not allowed, outside the account's area, or no CSRF token"},
    "422": {"description": "Invalid input; `field` names the failing field"},
}


def _op(
    summary: str,
    roles: str,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    ok: str = "200",
    write: bool = False,
    audited: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Roles: {roles}."
        + (" Writes an audit-log row." if audited else "")
        + (" Needs the `X-CSRF-Token` header." if write else ""),
        "responses": {ok: {"description": "OK"}, **ERRORS},
    }
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    if params:
        op["parameters"] = params
    if write:
        op["security"] = [{"session": [], "csrf": []}]
    return op


def _q(name: str, doc: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": doc,
        "schema": {"type": "string"},
    }


def _p(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def build_spec() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    level = _q("level", "9, 8, 7 (H3 resolution), ward, la or force; default 9")
    reason = _q("reason", "Why you are looking (written to the audit log)", required=True)
    sid = _p("setup_id")
    paths: dict[str, Any] = {
        "/api/v1/auth/login": {
            "post": _op(
                "Log in (sets the session cookie, returns the CSRF token)", "anyone", "LoginIn"
            )
        },
        "/api/v1/auth/logout": {"post": _op("Log out", "any logged-in account", write=True)},
        "/api/v1/me": {"get": _op("The logged-in account, its scope and CSRF token", "all")},
        "/api/v1/priority": {
            "get": _op("Priority areas in your scope, by rank", "all", params=[level])
        },
        "/api/v1/priority/geojson": {
            "get": _op("H3 cell outlines with score and rank (GeoJSON)", "all", params=[level])
        },
        "/api/v1/priority/{level}/{area_id}": {
            "get": _op(
                "One area: score, rank, components, reasons, actions, streets, trend",
                "all",
                params=[_p("level"), _p("area_id")],
            )
        },
        "/api/v1/setups": {
            "get": _op("Set-ups in your scope", "all", params=[_q("archived", "0 or 1")]),
            "post": _op(
                "Create a set-up (publishes setup.created)",
                "supervisor, admin",
                "SetupIn",
                ok="201",
                write=True,
            ),
        },
        "/api/v1/setups/{setup_id}": {
            "get": _op("One set-up", "all", params=[sid]),
            "patch": _op(
                "Update a set-up (publishes setup.updated); 409 when archived",
                "supervisor, admin",
                "SetupPatch",
                params=[sid],
                write=True,
            ),
        },
        "/api/v1/setups/{setup_id}/archive": {
            "post": _op(
                "Archive (read-only, reports kept)", "supervisor, admin", params=[sid], write=True
            )
        },
        "/api/v1/setups/{setup_id}/report": {
            "get": _op("Progress against targets, by ward and day", "all", params=[sid])
        },
        "/api/v1/setups/{setup_id}/doors": {
            "get": _op(
                "Door-knock list ordered by priority",
                "officer, supervisor, admin",
                params=[sid, _q("revisit", "1 to show registered and recently visited households")],
            )
        },
        "/api/v1/knocks": {
            "post": _op(
                "Record a door knock (publishes doorknock.recorded); no_answer = 'not in' for the rest of the day",
                "officer, supervisor, admin",
                "KnockIn",
                ok="202",
                write=True,
            )
        },
        "/api/v1/reports/activity": {
            "get": _op(
                "Activity by team and ward over time; format=csv exports (audited, needs reason)",
                "supervisor, analyst, admin",
                params=[
                    _q("from", "YYYY-MM-DD"),
                    _q("to", "YYYY-MM-DD"),
                    _q("by", "day or week"),
                    _q("format", "json or csv"),
                    _q("reason", "required for csv"),
                ],
                audited=True,
            )
        },
        "/api/v1/feedback": {
            "post": _op(
                "Compose a 'you said, we did' update (publishes notification.requested)",
                "officer, supervisor, admin",
                "FeedbackIn",
                ok="202",
                write=True,
            ),
            "get": _op("Updates sent for your area", "officer, supervisor, admin"),
        },
        "/api/v1/replies": {
            "get": _op(
                "Residents' replies for your area",
                "officer, supervisor, admin",
                params=[_q("reason", "why (default: reading replies)")],
                audited=True,
            )
        },
        "/api/v1/contacts": {
            "get": _op(
                "Key community contacts in your scope",
                "officer, supervisor, admin",
                params=[reason],
                audited=True,
            ),
            "post": _op(
                "Add a contact who agreed to be contacted",
                "supervisor, admin",
                "ContactIn",
                ok="201",
                write=True,
            ),
        },
        "/api/v1/contacts/{contact_id}": {
            "get": _op(
                "One contact",
                "officer, supervisor, admin",
                params=[_p("contact_id"), reason],
                audited=True,
            ),
            "delete": _op(
                "Erase a contact", "supervisor, admin", params=[_p("contact_id")], write=True
            ),
        },
        "/api/v1/audit": {"get": _op("The audit log (read-only)", "supervisor, admin")},
        "/api/v1/accounts": {
            "get": _op("Accounts", "admin"),
            "post": _op("Create an account", "admin", "AccountIn", ok="201", write=True),
        },
        "/api/v1/accounts/{account_id}/disable": {
            "post": _op(
                "Disable an account and end its sessions",
                "admin",
                params=[_p("account_id")],
                write=True,
            )
        },
        "/api/v1/live": {
            "get": _op("Server-sent events: priority changes and alerts in your scope", "all")
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Local Priority Targeting: officer API",
            "version": "1",
            "description": "Session cookie authentication (log in at /api/v1/auth/login); "
            "state-changing calls need the session's CSRF token in X-CSRF-Token.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "__Host-lpt_session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            },
        },
        "security": [{"session": []}],
    }


_SPEC = build_spec()


async def spec_handler(_: web.Request) -> web.Response:
    return web.json_response(_SPEC)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", spec_handler)
