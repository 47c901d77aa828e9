"""The envelope every event carries, whatever its type.

Why these fields: ``event_id`` makes every consumer idempotent (a redelivered or re-imported
event is recognised and counted once); ``occurred_at`` is *event time*, so replaying the topics
rebuilds exactly the tables live processing built; ``schema_version`` lets a consumer accept old
and new shapes side by side while producers migrate.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

#: Namespace for deterministic event ids (uuid5), so the same fact always gets the same id.
EVENT_NAMESPACE = uuid.UUID("6f1c1c8e-3b7e-5d2a-9a53-6c7a0b1e4d11")

SourceSystem = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
]


def deterministic_id(*parts: str) -> uuid.UUID:
    """Event id derived from the identifying parts of a fact (idempotent re-publishing)."""
    return uuid.uuid5(EVENT_NAMESPACE, "\x1f".join(parts))


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Fields common to every event. Subclasses set ``type`` to a literal of their own."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    #: Version of the payload shape; bump when a field changes meaning or becomes required.
    SCHEMA_VERSION: ClassVar[int] = 1

    #: Narrowed to a literal by every event model; the discriminator of the union.
    type: str
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    schema_version: int = Field(default=1, ge=1)
    occurred_at: AwareDatetime
    produced_at: AwareDatetime = Field(default_factory=utcnow)
    source: SourceSystem
    trace_id: str | None = Field(default=None, max_length=64)
