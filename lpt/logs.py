"""Structured logging (structlog): JSON lines in production, readable in a console.

Rule: log identifiers (event ids, pseudonymous ids, cells), never personal data. The
``_drop_personal`` processor is the backstop: it redacts keys that commonly hold personal data
and any e-mail address found in a value (including the message and a formatted exception,
whose text may quote a database row).

Tracing: a trace id follows one piece of work across processes. The web service binds one per
request (``api.ops.trace``); ``lpt.kafka`` puts the bound id in a ``trace_id`` header of what it
publishes, and a consumer binds it back from the record's headers with :func:`bound_message`,
so the log lines of every process that touched an event share its trace id and event id.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

import structlog

from lpt.settings import get_settings

PERSONAL_KEYS = frozenset(
    {"name", "email", "phone", "address", "mobile", "contact", "concern", "body"}
)
#: A key containing one of these is redacted too (``to_email``, ``phone_number``...).
PERSONAL_KEY_PARTS = ("email", "phone", "mobile", "display_name", "full_name")
_EMAIL = re.compile(r"[^\s@<>()\[\]\"',;:]+@[^\s@<>()\[\]\"',;:]+\.[A-Za-z]{2,}")
REDACTED = "[redacted]"

#: Kafka header names carrying the tracing context (values are UTF-8).
TRACE_HEADER = "trace_id"
EVENT_ID_HEADER = "event_id"
EVENT_TYPE_HEADER = "event_type"

Headers = Sequence[tuple[str, bytes]]


def _is_personal_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in PERSONAL_KEYS or any(part in lowered for part in PERSONAL_KEY_PARTS)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _EMAIL.sub(REDACTED, value) if "@" in value else value
    if isinstance(value, dict):
        return {k: REDACTED if _is_personal_key(str(k)) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _drop_personal(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if _is_personal_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def configure_logging(fmt: str | None = None, level: str | None = None) -> None:
    settings = get_settings()
    fmt = fmt or settings.log_format
    lvl = getattr(logging, (level or settings.log_level).upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,  # before redaction: tracebacks quote data
            _drop_personal,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(lvl, logging.WARNING), stream=sys.stderr, format="%(message)s")


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


# -- tracing context ------------------------------------------------------------------------


def new_trace_id() -> str:
    """128 random bits in hex (the W3C trace-context trace-id shape)."""
    return secrets.token_hex(16)


def current_trace_id() -> str | None:
    """The trace id bound in this context (request, consumed message), if any."""
    value = structlog.contextvars.get_contextvars().get(TRACE_HEADER)
    return value if isinstance(value, str) and value else None


def trace_headers() -> list[tuple[str, bytes]]:
    """Kafka headers carrying the bound trace id (empty when none is bound)."""
    trace = current_trace_id()
    return [(TRACE_HEADER, trace.encode())] if trace else []


def message_context(headers: Headers | None) -> dict[str, str]:
    """``trace_id``, ``event_id`` and ``event_type`` from a Kafka record's headers."""
    wanted = (TRACE_HEADER, EVENT_ID_HEADER, EVENT_TYPE_HEADER)
    found: dict[str, str] = {}
    for key, value in headers or ():
        if key in wanted and value:
            found[key] = value.decode("utf-8", "replace")[:128]
    return found


@contextmanager
def bound_message(headers: Headers | None, **extra: Any) -> Iterator[dict[str, str]]:
    """Bind a consumed record's trace id and event id into the logging context.

    Use around the handling of one record: every log line inside carries them, and whatever is
    published inside (``lpt.kafka.publish``/``publish_raw``) carries the same ``trace_id``
    header. The previous context is restored on exit.
    """
    context = message_context(headers)
    with structlog.contextvars.bound_contextvars(**context, **extra):
        yield context


@contextmanager
def bound_trace(trace_id: str | None = None) -> Iterator[str]:
    """Bind ``trace_id`` (a new one when None) for the duration of a block."""
    trace = trace_id or new_trace_id()
    with structlog.contextvars.bound_contextvars(**{TRACE_HEADER: trace}):
        yield trace
