"""Input events as compact *entity items*, and the partitioning of the internal topics.

Why re-key: the input topics are keyed by res-9 cell, but correctness needs state per *entity*:
a crime update must find (and retract) its incident's earlier versions even when the update
moved it to another cell (another partition, maybe another worker); a resident's opt-out must
find the registration it cancels. So the input agents turn each valid event into a small JSON
list keyed by its entity (incident, resident, address) and batch them, one message per
destination partition; the ledger stage owns each entity in one place.

Items (lists, first element the kind):

* ``["c", event_id, incident_id, version, t, crime_type, cell|None, in_force, street, lsoa]``
* ``["r", event_id, resident_id, t, cell|None, age_band, ethnic_group, lsoa]`` registration
* ``["o", event_id, resident_id, t]`` opt-out; ``["x", event_id, resident_id, t]`` erasure
* ``["s", event_id, resident_id, t, wave, cell|None, confidence, [priorities]]`` survey answer
* ``["k", event_id, address, t, cell|None]`` door knock (address = digest of postcode|house)

``t`` is event time (``occurred_at``) in epoch seconds.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from schemas.crime import CrimeReported, CrimeUpdated
from schemas.engagement import DoorKnocked, SurveyAnswered
from schemas.envelope import Envelope
from schemas.residents import ResidentErasureRequested, ResidentOptedOut, ResidentRegistered
from streams.scoring.reference import lsoa_key

Item = list[Any]

#: Largest internal message (bytes); Kafka's default limit is 1 MB.
MAX_MESSAGE_BYTES = 512 * 1024


def partition_for(key: str, partitions: int) -> int:
    """Deterministic partition of an entity or cell on the internal topics (any worker, any
    run, computes the same one, which is what ties a key to its table partition)."""
    return zlib.crc32(key.encode()) % partitions


def chunks(parts: Sequence[bytes], limit: int = MAX_MESSAGE_BYTES) -> Iterator[list[bytes]]:
    """Split already-encoded JSON values into groups whose joined size stays under ``limit``
    (one message per group on an internal topic)."""
    group: list[bytes] = []
    size = 0
    for part in parts:
        if group and size + len(part) + 1 > limit:
            yield group
            group, size = [], 0
        group.append(part)
        size += len(part) + 1
    if group:
        yield group


def entity_item(event: Envelope) -> tuple[str, Item] | None:
    """(entity key, item) of an event; None for events that change no priority input
    (e.g. a resident's channel preferences)."""
    eid = str(event.event_id)
    t = event.occurred_at.timestamp()
    if isinstance(event, CrimeReported | CrimeUpdated):
        cell = event.location.score_cell if event.location else None
        lsoa = lsoa_key(event.lsoa_code, event.lsoa_vintage) if event.lsoa_code else None
        return event.incident_id, [
            "c", eid, event.incident_id, event.version, t, event.crime_type, cell,
            event.in_force_area, event.location_text, lsoa,
        ]  # fmt: skip
    if isinstance(event, ResidentRegistered):
        cell = event.location.score_cell if event.location else None
        # Registrations carry 2021 LSOA codes (NSPL 2025).
        lsoa = lsoa_key(event.lsoa_code, 2021) if event.lsoa_code else None
        return event.resident_id, [
            "r", eid, event.resident_id, t, cell, event.age_band, event.ethnic_group, lsoa,
        ]  # fmt: skip
    if isinstance(event, ResidentOptedOut):
        return event.resident_id, ["o", eid, event.resident_id, t]
    if isinstance(event, ResidentErasureRequested):
        return event.resident_id, ["x", eid, event.resident_id, t]
    if isinstance(event, SurveyAnswered):
        cell = event.location.score_cell if event.location else None
        return event.resident_id, [
            "s", eid, event.resident_id, t, event.wave, cell, event.confidence,
            list(event.priorities),
        ]  # fmt: skip
    if isinstance(event, DoorKnocked):
        cell = event.location.score_cell if event.location else None
        house = event.address_ref or f"#{eid}"  # unknown house: each knock its own address
        # Only a digest of the address is kept (DESIGN §6: addresses live in the identity store).
        address = hashlib.blake2b(f"{event.postcode}|{house}".encode(), digest_size=16).hexdigest()
        return address, ["k", eid, address, t, cell]
    return None
