"""The state of one res-9 cell and the deltas that change it: pure, JSON-shaped, no Kafka.

Stream workers keep one such dict per cell in a changelog-backed table and send it to the
scorer whole; tests drive it directly. Every update is O(1) in the cell's history (decayed sums,
a few near-repeat entries, day buckets pruned to the longest window).

Deltas are lists (cheap to encode in batches), first item the kind:

* ``["c", sign, t, crime_type, street|None, lsoa_key|None]`` a crime (sign -1 retracts it);
* ``["n", sign, t, ring]`` a residential burglary at ring distance 0 or 1 (near-repeat);
* ``["s", sign, t, confidence, [priorities]]`` a resident's current survey answer;
* ``["r", sign, t, age_band|None, ethnic_group|None, lsoa_key|None]`` an active registration;
* ``["k", t, new_address]`` a door knock (``new_address`` 1 the first time at an address).

Pseudo-cells whose id starts with ``_`` (crimes outside the force area, crimes without a
location) keep counts only: they are reported at force level and never scored.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from streams.scoring import decay, nearrepeat
from streams.scoring.config import (
    BUCKET_PRUNE_DAYS,
    BUCKET_RETENTION_DAYS,
    CONCERN_CRIME_TYPES,
    CONCERN_HALF_LIFE,
    DAY,
    HARM_HALF_LIFE,
    NEAR_REPEAT_CRIME_TYPES,
)
from streams.scoring.harm import harm_weight

CellState = dict[str, Any]

OUTSIDE_FORCE = "_outside"
UNLOCATED = "_unlocated"


def new_state() -> CellState:
    return {"v": 0, "wm": {}, "t": -math.inf}


def decode_state(raw: bytes) -> Any:
    """A JSON document holding cell states (a state, or a ``[cell, seq, state]`` summary),
    parsed with orjson. Why the fallback: states written before orjson carry ``-Infinity``,
    which only the standard library reads. Call :func:`thaw` on each state after."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def encode_summary(cell: str, seq: int, body: bytes) -> bytes:
    """A ``[cell, seq, state]`` summary line (``body``: the state's JSON)."""
    return b'["%s",%d,%s]' % (cell.encode(), seq, body)


def summary_head(line: bytes) -> tuple[str, int]:
    """(cell, seq) of a summary line, without parsing its state. Why: a backfill sends each busy
    cell's state many times per scorer batch, and only the newest one needs decoding."""
    end = line.index(b'",', 2)
    comma = line.index(b",", end + 2)
    return line[2:end].decode(), int(line[end + 2 : comma])


def thaw(state: CellState) -> CellState:
    """Restore the ``-inf`` "never" times that JSON cannot carry (orjson writes them as null):
    the cell's event time and the reference times of decayed sums that never received weight."""
    if state.get("t") is None:
        state["t"] = -math.inf
    sums = [state.get("h"), state.get("a"), *(state.get("ht") or {}).values()]
    sv = state.get("sv")
    if sv:
        sums += [sv.get("n"), sv.get("m")]
    sums += (state.get("st") or {}).values()
    for ds in sums:
        if ds is not None and ds[1] is None:
            ds[1] = -math.inf
    return state


def is_pseudo(cell: str) -> bool:
    return cell.startswith("_")


def already_applied(state: CellState, source: str, position: int) -> bool:
    """Deltas carry the position of the input that caused them; a position at or below the
    cell's watermark for that source was applied before (a re-delivery after a crash)."""
    return bool(position <= state["wm"].get(source, -1))


def mark_applied(state: CellState, source: str, position: int) -> None:
    wm = state["wm"]
    if position > wm.get(source, -1):
        wm[source] = position


def _decayed(state: CellState, key: str) -> list[float]:
    ds: list[float] | None = state.get(key)
    if ds is None:
        ds = state[key] = decay.new()
    return ds


