"""Messages to residents, what became of them, and residents' replies.

Audiences are areas, community groups or set-ups, never special-category data (DESIGN §6):
the audience model below has no field that could name an ethnic group or a religion.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.common import Channel, EncryptedField, Pseudonym
from schemas.envelope import Envelope


class Audience(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cells: list[str] = Field(default_factory=list, max_length=5000)
    ward_codes: list[str] = Field(default_factory=list, max_length=200)
    community_group: str | None = Field(default=None, max_length=120)
    setup_id: str | None = Field(default=None, max_length=64)
    resident_ids: list[Pseudonym] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not (
            self.cells
            or self.ward_codes
            or self.community_group
            or self.setup_id
            or self.resident_ids
        ):
            raise ValueError(
                "an audience needs cells, wards, a community group, a set-up or residents"
            )
        return self


class NotificationRequested(Envelope):
    type: Literal["notification.requested"] = "notification.requested"
    notification_id: str = Field(min_length=1, max_length=64)
    kind: Literal["you_said_we_did", "survey_invitation", "safety_alert", "setup_update", "other"]
    urgent: bool = False
    audience: Audience
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=5000)
    sender: str = Field(min_length=1, max_length=64)
    allow_reply: bool = True


class NotificationSent(Envelope):
    type: Literal["notification.sent"] = "notification.sent"
    notification_id: str = Field(min_length=1, max_length=64)
    resident_id: Pseudonym
    channel: Channel
    status: Literal["sent", "held_for_digest", "failed", "suppressed_opted_out", "retrying"]
    detail: str | None = Field(default=None, max_length=300)


class ReplyReceived(Envelope):
    type: Literal["reply.received"] = "reply.received"
    reply_id: str = Field(min_length=1, max_length=64)
    notification_id: str = Field(min_length=1, max_length=64)
    resident_id: Pseudonym
    cell: str | None = None
    body: EncryptedField
    escalated: bool = False
