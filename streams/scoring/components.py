"""The non-harm components of DESIGN §5 as pure functions of a cell's aggregates.

Each returns the component's *raw value* (what the reasons quote); ranking turns raw values
into within-force percentiles. Higher raw value = more reason to prioritise the area.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from streams.scoring.config import (
    HOUSEHOLD_SIZE,
    HOUSEHOLDS_PER_POSTCODE,
    MIN_RESPONSES,
    SHRINK_PSEUDO_RESPONSES,
    SURVEY_CONCERN_SCALE,
)


def shrunk_rate(mentions: float, respondents: float, force_rate: float) -> float:
    """Priorities named per respondent, shrunk toward the force rate where responses are few:
    ``(mentions + k * force_rate) / (respondents + k)`` with k pseudo-responses."""
    k = SHRINK_PSEUDO_RESPONSES
    return (mentions + k * force_rate) / (respondents + k)


def concern(asb: float, mentions: float, respondents: float, force_rate: float) -> float:
    """ASB reports (decayed) plus the survey part: the shrunk rate above the force rate,
    scaled to ASB-report equivalents. A cell nobody answered in adds nothing either way."""
    survey = SURVEY_CONCERN_SCALE * (shrunk_rate(mentions, respondents, force_rate) - force_rate)
    return max(asb + survey, 0.0)


def trust_gap(local_sum: float, local_n: int, force_mean: float | None) -> float | None:
    """Force mean confidence minus local mean (1..5 scale); None below ``MIN_RESPONSES``."""
    if local_n < MIN_RESPONSES or force_mean is None:
        return None
    return force_mean - local_sum / local_n


def households(postcodes: int, residents_per_postcode: float | None) -> float:
    """Households estimated from the cell's postcodes (no address data is held)."""
    if residents_per_postcode is None:
        return postcodes * HOUSEHOLDS_PER_POSTCODE
    return postcodes * residents_per_postcode / HOUSEHOLD_SIZE


def engagement_gap(registered: int, addresses_knocked: int, households_est: float) -> float:
    """1 - coverage, coverage = mean of registration and door-knock coverage (each capped at 1).
    0 where no households are estimated (nobody to engage)."""
    if households_est <= 0:
        return 0.0
    reg = min(registered / households_est, 1.0)
    knock = min(addresses_knocked / households_est, 1.0)
    return 1.0 - (reg + knock) / 2.0


def deprivation(income_rank_fractions: Mapping[float, float]) -> float | None:
    """Income deprivation of a cell: ``1 - rank/LSOAs`` (1 = most deprived in England),
    averaged over the LSOAs its events fall in, weighted by events. ``{fraction: weight}``."""
    total = sum(income_rank_fractions.values())
    if total <= 0:
        return None
    return sum((1.0 - f) * w for f, w in income_rank_fractions.items()) / total


@dataclass(frozen=True)
class Representation:
    """How far sign-ups differ from the Census population of an area (index of dissimilarity:
    half the sum of absolute share differences, 0 = same mix, 1 = disjoint)."""

    gap: float
    group: str  # the most under-represented group
    registered_share: float
    population_share: float
    registered: int


def representation_gap(
    registered: Mapping[str, int], population: Mapping[str, int]
) -> Representation | None:
    """None when fewer than ``MIN_RESPONSES`` people are registered or no population is known
    (no published figure rests on fewer than 10 people, DESIGN §6). Refusals are left out."""
    groups = [g for g in population if g != "prefer_not_to_say"]
    reg_total = sum(registered.get(g, 0) for g in groups)
    pop_total = sum(population[g] for g in groups)
    if reg_total < MIN_RESPONSES or pop_total <= 0:
        return None
    diffs = {g: registered.get(g, 0) / reg_total - population[g] / pop_total for g in groups}
    gap = 0.5 * sum(abs(d) for d in diffs.values())
    under = min(groups, key=lambda g: (diffs[g], g))
    return Representation(
        gap=gap,
        group=under,
        registered_share=registered.get(under, 0) / reg_total,
        population_share=population[under] / pop_total,
        registered=reg_total,
    )
