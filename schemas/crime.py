"""Crime incidents, from police.uk extracts or a force's own crime system."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from schemas.common import CrimeType, Location
from schemas.envelope import Envelope

LsoaCode = Annotated[str, StringConstraints(pattern=r"^[EW]0[01][0-9]{6}$")]
Month = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")]


class _CrimeFields(Envelope):
    #: The force's own incident reference (police.uk ``Crime ID`` when imported from there).
    incident_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    #: Increases with every update of the same incident; consumers keep the highest.
    version: int = Field(default=1, ge=1)
    crime_type: CrimeType
    month: Month | None = None
    reported_by: str = Field(min_length=1, max_length=120)
    falls_within: str = Field(min_length=1, max_length=120)
    #: None when the incident has no coordinates (kept for force-level counts only).
    location: Location | None = None
    #: police.uk "On or near <street>" text: the street to recommend to officers.
    location_text: str | None = Field(default=None, max_length=200)
    lsoa_code: LsoaCode | None = None
    lsoa_name: str | None = Field(default=None, max_length=120)
    #: 2011 or 2021 LSOA codes (IMD 2019 joins 2011, IMD 2025 joins 2021).
    lsoa_vintage: Literal[2011, 2021] | None = None
    outcome: str | None = Field(default=None, max_length=200)
    context: str | None = Field(default=None, max_length=2000)
    #: False when the point lies outside the force area: counted, never in the force's tables.
    in_force_area: bool = True


class CrimeReported(_CrimeFields):
    type: Literal["crime.reported"] = "crime.reported"


class CrimeUpdated(_CrimeFields):
    """A later version of an incident; it replaces every field of the earlier versions."""

    type: Literal["crime.updated"] = "crime.updated"
    version: int = Field(default=2, ge=2)
