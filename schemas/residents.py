"""Resident lifecycle: registration (opt-in), updates, opt-out and erasure.

Residents are known to events only by a pseudonymous ``resident_id``. Contact details travel
only inside :class:`EncryptedField` values sealed with the resident's own key (DESIGN §6).
Every lifecycle event repeats the resident's street cell so that it lands on the same partition
as the registration it changes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.common import (
    AgeBand,
    Channel,
    EncryptedField,
    EthnicGroup,
    Location,
    Postcode,
    Pseudonym,
)
from schemas.envelope import Envelope


class _ResidentEvent(Envelope):
    resident_id: Pseudonym
    #: Street cell of the registered postcode; None when that postcode has no coordinates.
    location: Location | None = None


class ResidentRegistered(_ResidentEvent):
    type: Literal["resident.registered"] = "resident.registered"
    postcode: Postcode
    #: True when the postcode is real but has no coordinates: accepted and flagged, never dropped.
    unlocated: bool = False
    lsoa_code: str | None = None
    ward_code: str | None = None
    local_authority_code: str | None = None
    channels: list[Channel] = Field(min_length=1, max_length=3)
    contact: EncryptedField
    age_band: AgeBand | None = None
    #: Area-level representation figures only; never used to select or rank a person.
    ethnic_group: EthnicGroup | None = None
    community_groups: list[str] = Field(default_factory=list, max_length=20)
    consent_version: str = Field(min_length=1, max_length=32)


class ResidentUpdated(_ResidentEvent):
    type: Literal["resident.updated"] = "resident.updated"
    channels: list[Channel] | None = None
    contact: EncryptedField | None = None
    community_groups: list[str] | None = None
    quiet_hours: tuple[int, int] | None = None
    max_per_week: int | None = Field(default=None, ge=0, le=7)


class ResidentOptedOut(_ResidentEvent):
    type: Literal["resident.opted_out"] = "resident.opted_out"
    reason: Literal["unsubscribe_link", "preferences", "officer", "other"] = "unsubscribe_link"


class ResidentErasureRequested(_ResidentEvent):
    type: Literal["resident.erasure_requested"] = "resident.erasure_requested"
