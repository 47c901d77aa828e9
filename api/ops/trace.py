"""A trace id for every HTTP request, bound into the logging context and echoed back.

Taken from the caller when it sends one (``X-Trace-Id``, or the trace-id part of a W3C
``traceparent``), otherwise new. While the request is handled every log line carries it and
every event published (``lpt.kafka``) carries it in a ``trace_id`` header, so a crime system's
request can be followed through the gateway, Kafka and the workers. The response returns it in
``X-Trace-Id`` for the caller's own logs.
"""

from __future__ import annotations

import re

import structlog
from aiohttp import web

from api.http import Handler
from lpt.logs import TRACE_HEADER, new_trace_id

TRACE_ID_HEADER = "X-Trace-Id"
_TRACE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_id_of(request: web.Request) -> str:
    given = request.headers.get(TRACE_ID_HEADER, "").strip()
    if _TRACE_ID.match(given):
        return given
    parent = _TRACEPARENT.match(request.headers.get("traceparent", "").strip().lower())
    if parent and parent.group(1) != "0" * 32:
        return parent.group(1)
    return new_trace_id()


@web.middleware
async def trace_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    trace = trace_id_of(request)
    with structlog.contextvars.bound_contextvars(**{TRACE_HEADER: trace}):
        response = await handler(request)
    if not response.prepared:
        response.headers[TRACE_ID_HEADER] = trace
    return response
