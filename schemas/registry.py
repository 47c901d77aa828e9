"""Every event type in one discriminated union, and the codec between models and Kafka bytes.

Why a single union: a consumer can decode any message with one call and dispatch on ``type``;
a message that fits no model is rejected with the failing field named, which is what the
dead-letter topic records as the reason.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

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

EVENT_MODELS: tuple[type[Envelope], ...] = (
    CrimeReported,
    CrimeUpdated,
    ResidentRegistered,
    ResidentUpdated,
    ResidentOptedOut,
    ResidentErasureRequested,
    SurveyAnswered,
    DoorKnocked,
    SetupCreated,
    SetupUpdated,
    SetupArchived,
    PriorityChanged,
    OfficerAlert,
    NotificationRequested,
    NotificationSent,
    ReplyReceived,
)

AnyEvent = Annotated[
    CrimeReported
    | CrimeUpdated
    | ResidentRegistered
    | ResidentUpdated
    | ResidentOptedOut
    | ResidentErasureRequested
    | SurveyAnswered
    | DoorKnocked
    | SetupCreated
    | SetupUpdated
    | SetupArchived
    | PriorityChanged
    | OfficerAlert
    | NotificationRequested
    | NotificationSent
    | ReplyReceived,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyEvent)

MODEL_BY_TYPE: dict[str, type[Envelope]] = {m.model_fields["type"].default: m for m in EVENT_MODELS}


class InvalidEvent(ValueError):
    """A message that is not a valid event. ``field`` names the first offending field."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


def describe_validation_error(exc: ValidationError) -> tuple[str, str | None, list[dict[str, str]]]:
    """(summary, first field, per-field errors) of a pydantic error, for 422s and dead letters."""
    details: list[dict[str, str]] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [str(p) for p in err["loc"]]
        # Drop the union tag pydantic inserts after the discriminator (e.g. 'crime.reported').
        if loc and loc[0] in MODEL_BY_TYPE:
            loc = loc[1:]
        details.append({"field": ".".join(loc) or "(event)", "error": err["msg"]})
    first = details[0]["field"] if details else None
    summary = "; ".join(f"{d['field']}: {d['error']}" for d in details[:5])
    return summary, first, details


def parse_event(data: dict[str, Any]) -> Envelope:
    """Validate a decoded JSON object as one of the event models."""
    if not isinstance(data, dict):
        raise InvalidEvent("event must be a JSON object", None)
    if "type" not in data:
        raise InvalidEvent("type: field required", "type")
    if data["type"] not in MODEL_BY_TYPE:
        raise InvalidEvent(f"type: unknown event type {data['type']!r}", "type")
    try:
        event: Envelope = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        summary, first, _ = describe_validation_error(exc)
        raise InvalidEvent(summary, first) from exc
    return event


def decode(raw: bytes | None) -> Envelope:
    """Kafka value bytes to an event model; :class:`InvalidEvent` says why not."""
    if raw is None:
        raise InvalidEvent("message has no value", None)
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {exc}", None) from exc
    return parse_event(data)


class TopicDecoder:
    """Decodes the messages of one topic: only that topic's event types are accepted.

    Why not :func:`decode`: the stream worker decodes every input message, and validating the
    bytes directly against the topic's few models (pydantic-core parses the JSON itself) costs
    about half of ``json.loads`` followed by validation against the whole union. Failures are
    re-run through :func:`decode`, so the reason a dead letter carries is the same either way.
    """

    def __init__(self, types: tuple[type[Envelope], ...], topic: str = "this topic") -> None:
        self.where = topic
        self.allowed = {m.model_fields["type"].default for m in types}
        union: Any = types[0] if len(types) == 1 else Union[types]  # noqa: UP007
        if len(types) > 1:
            union = Annotated[union, Field(discriminator="type")]
        self._adapter: TypeAdapter[Any] = TypeAdapter(union)

    def __call__(self, raw: bytes | None) -> Envelope:
        if raw is not None:
            try:
                event: Envelope = self._adapter.validate_json(raw)
                return event
            except ValidationError:
                pass  # explained below, with the general decoder's reason
        event = decode(raw)
        raise InvalidEvent(f"type: {event.type} does not belong on {self.where}", "type")


def encode(event: Envelope) -> bytes:
    return event.model_dump_json(exclude_none=False).encode()


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every event type, keyed by its ``type`` value (for integrators)."""
    return {
        name: model.model_json_schema(mode="validation") for name, model in MODEL_BY_TYPE.items()
    }
