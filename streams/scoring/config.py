"""Every number the priority score depends on, versioned in one place (DESIGN §5).

Why one module: a score shown to an officer must be reproducible and explainable; weights or
half-lives scattered over modules drift apart silently. Changing any value here means bumping
``WEIGHTS_VERSION`` (it is stored with every score row, so history stays interpretable).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final, Literal

Component = Literal[
    "harm",
    "near_repeat",
    "concern",
    "trust_gap",
    "engagement_gap",
    "deprivation",
    "representation_gap",
]
COMPONENTS: Final[tuple[Component, ...]] = (
    "harm",
    "near_repeat",
    "concern",
    "trust_gap",
    "engagement_gap",
    "deprivation",
    "representation_gap",
)

#: Bump on any change below.
WEIGHTS_VERSION: Final = "2026.1"

#: Starting weights of the within-force percentile ranks. They sum to 1; none may exceed
#: ``MAX_COMPONENT_SHARE`` (checked by :func:`validate_weights` at import).
WEIGHTS: Final = MappingProxyType(
    {
        "harm": 0.30,
        "near_repeat": 0.15,
        "concern": 0.15,
        "trust_gap": 0.10,
        "engagement_gap": 0.10,
        "deprivation": 0.10,
        "representation_gap": 0.10,
    }
)
#: No component may carry more than this share of the score (DESIGN §5).
MAX_COMPONENT_SHARE: Final = 0.40

DAY: Final = 86_400.0
WEEK: Final = 7 * DAY

#: Harm: Cambridge Crime Harm Index days, halved every 90 days of event time.
HARM_HALF_LIFE: Final = 90 * DAY
#: Police-generated categories and ASB never raise harm (DESIGN §5: feedback loop / concern).
EXCLUDED_FROM_HARM: Final = frozenset({"Drugs", "Possession of weapons", "Anti-social behaviour"})
#: Shown as context counts only: found by police activity, so never part of any score.
CONTEXT_ONLY: Final = frozenset({"Drugs", "Possession of weapons"})

#: Near-repeat: a residential burglary raises its cell and the k=1 ring for 8 weeks with weight
#: 1/(1+ring) * 1/(1+weeks). police.uk publishes one "Burglary" category (residential and
#: business together); it is treated as residential, the dominant share.
NEAR_REPEAT_CRIME_TYPES: Final = frozenset({"Burglary"})
NEAR_REPEAT_RING: Final = 1
NEAR_REPEAT_WEEKS: Final = 8

#: Concern: ASB reports plus survey priorities, halved every 30 days.
CONCERN_HALF_LIFE: Final = 30 * DAY
CONCERN_CRIME_TYPES: Final = frozenset({"Anti-social behaviour"})
#: Pseudo-responses at the force mean that a cell's survey share is shrunk toward.
SHRINK_PSEUDO_RESPONSES: Final = 10.0
#: ASB-report equivalents of one priority named per respondent above nothing.
SURVEY_CONCERN_SCALE: Final = 5.0

#: Small-number suppression: survey aggregates and trust gap need this many responses, and no
#: published area figure (representation) rests on fewer people (DESIGN §6).
MIN_RESPONSES: Final = 10

#: Engagement: households are estimated from postcodes (ONS 2021 mean household size).
HOUSEHOLD_SIZE: Final = 2.36
#: Fallback when no Census population is loaded: UK mean delivery points per postcode.
HOUSEHOLDS_PER_POSTCODE: Final = 15.0

#: "Top" = this share of a level's areas (priority.changed when a cell enters or leaves it).
TOP_SHARE: Final = 0.10
#: Windows of the crime-type counts shown with each cell.
COUNT_WINDOWS_DAYS: Final = (30, 90)
#: Day buckets are kept this long after the newest event of a cell (beyond the longest window)...
BUCKET_RETENTION_DAYS: Final = 120
#: ...counted from the start of the newest event's period of this many days: buckets are
#: dropped a period at a time (``cellstate.bucket_horizon``). Retention >= longest window + this.
BUCKET_PRUNE_DAYS: Final = 15
#: Streets listed per cell.
MAX_STREETS: Final = 10

#: Officer alerts.
ALERT_NEAR_REPEAT_DAYS: Final = 14  # near-repeat advice applies for two weeks
ALERT_RECENT_DAYS: Final = 14  # only events this recent (vs as_of) raise alerts
HARM_SPIKE_MIN_DAYS: Final = 365.0  # harm-days added in one batch (a robbery)...
HARM_SPIKE_RATIO: Final = 1.0  # ...and at least the cell's previous harm


def validate_weights(weights: dict[str, float] | MappingProxyType[str, float]) -> None:
    """Raise ValueError unless the weights cover every component, sum to 1 and respect the cap."""
    if set(weights) != set(COMPONENTS):
        raise ValueError(f"weights must name exactly {COMPONENTS}, got {sorted(weights)}")
    total = sum(weights.values())
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"weights must sum to 1, got {total}")
    for name, w in weights.items():
        if w < 0 or w > MAX_COMPONENT_SHARE + 1e-12:
            raise ValueError(f"weight of {name} is {w}; allowed 0..{MAX_COMPONENT_SHARE}")


validate_weights(WEIGHTS)
