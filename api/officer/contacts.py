"""Key community contacts and advisory group members who agreed to be contacted.

Identified people: officers see them only inside their scope, analysts never, and every view
(list or single) is written to the audit log, with the reason the officer gives, before the
details are sent. Supervisors and admins add contacts (recording the consent) and remove them
(erasure deletes the row: nothing else holds these details).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from api.http import HTTPProblem, parse_body
from api.officer import audit
from api.officer.access import FIELD, MANAGERS, forbid_out_of_scope, require
from api.officer.accounts import Account
from api.officer.state import officer_state
from schemas.envelope import utcnow

Code = Annotated[str, StringConstraints(pattern=r"^[A-Z][0-9]{8}$")]


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: Literal["key_contact", "advisory_group"]
    name: str = Field(min_length=1, max_length=120)
    organisation: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = Field(default=None, max_length=24, pattern=r"^\+?[0-9 ()-]{7,24}$")
    ward_code: Code
    community_group: str | None = Field(default=None, max_length=120)
    consent_given_at: AwareDatetime | None = None
    consent_note: str = Field(min_length=1, max_length=500)


def _json(row: Any) -> dict[str, Any]:
    out = dict(row)
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = v.isoformat()
    return out


async def _in_scope(request: web.Request, account: Account, row: Any) -> bool:
    index = await officer_state(request).areas.get()
    return account.scope.covers(
        row["ward_code"], row["local_authority_code"] or index.la_of_ward.get(row["ward_code"])
    )


async def list_handler(request: web.Request) -> web.Response:
    account = await require(request, FIELD)
    reason = audit.check_reason(request.query.get("reason"))
    state = officer_state(request)
    rows = await state.pool.fetch("SELECT * FROM identity_contacts ORDER BY ward_code, name")
    visible = [r for r in rows if await _in_scope(request, account, r)]
    await audit.record(
        state.pool, account, "view", "community_contact", [r["contact_id"] for r in visible], reason
    )
    return web.json_response({"count": len(visible), "items": [_json(r) for r in visible]})


async def get_handler(request: web.Request) -> web.Response:
    account = await require(request, FIELD)
    state = officer_state(request)
    row = await state.pool.fetchrow(
        "SELECT * FROM identity_contacts WHERE contact_id = $1", request.match_info["contact_id"]
    )
    if row is None:
        raise HTTPProblem(404, "no such contact", "contact_id")
    forbid_out_of_scope(await _in_scope(request, account, row))
    reason = audit.check_reason(request.query.get("reason"))
    await audit.record(
        state.pool,
        account,
        "view",
        "community_contact",
        [row["contact_id"]],
        reason,
        area=row["ward_code"],
    )
    return web.json_response(_json(row))


async def create_handler(request: web.Request) -> web.Response:
    account = await require(request, MANAGERS)
    data = await parse_body(request, ContactIn)
    state = officer_state(request)
    index = await state.areas.get()
    la = index.la_of_ward.get(data.ward_code)
    forbid_out_of_scope(account.scope.covers(data.ward_code, la))
    row = await state.pool.fetchrow(
        """INSERT INTO identity_contacts (contact_id, kind, name, organisation, email, phone,
               ward_code, local_authority_code, community_group, consent_given_at, consent_note,
               created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING contact_id""",
        "kc-" + secrets.token_urlsafe(9),
        data.kind,
        data.name,
        data.organisation,
        data.email,
        data.phone,
        data.ward_code,
        la,
        data.community_group,
        data.consent_given_at or utcnow(),
        data.consent_note,
        account.account_id,
    )
    assert row is not None
    return web.json_response({"contact_id": row["contact_id"]}, status=201)


async def delete_handler(request: web.Request) -> web.Response:
    """Erasure: the contact withdrew consent; the row (the only copy) is deleted."""
    account = await require(request, MANAGERS)
    state = officer_state(request)
    row = await state.pool.fetchrow(
        "SELECT * FROM identity_contacts WHERE contact_id = $1", request.match_info["contact_id"]
    )
    if row is None:
        raise HTTPProblem(404, "no such contact", "contact_id")
    forbid_out_of_scope(await _in_scope(request, account, row))
    await state.pool.execute(
        "DELETE FROM identity_contacts WHERE contact_id = $1", row["contact_id"]
    )
    return web.json_response({"contact_id": row["contact_id"], "erased": True})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/contacts", list_handler)
    app.router.add_post("/api/v1/contacts", create_handler)
    app.router.add_get("/api/v1/contacts/{contact_id}", get_handler)
    app.router.add_delete("/api/v1/contacts/{contact_id}", delete_handler)
