"""Behavioural assumptions of the synthetic generator, in one place.

These shapes are *plausible, not calibrated*: there is no public data on who registers for a
force's messaging scheme. They follow well-known patterns so that a demo shows the gaps the
priority score is built to find:

- people in more income-deprived areas register and answer surveys less often (engagement gap);
- confidence in the local police is lower in more deprived areas (the Crime Survey for England
  and Wales reports this pattern), so the trust gap shows up where deprivation is high;
- priorities differ: anti-social behaviour and drugs dominate in deprived urban areas, speeding
  and burglary in affluent and rural ones.

Every curve is a straight line between the most deprived decile (1) and the least (10).
Change them here, never in the generator.
"""

from __future__ import annotations

from functools import lru_cache
from typing import get_args

from schemas.common import DoorKnockOutcome, SurveyPriority


def _lerp(most: float, least: float, decile: int) -> float:
    """Interpolate from the value for decile 1 (most deprived) to decile 10 (least)."""
    t = (min(max(decile, 1), 10) - 1) / 9
    return most + (least - most) * t


def _lerp_all(most: tuple[float, ...], least: tuple[float, ...], decile: int) -> tuple[float, ...]:
    return tuple(_lerp(a, b, decile) for a, b in zip(most, least, strict=True))


#: Relative chance that a person registers, by IMD income decile (multiplies population).
@lru_cache(maxsize=32)
def registration_propensity(decile: int) -> float:
    return _lerp(0.45, 1.0, decile)


#: Chance that a registered resident answers a given quarterly wave.
@lru_cache(maxsize=32)
def survey_response_rate(decile: int) -> float:
    return _lerp(0.25, 0.55, decile)


#: Probabilities of confidence 1..5 ("none" .. "a great deal").
_CONFIDENCE_MOST_DEPRIVED = (0.15, 0.22, 0.30, 0.25, 0.08)
_CONFIDENCE_LEAST_DEPRIVED = (0.04, 0.09, 0.25, 0.42, 0.20)


@lru_cache(maxsize=32)
def confidence_weights(decile: int) -> tuple[float, ...]:
    return _lerp_all(_CONFIDENCE_MOST_DEPRIVED, _CONFIDENCE_LEAST_DEPRIVED, decile)


#: A resident's confidence drifts by one point between waves with this probability.
CONFIDENCE_DRIFT = 0.25

#: Weights of each survey priority (most deprived, least deprived).
_PRIORITY_WEIGHTS: dict[str, tuple[float, float]] = {
    "anti_social_behaviour": (30, 16),
    "burglary": (9, 15),
    "drugs": (22, 7),
    "violence": (10, 4),
    "knife_crime": (8, 2),
    "vehicle_crime": (8, 10),
    "speeding_and_road_safety": (11, 30),
    "criminal_damage": (9, 6),
    "shoplifting": (4, 3),
    "youth_disorder": (12, 8),
    "fly_tipping_and_litter": (10, 10),
    "domestic_abuse": (4, 2),
}
#: Rural East Riding raises road safety further (speeding is the top rural complaint).
RURAL_LA = "E06000011"
RURAL_SPEEDING_FACTOR = 1.5

if set(_PRIORITY_WEIGHTS) != set(get_args(SurveyPriority)):  # pragma: no cover - import guard
    raise RuntimeError("synthetic priority weights out of step with SurveyPriority")


PRIORITY_NAMES: tuple[str, ...] = get_args(SurveyPriority)


@lru_cache(maxsize=64)
def priority_weights(decile: int, la_code: str) -> tuple[float, ...]:
    """Weights in the order of :data:`PRIORITY_NAMES`."""
    weights = [_lerp(*_PRIORITY_WEIGHTS[n], decile) for n in PRIORITY_NAMES]
    if la_code == RURAL_LA:
        weights[PRIORITY_NAMES.index("speeding_and_road_safety")] *= RURAL_SPEEDING_FACTOR
    return tuple(weights)


#: How many priorities a respondent names (0, 1, 2, 3).
PRIORITY_COUNT_WEIGHTS = (0.10, 0.25, 0.25, 0.40)
#: Share of respondents who write a concern (sealed) and who ask to be contacted.
CONCERN_RATE = 0.2
WANTS_CONTACT_RATE = 0.12
#: Low confidence makes asking for contact more likely.
WANTS_CONTACT_LOW_CONFIDENCE = 0.2

#: Door-knock outcomes (no_answer, spoke, registered, declined, leaflet_left).
_KNOCK_MOST_DEPRIVED = (0.42, 0.20, 0.06, 0.14, 0.18)
_KNOCK_LEAST_DEPRIVED = (0.36, 0.24, 0.11, 0.08, 0.21)
KNOCK_OUTCOMES: tuple[str, ...] = get_args(DoorKnockOutcome)


@lru_cache(maxsize=32)
def knock_outcome_weights(decile: int) -> tuple[float, ...]:
    return _lerp_all(_KNOCK_MOST_DEPRIVED, _KNOCK_LEAST_DEPRIVED, decile)


#: Contact channels (independent choices; email is the fallback if none is drawn).
CHANNEL_RATES = {"email": 0.85, "sms": 0.40, "push": 0.20}
#: Share of residents who state an age band / ethnic group on the form, and of those who
#: choose "prefer not to say".
AGE_ANSWER_RATE = 0.97
ETHNIC_ANSWER_RATE = 0.70
PREFER_NOT_TO_SAY_RATE = 0.03
#: Community groups a resident may name (never a protected characteristic).
COMMUNITY_GROUPS = (
    "neighbourhood_watch",
    "residents_association",
    "parents_and_schools",
    "business_watch",
    "farm_watch",
)
COMMUNITY_GROUP_RATE = 0.08

#: Door knocks per registered resident over the whole period, set-ups per 100k residents.
KNOCKS_PER_RESIDENT = 0.3
CAMPAIGN_DAYS = 28
MAX_CAMPAIGNS = 12
OFFICERS_PER_CAMPAIGN = 4

#: Free-text concerns (sealed before they leave the generator), by priority.
CONCERNS: dict[str, tuple[str, ...]] = {
    "anti_social_behaviour": (
        "Groups gathering outside the shops most evenings, shouting and throwing things.",
        "Noise and fighting in the alley behind our houses late at night.",
    ),
    "burglary": (
        "Two sheds broken into on our street this month.",
        "Someone tried the door handles along the row last week.",
    ),
    "drugs": (
        "Cars pull up for a few minutes at a time, it looks like dealing.",
        "Needles left in the play area again.",
    ),
    "violence": ("A fight outside the pub spilled into the road on Saturday.",),
    "knife_crime": ("My son says lads at the park are carrying knives.",),
    "vehicle_crime": ("Catalytic converters stolen from cars on the estate.",),
    "speeding_and_road_safety": (
        "Cars race through the village well over the limit, near the school.",
        "Motorbikes speeding on the main road at night.",
    ),
    "criminal_damage": ("Bus shelter smashed again and graffiti on the church wall.",),
    "shoplifting": ("The corner shop is being targeted by the same group every day.",),
    "youth_disorder": ("Teenagers on bikes riding at people on the pavement.",),
    "fly_tipping_and_litter": ("Mattresses and rubbish dumped in the back lane for weeks.",),
    "domestic_abuse": ("I am worried about shouting and crying from a neighbour's house.",),
}
