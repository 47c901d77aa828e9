"""The topic catalogue: every Kafka topic the system uses, declared once.

Keys: located input events are keyed by their resolution-9 score cell, so every event about one
cell lands on one partition and a stream worker keeps that cell's state local (DESIGN §4).
Events without a location are keyed by their own identity (incident, resident, set-up) so that
the versions of one thing stay in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from schemas.crime import CrimeReported, CrimeUpdated
from schemas.engagement import DoorKnocked, SurveyAnswered
from schemas.envelope import Envelope
from schemas.notifications import NotificationRequested, NotificationSent, ReplyReceived
from schemas.priority import OfficerAlert, PriorityChanged
from schemas.residents import (
    ResidentErasureRequested,
    ResidentOptedOut,
    ResidentRegistered,
    ResidentUpdated,
)
from schemas.setups import SetupArchived, SetupCreated, SetupUpdated

FOREVER = -1
WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name (before the deployment prefix), layout, retention and contents."""

    name: str
    key: str
    value_types: tuple[type[Envelope], ...]
    #: None means the deployment's ``LPT_TOPIC_PARTITIONS`` (input topics scale with workers).
    partitions: int | None = None
    cleanup_policy: Literal["delete", "compact"] = "delete"
    retention_ms: int = FOREVER
    #: Input topics get a dead-letter topic for messages that fail validation.
    dead_letter: bool = False
    doc: str = ""
    config: dict[str, str] = field(default_factory=dict)

    @property
    def dead_letter_name(self) -> str:
        return f"dlq.{self.name}"


CRIME = TopicSpec(
    "crime.incidents",
    "res-9 cell, or incident id when unlocated",
    (CrimeReported, CrimeUpdated),
    dead_letter=True,
    doc="Crime incidents from police.uk imports and force crime systems",
)
RESIDENTS = TopicSpec(
    "residents.lifecycle",
    "res-9 cell, or resident id when unlocated",
    (ResidentRegistered, ResidentUpdated, ResidentOptedOut, ResidentErasureRequested),
    dead_letter=True,
    doc="Registrations, preference changes, opt-outs, erasure requests",
)
SURVEYS = TopicSpec(
    "surveys.answers",
    "res-9 cell, or resident id when unlocated",
    (SurveyAnswered,),
    dead_letter=True,
    doc="Quarterly survey answers",
)
DOORKNOCKS = TopicSpec(
    "doorknocks.visits",
    "res-9 cell, or postcode when unlocated",
    (DoorKnocked,),
    dead_letter=True,
    doc="Door-knock visits recorded by officers",
)
SETUPS = TopicSpec(
    "setups.lifecycle",
    "set-up id",
    (SetupCreated, SetupUpdated, SetupArchived),
    partitions=3,
    dead_letter=True,
    doc="Targeted set-ups (campaigns)",
)
PRIORITY_CHANGED = TopicSpec(
    "priority.changed",
    "cell",
    (PriorityChanged,),
    partitions=3,
    retention_ms=52 * WEEK_MS,
    doc="A cell entered or left the top 10% or its score moved",
)
OFFICER_ALERTS = TopicSpec(
    "officer.alerts",
    "ward code, or cell",
    (OfficerAlert,),
    partitions=3,
    retention_ms=52 * WEEK_MS,
    doc="Near-repeat and harm-spike alerts for officers",
)
NOTIFICATIONS_REQUESTED = TopicSpec(
    "notifications.requested",
    "notification id",
    (NotificationRequested,),
    partitions=3,
    dead_letter=True,
    doc="Messages to residents, before audience resolution and budget",
)
NOTIFICATIONS_SENT = TopicSpec(
    "notifications.sent",
    "resident id",
    (NotificationSent,),
    partitions=3,
    retention_ms=52 * WEEK_MS,
    doc="Delivery status per resident and channel",
)
REPLIES = TopicSpec(
    "replies.received",
    "notification id",
    (ReplyReceived,),
    partitions=3,
    doc="Residents' replies to messages (body encrypted)",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    CRIME,
    RESIDENTS,
    SURVEYS,
    DOORKNOCKS,
    SETUPS,
    PRIORITY_CHANGED,
    OFFICER_ALERTS,
    NOTIFICATIONS_REQUESTED,
    NOTIFICATIONS_SENT,
    REPLIES,
)

INPUT_TOPICS: tuple[TopicSpec, ...] = tuple(t for t in ALL_TOPICS if t.dead_letter)

TOPIC_FOR_TYPE: dict[str, TopicSpec] = {
    m.model_fields["type"].default: spec for spec in ALL_TOPICS for m in spec.value_types
}


def topic_for(event: Envelope) -> TopicSpec:
    return TOPIC_FOR_TYPE[event.type]


def event_key(event: Envelope) -> bytes:
    """Partition key of an event, following the catalogue's rules above."""
    location = getattr(event, "location", None)
    if location is not None:
        return str(location.score_cell).encode()
    for attr in ("cell", "incident_id", "resident_id", "setup_id", "notification_id", "postcode"):
        value = getattr(event, attr, None)
        if value:
            return str(value).encode()
    return str(event.event_id).encode()
