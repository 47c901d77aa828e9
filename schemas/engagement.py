"""What residents tell the force (surveys) and what officers do on the doorstep (door knocks)."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from schemas.common import (
    DoorKnockOutcome,
    EncryptedField,
    Location,
    Postcode,
    Pseudonym,
    SurveyPriority,
)
from schemas.envelope import Envelope

Wave = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}Q[1-4]$")]


class SurveyAnswered(Envelope):
    type: Literal["survey.answered"] = "survey.answered"
    resident_id: Pseudonym
    wave: Wave
    location: Location | None = None
    #: "How much confidence do you have in your local police?" 1 (none) .. 5 (a great deal).
    confidence: int = Field(ge=1, le=5)
    priorities: list[SurveyPriority] = Field(default_factory=list, max_length=3)
    concern: EncryptedField | None = None
    wants_contact: bool = False

    @model_validator(mode="after")
    def _distinct_priorities(self) -> Self:
        if len(set(self.priorities)) != len(self.priorities):
            raise ValueError("priorities must not repeat")
        return self


class DoorKnocked(Envelope):
    type: Literal["doorknock.recorded"] = "doorknock.recorded"
    officer_id: Pseudonym
    postcode: Postcode
    #: House number or name: an address within the postcode, never a person.
    address_ref: str | None = Field(default=None, max_length=80)
    location: Location | None = None
    outcome: DoorKnockOutcome
    setup_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