def bucket_horizon(newest: float) -> int:
    """The oldest day whose bucket a cell keeps once its newest event is at ``newest``:
    ``BUCKET_RETENTION_DAYS`` before the start of that day's ``BUCKET_PRUNE_DAYS`` period.

    Why periods: the horizon then moves once per period, and the buckets are pruned only when
    it moves. In time order (a police.uk import, live input) nearly every crime is its cell's
    newest, and walking a busy cell's hundreds of buckets at each one made applying a delta
    several times dearer than in random order. Whole periods keep the kept buckets the same
    whatever the arrival order (a replay equals live processing)."""
    day = int(newest // DAY)
    return day - day % BUCKET_PRUNE_DAYS - BUCKET_RETENTION_DAYS


def _bucket(state: CellState, crime_type: str, t: float, sign: int) -> None:
    day = str(int(t // DAY))
    buckets = state.setdefault("d", {}).setdefault(crime_type, {})
    newest = state["t"] if state["t"] > -math.inf else t
    if int(day) < bucket_horizon(max(newest, t)):
        return  # outside every window at any later time: nothing to add or retract
    n = buckets.get(day, 0) + sign
    if n > 0:
        buckets[day] = n
    else:
        buckets.pop(day, None)


def _prune_buckets(state: CellState) -> None:
    horizon = bucket_horizon(state["t"])
    for crime_type, buckets in list(state.get("d", {}).items()):
        for day in [d for d in buckets if int(d) < horizon]:
            del buckets[day]
        if not buckets:
            del state["d"][crime_type]


def _count(mapping: dict[str, Any], key: str, sign: int) -> None:
    n = mapping.get(key, 0) + sign
    if n > 0:
        mapping[key] = n
    else:
        mapping.pop(key, None)


def apply_crime(
    state: CellState,
    cell: str,
    sign: int,
    t: float,
    crime_type: str,
    street: str | None,
    lsoa: str | None,
) -> None:
    _bucket(state, crime_type, t, sign)
    _count(state.setdefault("tot", {}), crime_type, sign)
    if is_pseudo(cell):
        return
    w = harm_weight(crime_type)
    if w > 0:
        decay.add(_decayed(state, "h"), sign * w, t, HARM_HALF_LIFE)
        by_type = state.setdefault("ht", {})
        decay.add(by_type.setdefault(crime_type, decay.new()), sign * w, t, HARM_HALF_LIFE)
    if crime_type in CONCERN_CRIME_TYPES:
        decay.add(_decayed(state, "a"), float(sign), t, CONCERN_HALF_LIFE)
    if street:
        st = state.setdefault("st", {}).setdefault(street, [0.0, -math.inf, 0])
        ds = st[:2]
        decay.add(ds, sign * w, t, HARM_HALF_LIFE)
        st[0], st[1], st[2] = ds[0], ds[1], st[2] + sign
        if st[2] <= 0:
            del state["st"][street]
    if lsoa:
        _count(state.setdefault("ls", {}), lsoa, sign)


def apply_near_repeat(state: CellState, sign: int, t: float, ring: int) -> None:
    nearrepeat.add(state.setdefault("nr", []), t, ring, sign)


def apply_survey(
    state: CellState, sign: int, t: float, confidence: int, priorities: list[str]
) -> None:
    sv = state.setdefault("sv", {"n": decay.new(), "m": decay.new(), "cs": 0, "cn": 0, "p": {}})
    decay.add(sv["n"], float(sign), t, CONCERN_HALF_LIFE)
    decay.add(sv["m"], float(sign * len(priorities)), t, CONCERN_HALF_LIFE)
    sv["cs"] += sign * confidence
    sv["cn"] += sign
    for p in priorities:
        _count(sv["p"], p, sign)
    if sign > 0:
        sv["t"] = max(sv.get("t", t), t)


def apply_registration(
    state: CellState, sign: int, t: float, age: str | None, ethnic: str | None, lsoa: str | None
) -> None:
    rg = state.setdefault("rg", {"n": 0, "age": {}, "eth": {}})
    rg["n"] += sign
    if age:
        _count(rg["age"], age, sign)
    if ethnic:
        _count(rg["eth"], ethnic, sign)
    if lsoa:
        _count(state.setdefault("rls", {}), lsoa, sign)
    rg["t"] = max(rg.get("t", t), t)


def apply_knock(state: CellState, t: float, new_address: int) -> None:
    kn = state.setdefault("kn", {"a": 0, "n": 0})
    kn["a"] += new_address
    kn["n"] += 1
    kn["t"] = max(kn.get("t", t), t)


def apply_delta(state: CellState, cell: str, delta: list[Any]) -> None:
    """Apply one delta (see the module docstring) and advance the cell's event time."""
    kind = delta[0]
    if kind == "c":
        _, sign, t, crime_type, street, lsoa = delta
        apply_crime(state, cell, sign, t, crime_type, street, lsoa)
    elif kind == "n":
        _, sign, t, ring = delta
        apply_near_repeat(state, sign, t, ring)
    elif kind == "s":
        _, sign, t, confidence, priorities = delta
        apply_survey(state, sign, t, confidence, priorities)
    elif kind == "r":
        _, sign, t, age, ethnic, lsoa = delta
        apply_registration(state, sign, t, age, ethnic, lsoa)
    elif kind == "k":
        _, t, new_address = delta
        apply_knock(state, t, new_address)
    else:
        raise ValueError(f"unknown delta kind {kind!r}")
    t = delta[1] if kind == "k" else delta[2]
    newest = state["t"]
    if t > newest:
        state["t"] = t
        if newest == -math.inf or bucket_horizon(t) > bucket_horizon(newest):
            _prune_buckets(state)
        if "nr" in state:
            nearrepeat.prune(state["nr"], t)


def crime_deltas(
    cell: str | None,
    in_force: bool,
    sign: int,
    t: float,
    crime_type: str,
    street: str | None,
    lsoa: str | None,
) -> list[tuple[str, list[Any]]]:
    """(cell, delta) pairs one crime (or its retraction) causes, near-repeat ring included."""
    if cell is None:
        return [(UNLOCATED, ["c", sign, t, crime_type, None, None])]
    if not in_force:
        return [(OUTSIDE_FORCE, ["c", sign, t, crime_type, None, None])]
    out: list[tuple[str, list[Any]]] = [(cell, ["c", sign, t, crime_type, street, lsoa])]
    if crime_type in NEAR_REPEAT_CRIME_TYPES:
        out.extend((c, ["n", sign, t, ring]) for c, ring in nearrepeat.ring_cells(cell))
    return out


def counts_in_windows(
    state: CellState, now: float, windows: tuple[int, ...]
) -> dict[str, list[int]]:
    """{crime type: [count in last w days for w in windows]} at event time ``now``."""
    today = int(now // DAY)
    out: dict[str, list[int]] = {}
    for crime_type, buckets in state.get("d", {}).items():
        counts = [0] * len(windows)
        for day, n in buckets.items():
            age = today - int(day)
            for i, w in enumerate(windows):
                if 0 <= age < w:
                    counts[i] += n
        if any(counts):
            out[crime_type] = counts
    return out
