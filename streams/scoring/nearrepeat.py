"""Near-repeat burglary risk: a burglary raises its res-9 cell and the k=1 ring for 8 weeks.

Weight at time T of one burglary at time t in ring r (0 = its own cell):
``1/(1+r) * 1/(1+weeks)`` with ``weeks = floor((T - t) / 7 days)``, for ``0 <= weeks < 8``.
Not exponential, so each cell keeps its few recent burglaries as ``[t, ring, count]`` entries
and prunes those older than the window.
"""

from __future__ import annotations

import bisect
import functools
import math

import h3

from streams.scoring.config import NEAR_REPEAT_RING, NEAR_REPEAT_WEEKS, WEEK

Entry = list[float]  # [t, ring, count]


@functools.lru_cache(maxsize=65_536)
def ring_cells(cell: str) -> tuple[tuple[str, int], ...]:
    """(cell, ring) for the burglary's own cell (ring 0) and its k=1 neighbours (cached: a
    force has a few tens of thousands of cells, and burglaries repeat in them)."""
    out = [(cell, 0)]
    for ring in range(1, NEAR_REPEAT_RING + 1):
        out.extend((str(c), ring) for c in sorted(h3.grid_ring(cell, ring)))
    return tuple(out)


def weight(ring: int, age_seconds: float) -> float:
    """Contribution of one burglary ``age_seconds`` before the evaluation time."""
    weeks = math.floor(max(age_seconds, 0.0) / WEEK)
    if weeks >= NEAR_REPEAT_WEEKS:
        return 0.0
    return 1.0 / (1 + ring) / (1 + weeks)


def add(entries: list[Entry], t: float, ring: int, sign: int) -> None:
    """Record (or retract, sign -1) one burglary in place; entries stay sorted by (t, ring), so
    the entry is found by bisection (a busy cell holds a hundred entries or more)."""
    i = bisect.bisect_left(entries, [t, ring])  # [t, ring] sorts just before [t, ring, n]
    if i < len(entries) and entries[i][0] == t and entries[i][1] == ring:
        entries[i][2] += sign
        if entries[i][2] <= 0:
            del entries[i]
    elif sign > 0:
        entries.insert(i, [t, float(ring), 1.0])


def prune(entries: list[Entry], newest: float) -> None:
    """Drop entries that can no longer count at any time at or after ``newest``."""
    horizon = newest - NEAR_REPEAT_WEEKS * WEEK
    if entries and entries[0][0] <= horizon:  # sorted by time: the old ones are a prefix
        del entries[: bisect.bisect_right(entries, [horizon, math.inf])]


def value_at(entries: list[Entry], t: float) -> float:
    return sum(weight(int(ring), t - bt) * n for bt, ring, n in entries)


def value_span(entries: list[Entry], t: float) -> tuple[float, float, float]:
    """(value at ``t``, start, end): the value stays the same for every time in [start, end).

    Why: weights change only at whole weeks after each burglary, so a scorer re-evaluating
    every cell per batch can keep the value until the next boundary instead of summing again.
    """
    value, start, end = 0.0, -math.inf, math.inf
    for bt, ring, n in entries:
        weeks = math.floor(max(t - bt, 0.0) / WEEK)  # a burglary after t counts as week 0
        if weeks >= NEAR_REPEAT_WEEKS:
            start = max(start, bt + NEAR_REPEAT_WEEKS * WEEK)
            continue
        if weeks:
            start = max(start, bt + weeks * WEEK)
        end = min(end, bt + (weeks + 1) * WEEK)
        value += weight(int(ring), t - bt) * n
    return value, start, end


def newest_burglary(entries: list[Entry]) -> float | None:
    return max((e[0] for e in entries), default=None)
