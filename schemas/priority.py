"""What the stream processors announce: priority changes and officer alerts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.envelope import Envelope


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    component: Literal[
        "harm",
        "near_repeat",
        "concern",
        "trust_gap",
        "engagement_gap",
        "deprivation",
        "representation_gap",
    ]
    raw_value: float
    #: Event time of the newest input behind the value (ISO date).
    data_date: str
    text: str = Field(default="", max_length=300)


class PriorityChanged(Envelope):
    type: Literal["priority.changed"] = "priority.changed"
    cell: str
    resolution: int = Field(ge=0, le=15)
    score_before: float | None
    score_after: float
    rank: int = Field(ge=1)
    cells_ranked: int = Field(ge=1)
    change: Literal["entered_top", "left_top", "score_moved"]
    reasons: list[Reason] = Field(default_factory=list, max_length=3)
    ward_code: str | None = None
    local_authority_code: str | None = None


class OfficerAlert(Envelope):
    type: Literal["officer.alert"] = "officer.alert"
    alert_id: str = Field(min_length=1, max_length=64)
    kind: Literal["near_repeat", "harm_spike"]
    cell: str
    ward_code: str | None = None
    local_authority_code: str | None = None
    severity: Literal["info", "warning", "urgent"] = "warning"
    message: str = Field(min_length=1, max_length=500)
    #: Until when the advice applies (e.g. near-repeat risk lasts two weeks).
    valid_until: str | None = None
