"""Feedback to residents ("you said, we did") and the replies inbox of an officer's area.

Composing publishes a ``notification.requested`` event; the notification worker resolves the
audience, applies the message budget and delivers it (DESIGN §6). The audience is the wards or
the set-up the officer chose, never a list of people. Replies are read from ``reply_inbox``
(written by the notification worker) for the officer's area; their bodies are sealed with the
resident's key and opened here, so reading them is an audited view.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from aiohttp import web
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.context import RESOURCES
from api.http import HTTPProblem, parse_body
from api.officer import audit
from api.officer.access import FIELD, forbid_out_of_scope, require
from api.officer.accounts import Account
from api.officer.setups import load_setup
from api.officer.state import officer_state
from identity.vault import KeyShredded
from lpt.kafka import publish
from lpt.logs import get_logger
from schemas.common import EncryptedField
from schemas.envelope import utcnow
from schemas.notifications import Audience, NotificationRequested

log = get_logger(__name__)

Code = Annotated[str, StringConstraints(pattern=r"^[A-Z][0-9]{8}$")]
INBOX_LIMIT = 100
DEFAULT_INBOX_REASON = "Reading residents' replies for my area"


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=5000)
    ward_codes: list[Code] = Field(default_factory=list, max_length=200)
    setup_id: str | None = Field(default=None, min_length=1, max_length=64)
    allow_reply: bool = True

    @model_validator(mode="after")
    def _audience(self) -> FeedbackIn:
        if not self.ward_codes and not self.setup_id:
            raise ValueError("choose the wards or the set-up the update is for")
        return self


async def compose(request: web.Request, account: Account, data: FeedbackIn) -> dict[str, Any]:
    state = officer_state(request)
    index = await state.areas.get()
    for ward in data.ward_codes:
        forbid_out_of_scope(index.ward_in_scope(ward, account.scope))
    if data.setup_id:
        await load_setup(request, account, data.setup_id)  # 404 / 403
    notification_id = "fb-" + secrets.token_urlsafe(12)
    event = NotificationRequested(
        occurred_at=utcnow(),
        source="officer-app",
        notification_id=notification_id,
        kind="you_said_we_did",
        audience=Audience(ward_codes=list(data.ward_codes), setup_id=data.setup_id),
        subject=data.subject,
        body=data.body,
        sender=account.account_id,
        allow_reply=data.allow_reply,
    )
    try:
        await publish(request.app[RESOURCES].producer, [event], state.settings)
    except KafkaError as exc:
        log.warning("officer.feedback_publish_failed", error=type(exc).__name__)
        raise HTTPProblem(503, "not sent: the event bus is unavailable, try again") from None
    await state.pool.execute(
        """INSERT INTO officer_feedback (notification_id, sender, ward_codes, setup_id, subject,
               body) VALUES ($1, $2, $3, $4, $5, $6)""",
        notification_id,
        account.account_id,
        list(data.ward_codes),
        data.setup_id,
        data.subject,
        data.body,
    )
    log.info("officer.feedback_sent", notification_id=notification_id, by=account.account_id)
    return {"notification_id": notification_id, "event_id": str(event.event_id)}


async def sent_feedback(request: web.Request, account: Account) -> list[dict[str, Any]]:
    state = officer_state(request)
    index = await state.areas.get()
    rows = await state.pool.fetch("SELECT * FROM officer_feedback ORDER BY sent_at DESC LIMIT 200")
    out = []
    for r in rows:
        if (
            account.scope.force_wide
            or r["sender"] == account.account_id
            or any(index.ward_in_scope(w, account.scope) for w in r["ward_codes"])
        ):
            out.append(
                {
                    "notification_id": r["notification_id"],
                    "subject": r["subject"],
                    "body": r["body"],
                    "ward_codes": list(r["ward_codes"]),
                    "setup_id": r["setup_id"],
                    "sent_at": r["sent_at"].isoformat(),
                }
            )
    return out


async def inbox(request: web.Request, account: Account, reason: str) -> list[dict[str, Any]]:
    """Replies from the account's area, newest first; the view is audited before it is shown."""
    state = officer_state(request)
    index = await state.areas.get()
    rows = await state.pool.fetch(
        "SELECT * FROM reply_inbox ORDER BY received_at DESC LIMIT $1", INBOX_LIMIT * 10
    )
    visible = [
        r
        for r in rows
        if account.scope.force_wide
        or (r["ward_code"] and index.ward_in_scope(r["ward_code"], account.scope))
        or (r["area_cell"] and index.cell_in_scope(r["area_cell"], account.scope))
    ][:INBOX_LIMIT]
    if visible:
        await audit.record(
            state.pool,
            account,
            "view",
            "reply",
            [r["reply_id"] for r in visible],
            reason,
        )
    vault = request.app[RESOURCES].vault
    out = []
    for r in visible:
        sealed = EncryptedField(
            key_id=r["body_key_id"], nonce=r["body_nonce"], ciphertext=r["body_ciphertext"]
        )
        try:
            body: str | None = await vault.unseal(sealed)
        except KeyShredded:
            body = None  # the resident was erased: the reply can no longer be read
        out.append(
            {
                "reply_id": r["reply_id"],
                "notification_id": r["notification_id"],
                "ward_code": r["ward_code"],
                "received_at": r["received_at"].isoformat(),
                "escalated": r["escalated"],
                "body": body,
                "erased": body is None,
            }
        )
    return out


# -- handlers ---------------------------------------------------------------------------------


async def compose_handler(request: web.Request) -> web.Response:
    account = await require(request, FIELD)
    data = await parse_body(request, FeedbackIn)
    return web.json_response(await compose(request, account, data), status=202)


async def sent_handler(request: web.Request) -> web.Response:
    account = await require(request, FIELD)
    items = await sent_feedback(request, account)
    return web.json_response({"count": len(items), "items": items})


async def inbox_handler(request: web.Request) -> web.Response:
    account = await require(request, FIELD)
    reason = audit.check_reason(request.query.get("reason") or DEFAULT_INBOX_REASON)
    items = await inbox(request, account, reason)
    return web.json_response({"count": len(items), "items": items})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/feedback", compose_handler)
    app.router.add_get("/api/v1/feedback", sent_handler)
    app.router.add_get("/api/v1/replies", inbox_handler)
