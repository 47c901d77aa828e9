"""HTTP endpoints of the intake, on top of :mod:`producers.intake`.

Public endpoints (registration, opt-out, erasure, survey answers) validate strictly and answer
with identifiers only: nothing the person sent is repeated back. The officer-side door-knock
endpoint needs a caller it can hold to account: a system with an API key (the gateway's
``X-API-Key``, the officer named by ``officer_id``) or a logged-in officer (session cookie and
CSRF token; the officer is the session's account, never the body's). Neither: 401.

TODO(resident tokens): opt-out, erasure and survey answers are authorised by the resident id
alone (an unguessable random token). The single-use, expiring links of the notification issue
(DESIGN §6) should replace that as the proof that the caller is the person.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from api.context import RESOURCES
from api.http import API_KEY_HEADER, HTTPProblem, parse_body, read_json, validation_problem
from api.ingest import API_KEYS
from api.officer.access import session_token
from api.officer.doorknocks import knock_from_session
from api.officer.state import OFFICER
from producers.intake import (
    DoorKnockReport,
    IntakeError,
    Registration,
    SurveySubmission,
)


class OptOutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Literal["unsubscribe_link", "preferences", "officer", "other"] = "unsubscribe_link"


def _problem(exc: IntakeError) -> HTTPProblem:
    return HTTPProblem(exc.status, exc.message, exc.field)


async def register(request: web.Request) -> web.Response:
    registration = await parse_body(request, Registration)
    try:
        done = await request.app[RESOURCES].intake.register_resident(registration)
    except IntakeError as exc:
        raise _problem(exc) from None
    return web.json_response(
        {
            "resident_id": done.resident_id,
            "event_id": str(done.event_id),
            "unlocated": done.unlocated,
        },
        status=201,
    )


async def opt_out(request: web.Request) -> web.Response:
    resident_id = request.match_info["resident_id"]
    reason: OptOutRequest = OptOutRequest()
    if request.can_read_body:
        data = await read_json(request)
        try:
            reason = OptOutRequest.model_validate(data)
        except ValidationError as exc:
            raise validation_problem(exc) from None
    try:
        done = await request.app[RESOURCES].intake.opt_out(resident_id, reason=reason.reason)
    except IntakeError as exc:
        raise _problem(exc) from None
    return web.json_response(
        {
            "resident_id": done.resident_id,
            "opted_out": True,
            "opted_out_at": done.opted_out_at.isoformat(),
            "event_id": str(done.event_id),
        }
    )


async def erasure(request: web.Request) -> web.Response:
    resident_id = request.match_info["resident_id"]
    try:
        done = await request.app[RESOURCES].intake.request_erasure(resident_id)
    except IntakeError as exc:
        raise _problem(exc) from None
    return web.json_response(
        {
            "resident_id": done.resident_id,
            "erased": True,
            "requested_at": done.requested_at.isoformat(),
            "event_id": str(done.event_id),
        }
    )


async def survey_answer(request: web.Request) -> web.Response:
    answer = await parse_body(request, SurveySubmission)
    try:
        done = await request.app[RESOURCES].intake.record_survey_answer(answer)
    except IntakeError as exc:
        raise _problem(exc) from None
    return web.json_response({"event_id": str(done.event_id)}, status=202)


async def door_knock(request: web.Request) -> web.Response:
    # A key wins when both are sent: a device holding a key is a system, whatever cookie it has.
    if API_KEY_HEADER not in request.headers and OFFICER in request.app and session_token(request):
        return await knock_from_session(request)
    system = request.app[API_KEYS].authenticate(request)  # 401 without a valid key
    report = await parse_body(request, DoorKnockReport)
    try:
        done = await request.app[RESOURCES].intake.record_door_knock(report, source=system)
    except IntakeError as exc:
        raise _problem(exc) from None
    return web.json_response(
        {"event_id": str(done.event_id), "unlocated": done.cell is None}, status=202
    )


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/residents", register)
    app.router.add_post("/api/v1/residents/{resident_id}/opt-out", opt_out)
    app.router.add_post("/api/v1/residents/{resident_id}/erasure", erasure)
    app.router.add_post("/api/v1/surveys/answers", survey_answer)
    app.router.add_post("/api/v1/doorknocks", door_knock)
