"""Exponentially decayed sums in event time, updated in O(1) per event (DESIGN §5).

A sum is kept as ``[S, t_ref]``: its value at ``t_ref``, the newest event time it has seen.
Adding weight ``w`` at time ``t``:

* ``t >= t_ref``: ``S <- S * 2^(-(t - t_ref)/h) + w``, ``t_ref <- t`` (the formula of DESIGN §5);
* ``t < t_ref`` (a late event): ``S <- S + w * 2^(-(t_ref - t)/h)``.

Both give ``sum w_i * 2^(-(t_ref - t_i)/h)`` exactly, whatever the arrival order, which is why
replaying the topics (or two workers splitting them) gives the same tables as live processing.
A negative ``w`` retracts an earlier contribution (a crime update replaces its first version).
"""

from __future__ import annotations

import math

#: Below this a sum is zero: retractions leave float residue that must not outrank real zeros.
EPSILON = 1e-9

Decayed = list[float]  # [S, t_ref]; t_ref is meaningless while S == 0 and nothing was added


def new() -> Decayed:
    return [0.0, -math.inf]


def add(ds: Decayed, w: float, t: float, half_life: float) -> None:
    """Add ``w`` at event time ``t`` in place."""
    s, t_ref = ds
    if t_ref == -math.inf:
        ds[0], ds[1] = w, t
    elif t >= t_ref:
        ds[0] = s * 2.0 ** (-(t - t_ref) / half_life) + w
        ds[1] = t
    else:
        ds[0] = s + w * 2.0 ** (-(t_ref - t) / half_life)
    if abs(ds[0]) < EPSILON:
        ds[0] = 0.0


def value_at(ds: Decayed, t: float, half_life: float) -> float:
    """The sum decayed to time ``t`` (``t`` before ``t_ref`` is treated as ``t_ref``)."""
    s, t_ref = ds
    if s == 0.0 or t_ref == -math.inf:
        return 0.0
    if t <= t_ref:
        return s
    return float(s * 2.0 ** (-(t - t_ref) / half_life))
