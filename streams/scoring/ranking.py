"""Within-force percentile ranks, the weighted score, ranks and the top share (DESIGN §5).

Percentile of a value = share of the *other* areas with a strictly lower value, so an area
without any signal in a component (raw 0, or unknown) gets 0 from it, and the single highest
area gets 1. Ties share the same percentile, and nothing depends on input order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from streams.scoring.config import COMPONENTS, TOP_SHARE, WEIGHTS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def percentile_ranks(values: FloatArray) -> FloatArray:
    """Vectorised: ``count(values < v) / (n - 1)`` for each v (NaN counts as lowest)."""
    n = len(values)
    if n <= 1:
        return np.zeros(n, dtype=np.float64)
    clean = np.where(np.isnan(values), -np.inf, values)
    ordered = np.sort(clean)
    below = np.searchsorted(ordered, clean, side="left")
    return np.asarray(below / (n - 1), dtype=np.float64)


def weighted_score(
    percentiles: Mapping[str, FloatArray], weights: Mapping[str, float] = WEIGHTS
) -> FloatArray:
    """Sum of weight x percentile over the components (0..1)."""
    first = next(iter(percentiles.values()))
    score = np.zeros(len(first), dtype=np.float64)
    for name in COMPONENTS:
        score += weights[name] * percentiles[name]
    return score


def ranks(scores: FloatArray, ids: Sequence[str]) -> IntArray:
    """1 = highest score; ties broken by id so ranks are the same on every run."""
    order = sorted(range(len(ids)), key=lambda i: (-round(float(scores[i]), 12), ids[i]))
    out = np.empty(len(ids), dtype=np.int64)
    for position, i in enumerate(order, start=1):
        out[i] = position
    return out


def top_cutoff(n: int) -> int:
    """Ranks 1..cutoff are the top share (at least one area when there are any)."""
    return max(1, math.ceil(TOP_SHARE * n)) if n else 0
