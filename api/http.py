"""HTTP conventions shared by every endpoint: JSON error bodies, body parsing, API keys.

Why one place: integrators and the public pages see the same error shape everywhere
(``{"status", "error", "field", ...}``), whichever handler or aiohttp itself refused the
request, and no error body ever repeats what the client sent (it may hold personal data).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.context import SETTINGS
from lpt.logs import get_logger
from lpt.metrics import HTTP_REQUEST_SECONDS
from schemas.registry import describe_validation_error

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_KEY_HEADER = "X-API-Key"

M = TypeVar("M", bound=BaseModel)


class HTTPProblem(Exception):
    """A refusal with a status, a message and (when it is about one) the field it concerns."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})
        self.extra = extra


def problem_body(status: int, message: str, field: str | None = None, **extra: Any) -> str:
    body: dict[str, Any] = {"status": status, "error": message, "field": field}
    body.update(extra)
    return json.dumps(body)


def problem_response(problem: HTTPProblem) -> web.Response:
    return web.Response(
        status=problem.status,
        text=problem_body(problem.status, problem.message, problem.field, **problem.extra),
        content_type="application/json",
        headers=problem.headers,
    )


def validation_problem(exc: ValidationError, **extra: Any) -> HTTPProblem:
    """422 naming every failing field (messages never include the submitted values)."""
    summary, first, details = describe_validation_error(exc)
    return HTTPProblem(422, summary, first, errors=details, **extra)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; 413 past the size limit, 400 when it is not JSON."""
    if request.content_type not in ("application/json", "", "application/octet-stream"):
        raise HTTPProblem(415, "send the body as application/json")
    raw = await request.read()  # aiohttp raises 413 past client_max_size (the error middleware)
    if not raw:
        raise HTTPProblem(400, "request body is empty; send a JSON document")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise HTTPProblem(400, f"request body is not valid JSON: {msg}") from None


async def parse_body(request: web.Request, model: type[M]) -> M:
    data = await read_json(request)
    if not isinstance(data, dict):
        raise HTTPProblem(422, "request body must be a JSON object", None)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc) from None


class ApiKeys:
    """API keys of integrating systems (``settings.ingest_api_keys``: key -> system).

    Keys are compared as SHA-256 digests with :func:`hmac.compare_digest`, against every
    configured key without stopping at a match, so timing tells nothing about a key.
    """

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._digests = [(hashlib.sha256(k.encode()).digest(), s) for k, s in keys.items()]

    def __len__(self) -> int:
        return len(self._digests)

    def system_for(self, given: str) -> str | None:
        digest = hashlib.sha256(given.encode()).digest()
        found: str | None = None
        for candidate, system in self._digests:
            if hmac.compare_digest(digest, candidate):
                found = system
        return found

    def authenticate(self, request: web.Request) -> str:
        """The calling system's name, or 401 (no key / wrong key)."""
        given = request.headers.get(API_KEY_HEADER, "")
        challenge = {"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'}
        if not given:
            raise HTTPProblem(401, f"missing {API_KEY_HEADER} header", headers=challenge)
        system = self.system_for(given)
        if system is None:
            raise HTTPProblem(401, f"{API_KEY_HEADER} is not valid", headers=challenge)
        return system


def _route_label(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.route is not None else None
    return resource.canonical if resource is not None else "(unmatched)"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON; request latency into the metric catalogue (route, not raw path)."""
    started = time.perf_counter()
    status = 500
    try:
        limit = request.app[SETTINGS].max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise HTTPProblem(
                413, f"request body exceeds the limit of {limit} bytes", max_bytes=limit
            )
        response = await handler(request)
        status = response.status
        return response
    except HTTPProblem as problem:
        status = problem.status
        return problem_response(problem)
    except web.HTTPRequestEntityTooLarge:
        status = 413
        limit = request.app[SETTINGS].max_request_bytes
        return problem_response(
            HTTPProblem(413, f"request body exceeds the limit of {limit} bytes", max_bytes=limit)
        )
    except web.HTTPException as exc:
        status = exc.status
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        return web.Response(
            status=exc.status,
            text=problem_body(exc.status, exc.reason),
            content_type="application/json",
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    except Exception as exc:
        status = 500
        # The exception's message may quote data (e.g. a database key); log type and frames only.
        log.error(
            "http.unhandled",
            route=_route_label(request),
            error=type(exc).__name__,
            frames="".join(traceback.format_tb(exc.__traceback__)),
        )
        return web.Response(
            status=500, text=problem_body(500, "internal error"), content_type="application/json"
        )
    finally:
        HTTP_REQUEST_SECONDS.labels(request.method, _route_label(request), str(status)).observe(
            time.perf_counter() - started
        )
