"""The ledger stage: per-entity memory that makes the tables idempotent and updatable. Pure.

For each entity item it decides, from the entity's ledger entry, which cell deltas to emit:

* crimes: an incident's *current version* and the events that make it up. A higher version
  retracts every earlier contribution and adds its own; a lower version is stale; an event id
  already in the ledger is a duplicate. (police.uk repeats a Crime ID across rows and months:
  distinct events of the same version all count, as the files do.)
* residents: the active registration (retracted on opt-out, erasure or re-registration) and the
  current survey answer (a later answer replaces the earlier one); erasure keeps only the event
  ids (so a late duplicate cannot re-add the person) and drops every personal attribute.
* addresses: whether the address was knocked before (coverage counts addresses once).

Whatever the arrival order or number of copies of the events, the final deltas sum to the same
cell contributions: this is what makes replay, restarts and duplicates safe.
"""

from __future__ import annotations

from typing import Any

from streams.items import Item
from streams.scoring.cellstate import UNLOCATED, crime_deltas

Entry = dict[str, Any]
CellDelta = tuple[str, list[Any]]

#: Event ids remembered per resident or address (lifecycle events per person are few).
MAX_SEEN = 64


def _seen(entry: Entry, eid: str) -> bool:
    seen: list[str] = entry.setdefault("e", [])
    if eid in seen:
        return True
    seen.append(eid)
    del seen[:-MAX_SEEN]
    return False


def _crime(contribution: list[Any], sign: int) -> list[CellDelta]:
    cell, in_force, t, crime_type, street, lsoa = contribution
    return crime_deltas(cell, in_force, sign, t, crime_type, street, lsoa)


def apply_crime(entry: Entry | None, item: Item) -> tuple[Entry | None, list[CellDelta]]:
    """(new entry or None when unchanged, deltas)."""
    _, eid, _incident, version, t, crime_type, cell, in_force, street, lsoa = item
    contribution = [cell, in_force, t, crime_type, street, lsoa]
    if entry is None:
        return {"v": version, "c": {eid: contribution}}, _crime(contribution, +1)
    if version < entry["v"] or (version == entry["v"] and eid in entry["c"]):
        return None, []  # stale version or duplicate event
    deltas: list[CellDelta] = []
    if version > entry["v"]:
        for old in entry["c"].values():
            deltas.extend(_crime(old, -1))
        entry = {"v": version, "c": {}}
    else:
        entry = {"v": version, "c": dict(entry["c"])}
    entry["c"][eid] = contribution
    deltas.extend(_crime(contribution, +1))
    return entry, deltas


def _registration(reg: list[Any], sign: int) -> CellDelta:
    cell, t, age, ethnic, lsoa = reg
    return (cell or UNLOCATED, ["r", sign, t, age, ethnic, lsoa])


def _survey(answer: list[Any], sign: int) -> CellDelta:
    cell, t, _eid, confidence, priorities, _wave = answer
    return (cell or UNLOCATED, ["s", sign, t, confidence, priorities])


def apply_resident(entry: Entry | None, item: Item) -> tuple[Entry | None, list[CellDelta]]:
    kind, eid, _rid, t = item[:4]
    entry = {k: (list(v) if isinstance(v, list) else v) for k, v in (entry or {}).items()}
    if _seen(entry, eid):
        return None, []
    deltas: list[CellDelta] = []
    if kind == "r":
        if entry.get("reg"):
            deltas.append(_registration(entry["reg"], -1))
        _, _, _, _, cell, age, ethnic, lsoa = item
        entry["reg"] = [cell, t, age, ethnic, lsoa]
        entry.pop("x", None)
        deltas.append(_registration(entry["reg"], +1))
    elif kind == "o":
        if entry.get("reg"):
            deltas.append(_registration(entry.pop("reg"), -1))
    elif kind == "x":
        if entry.get("reg"):
            deltas.append(_registration(entry["reg"], -1))
        if entry.get("sv"):
            deltas.append(_survey(entry["sv"], -1))
        entry = {"e": entry["e"], "x": True}  # nothing personal survives erasure
    elif kind == "s":
        if entry.get("x"):
            return entry, []  # a late answer of an erased resident is not counted
        _, _, _, _, wave, cell, confidence, priorities = item
        answer = [cell, t, eid, confidence, priorities, wave]
        current = entry.get("sv")
        if current is not None and (current[1], current[2]) >= (t, eid):
            return entry, []  # an older answer than the one counted
        if current is not None:
            deltas.append(_survey(current, -1))
        entry["sv"] = answer
        deltas.append(_survey(answer, +1))
    else:
        raise ValueError(f"not a resident item: {kind!r}")
    return entry, deltas


def apply_knock(entry: Entry | None, item: Item) -> tuple[Entry | None, list[CellDelta]]:
    _, eid, _address, t, cell = item
    entry = {"e": list((entry or {}).get("e", []))}
    first = not entry["e"]
    if _seen(entry, eid):
        return None, []
    return entry, [(cell or UNLOCATED, ["k", t, 1 if first else 0])]


def apply_item(entry: Entry | None, item: Item) -> tuple[Entry | None, list[CellDelta]]:
    kind = item[0]
    if kind == "c":
        return apply_crime(entry, item)
    if kind == "k":
        return apply_knock(entry, item)
    return apply_resident(entry, item)


_TABLE_OF_KIND = {"c": "incidents", "k": "addresses"}


def table_for(kind: str) -> str:
    """Which ledger table holds an item's entity."""
    return _TABLE_OF_KIND.get(kind, "residents")
