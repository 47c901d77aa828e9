"""Value types shared by the event models: locations, encrypted fields, fixed vocabularies.

Why fixed vocabularies live here: the stream processors, the public pages and the officer app
must agree on exactly the same crime types, survey priorities and door-knock outcomes; one
definition keeps a typo in one place from silently creating a new category.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Literal, Self

import h3
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

#: Resolution every located event is indexed at once (DESIGN §4). Coarser cells are parents.
INDEX_RESOLUTION = 10
#: Resolution the priority score is computed at.
SCORE_RESOLUTION = 9

CrimeType = Literal[
    "Anti-social behaviour",
    "Bicycle theft",
    "Burglary",
    "Criminal damage and arson",
    "Drugs",
    "Other crime",
    "Other theft",
    "Possession of weapons",
    "Public order",
    "Robbery",
    "Shoplifting",
    "Theft from the person",
    "Vehicle crime",
    "Violence and sexual offences",
]
CRIME_TYPES: tuple[str, ...] = CrimeType.__args__  # type: ignore[attr-defined]

#: Local priorities a resident may name in a survey (at most three).
SurveyPriority = Literal[
    "anti_social_behaviour",
    "burglary",
    "drugs",
    "violence",
    "knife_crime",
    "vehicle_crime",
    "speeding_and_road_safety",
    "criminal_damage",
    "shoplifting",
    "youth_disorder",
    "fly_tipping_and_litter",
    "domestic_abuse",
]
SURVEY_PRIORITIES: tuple[str, ...] = SurveyPriority.__args__  # type: ignore[attr-defined]

DoorKnockOutcome = Literal["no_answer", "spoke", "registered", "declined", "leaflet_left"]
DOOR_KNOCK_OUTCOMES: tuple[str, ...] = DoorKnockOutcome.__args__  # type: ignore[attr-defined]

Channel = Literal["email", "sms", "push"]

#: Census 2021 six-band age classification, plus an explicit refusal.
AgeBand = Literal["0-15", "16-24", "25-34", "35-49", "50-64", "65+", "prefer_not_to_say"]
#: Census 2021 high-level ethnic groups (TS021), plus an explicit refusal. Used only for
#: area-level representation figures (DESIGN §6), never to select or rank a person.
EthnicGroup = Literal["asian", "black", "mixed", "white", "other", "prefer_not_to_say"]

_POSTCODE_RE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})$")


def normalise_postcode(raw: str) -> str:
    """Upper-case, single-space UK postcode (``hu11aa`` -> ``HU1 1AA``); ValueError if malformed."""
    compact = re.sub(r"\s+", "", raw.upper())
    match = _POSTCODE_RE.match(compact[:-3] + " " + compact[-3:]) if len(compact) >= 5 else None
    if not match:
        raise ValueError(f"not a UK postcode: {raw!r}")
    return f"{match.group(1)} {match.group(2)}"


Postcode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=5, max_length=8)]
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Pseudonym = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]


#: Points and cells remembered by :func:`index_cell` and :func:`score_cell_of`. Why cache:
#: police.uk snaps every crime to one of a fixed set of anonymised map points (about 25,000 in
#: the Humberside sample), and the stream worker indexes every event it reads; a hit costs a
#: tenth of the H3 call (measured: 0.7 us per event for each).
CELL_CACHE_SIZE = 1 << 17


@lru_cache(maxsize=CELL_CACHE_SIZE)
def index_cell(lat: float, lng: float) -> str:
    """The resolution-10 H3 cell of a point (DESIGN §4)."""
    return str(h3.latlng_to_cell(lat, lng, INDEX_RESOLUTION))


@lru_cache(maxsize=CELL_CACHE_SIZE)
def score_cell_of(cell: str) -> str:
    """The resolution-9 parent of a cell, the unit the priority score is kept in."""
    return str(h3.cell_to_parent(cell, SCORE_RESOLUTION))


class Location(BaseModel):
    """A point and its street-scale H3 cell (resolution 10).

    ``cell`` is filled from the point when the producer leaves it out, and checked against the
    point when given, so no event can carry a cell that disagrees with its coordinates.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    cell: str = ""

    @model_validator(mode="after")
    def _index(self) -> Self:
        expected = index_cell(self.lat, self.lng)
        if not self.cell:
            object.__setattr__(self, "cell", expected)
        elif self.cell != expected:
            raise ValueError(f"cell {self.cell} is not the resolution-10 cell of the point")
        return self

    @property
    def score_cell(self) -> str:
        """The resolution-9 parent, the unit the priority score is kept in."""
        return score_cell_of(self.cell)


class EncryptedField(BaseModel):
    """A personal value sealed with its owner's key (AES-256-GCM, DESIGN §6).

    Erasure destroys the key, after which this ciphertext is unreadable wherever it was copied.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: Pseudonym
    nonce: Annotated[str, StringConstraints(min_length=16, max_length=32)]
    ciphertext: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
