"""Event contracts: pydantic models for every event, the topic catalogue, and the codec."""

from schemas.registry import (
    EVENT_MODELS,
    MODEL_BY_TYPE,
    AnyEvent,
    InvalidEvent,
    decode,
    encode,
    parse_event,
)

__all__ = [
    "EVENT_MODELS",
    "MODEL_BY_TYPE",
    "AnyEvent",
    "InvalidEvent",
    "decode",
    "encode",
    "parse_event",
]
