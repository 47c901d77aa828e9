"""Targeted set-ups: supervisors' priority campaigns for an area and/or a community group."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.envelope import Envelope

SetupId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class SetupTargets(BaseModel):
    """What a set-up aims for; a figure left out (None) has no target.

    Carried in the events (not only kept by the officer app) because Kafka is the source of
    truth: a replay of ``setups.lifecycle`` must rebuild the progress reports' targets too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    doors: int | None = Field(default=None, ge=0, le=1_000_000)
    registrations: int | None = Field(default=None, ge=0, le=1_000_000)
    survey_responses: int | None = Field(default=None, ge=0, le=1_000_000)


class _SetupEvent(Envelope):
    setup_id: SetupId


class SetupCreated(_SetupEvent):
    type: Literal["setup.created"] = "setup.created"
    name: str = Field(min_length=1, max_length=120)
    goal: str = Field(min_length=1, max_length=2000)
    area_cells: list[str] = Field(default_factory=list, max_length=5000)
    ward_codes: list[str] = Field(default_factory=list, max_length=200)
    community_group: str | None = Field(default=None, max_length=120)
    starts_on: date
    ends_on: date
    revisit_registered: bool = False
    created_by: str = Field(min_length=1, max_length=64)
    #: Optional so events published before targets travelled still decode (None: not given).
    targets: SetupTargets | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.ends_on < self.starts_on:
            raise ValueError("ends_on is before starts_on")
        if not (self.area_cells or self.ward_codes or self.community_group):
            raise ValueError("a set-up needs an area or a community group")
        return self


class SetupUpdated(_SetupEvent):
    type: Literal["setup.updated"] = "setup.updated"
    name: str | None = Field(default=None, max_length=120)
    goal: str | None = Field(default=None, max_length=2000)
    ends_on: date | None = None
    revisit_registered: bool | None = None
    #: New targets, replacing the old ones as a whole; None leaves them as they were.
    targets: SetupTargets | None = None


class SetupArchived(_SetupEvent):
    """Read-only from now on; its reports are kept, never deleted."""

    type: Literal["setup.archived"] = "setup.archived"
    archived_by: str = Field(min_length=1, max_length=64)
