"""A copy of one's own data: shown on a page, or downloaded as JSON (audited either way).

What is included is what the service holds about the person, read fresh: the identity row
(contact details, postcode and area, channels, groups, consent, dates), their message settings,
the messages sent or held for them, their survey invitations, their replies (opened with their
own key, since they are theirs) and the log of their own views of this data. The optional sex
and disability answers are not included because they were never stored against the person (only
as area counts, see :mod:`.equality`).

The audit row is written before the data leaves (:mod:`.audit`).
"""

from __future__ import annotations

import json
from datetime import datetime, time
from typing import Any

import asyncpg
from aiohttp import web

from api.context import RESOURCES
from api.public import audit
from api.public.links import check_link
from api.public.manage import AGAIN, CHANNEL_LABELS, KIND_LABELS, current_settings
from api.public.render import SECURITY_HEADERS, link_refused, page
from api.public.state import public_state
from consumers.notifications.tokens import TokenRefused, TokenStatus
from identity.vault import IdentityVault, KeyShredded
from schemas.common import EncryptedField

#: Words for the codes the data copy shows (the JSON download keeps the codes).
LABELS: dict[str, str] = {
    **CHANNEL_LABELS,
    **{kind: label for kind, (label, _) in KIND_LABELS.items()},
    "view": "looked at",
    "export": "downloaded",
    "erase": "deleted",
    "preferences": "settings changed",
}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | time):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


async def collect(
    pool: asyncpg.Pool, vault: IdentityVault, resident_id: str
) -> dict[str, Any] | None:
    """Everything held about a resident, as JSON-ready values; None once they are erased."""
    person = await vault.get_person(resident_id)
    if person is None:
        return None
    d = person.details
    confirmed = await pool.fetchval(
        "SELECT email_confirmed_at FROM identity_people WHERE resident_id = $1", resident_id
    )
    settings = await current_settings(pool, resident_id)
    messages = await pool.fetch(
        """SELECT o.message_id, o.channel, o.status, o.created_at, o.sent_at, r.kind, r.subject
           FROM notification_outbox o
           LEFT JOIN notification_requests r ON r.notification_id = o.message_id
           WHERE o.resident_id = $1 ORDER BY o.created_at DESC LIMIT 500""",
        resident_id,
    )
    surveys = await pool.fetch(
        """SELECT wave, invited_at, responded_at FROM survey_invitations
           WHERE resident_id = $1 ORDER BY wave DESC""",
        resident_id,
    )
    replies = []
    for r in await pool.fetch(
        """SELECT reply_id, received_at, body_key_id, body_nonce, body_ciphertext
           FROM reply_inbox WHERE resident_id = $1 ORDER BY received_at DESC LIMIT 200""",
        resident_id,
    ):
        sealed = EncryptedField(
            key_id=r["body_key_id"], nonce=r["body_nonce"], ciphertext=r["body_ciphertext"]
        )
        try:
            body = await vault.unseal(sealed)
        except KeyShredded:
            body = None
        replies.append({"received_at": _plain(r["received_at"]), "text": body})
    views = await audit.entries(pool, resident_id)
    return {
        "resident_id": resident_id,
        "contact": {"email": d.email, "phone": d.phone, "name": d.name, "address": d.address},
        "email_confirmed_at": _plain(confirmed),
        "area": {
            "postcode": d.postcode,
            "postcode_has_map_location": not d.unlocated,
            "street_cell": d.cell,
            "ward_code": d.ward_code,
            "local_authority_code": d.local_authority_code,
        },
        "registration": {
            "registered_at": _plain(person.registered_at),
            "consent_version": d.consent_version,
            "channels": list(d.channels),
            "community_groups": list(d.community_groups),
            "opted_out_at": _plain(person.opted_out_at),
        },
        "message_settings": None
        if settings is None
        else {
            "channels": list(settings.channels),
            "topics": list(settings.topics),
            "max_per_week": settings.max_per_week,
            "quiet_hours": [_plain(settings.quiet_start), _plain(settings.quiet_end)],
        },
        "messages": [
            {
                "message_id": m["message_id"],
                "kind": m["kind"],
                "subject": m["subject"],
                "channel": m["channel"],
                "status": m["status"],
                "created_at": _plain(m["created_at"]),
                "sent_at": _plain(m["sent_at"]),
            }
            for m in messages
        ],
        "surveys": [
            {
                "wave": s["wave"],
                "invited_at": _plain(s["invited_at"]),
                "responded_at": _plain(s["responded_at"]),
            }
            for s in surveys
        ],
        "replies": replies,
        "views_of_this_data": [
            {"at": _plain(at), "action": action, "via": via} for at, action, via in views
        ],
    }


async def _resident(request: web.Request) -> str | web.Response:
    try:
        return await check_link(
            request.app[RESOURCES].pool,
            request.match_info["token"],
            "manage",
            public_state(request).clock(),
        )
    except TokenRefused as exc:
        return link_refused(request, exc.status, AGAIN)


async def data_page(request: web.Request) -> web.Response:
    resident = await _resident(request)
    if isinstance(resident, web.Response):
        return resident
    res = request.app[RESOURCES]
    await audit.record(res.pool, resident, "view", "manage_link")
    data = await collect(res.pool, res.vault, resident)
    if data is None:
        return link_refused(request, TokenStatus.UNKNOWN, AGAIN)
    return page(request, "mydata.html", token=request.match_info["token"], data=data, labels=LABELS)


async def data_export(request: web.Request) -> web.Response:
    resident = await _resident(request)
    if isinstance(resident, web.Response):
        return resident
    res = request.app[RESOURCES]
    await audit.record(res.pool, resident, "export", "manage_link")
    data = await collect(res.pool, res.vault, resident)
    if data is None:
        return link_refused(request, TokenStatus.UNKNOWN, AGAIN)
    return web.Response(
        text=json.dumps(data, indent=2, ensure_ascii=False),
        content_type="application/json",
        charset="utf-8",
        headers={
            **SECURITY_HEADERS,
            "Content-Disposition": 'attachment; filename="my-details.json"',
        },
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/manage/{token}/data", data_page)
    app.router.add_get("/manage/{token}/data.json", data_export)
