"""The page behind the reply link in messages: a reply box, or the survey for survey invitations.

No login: the link's token is the proof (single use, expiring, only its hash stored; a tampered
token is refused like an unknown one). Opening the link (GET) only looks at the token; sending
the form (POST) uses it up, in the same transaction that stores the reply
(:func:`consumers.notifications.replies.record_reply`, which also seals the text with the
resident's key, files it in their area's inbox and escalates worrying replies) or the survey
answer (:func:`.surveys.record_answer`). If anything fails, the link still works.
"""

from __future__ import annotations

from aiohttp import web
from aiokafka.errors import KafkaError

from api.context import RESOURCES, SETTINGS
from api.public import csrf, surveys
from api.public.forms import Form, many, read_form, text
from api.public.render import (
    csrf_refused,
    link_refused,
    message_page,
    page,
    service_unavailable,
)
from api.public.state import public_state
from consumers.notifications.replies import MAX_REPLY_CHARS, ReplyInvalid, record_reply
from consumers.notifications.tokens import TokenInfo, TokenRefused, TokenStatus, check_reply_token
from identity.vault import KeyShredded
from lpt.logs import get_logger
from producers.intake import AlreadyOptedOut, IntakeError, PublishFailed, ResidentNotFound

log = get_logger(__name__)


async def _info(request: web.Request) -> TokenInfo | web.Response:
    try:
        return await check_reply_token(
            request.app[RESOURCES].pool, request.match_info["token"], public_state(request).clock()
        )
    except TokenRefused as exc:
        return link_refused(request, exc.status)


async def _subject(request: web.Request, notification_id: str) -> str | None:
    subject = await request.app[RESOURCES].pool.fetchval(
        "SELECT subject FROM notification_requests WHERE notification_id = $1", notification_id
    )
    return str(subject) if subject is not None else None


def _survey_page(
    request: web.Request,
    wave: str,
    values: dict[str, object],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    return page(
        request,
        "survey.html",
        status=status,
        token=request.match_info["token"],
        wave=wave,
        values=values,
        errors=errors,
        confidence=surveys.CONFIDENCE,
        priorities=[(k, v, None) for k, v in surveys.PRIORITY_LABELS.items()],
        max_priorities=surveys.MAX_PRIORITIES,
        max_concern=surveys.MAX_CONCERN,
    )


def _reply_page(
    request: web.Request,
    subject: str | None,
    values: dict[str, object],
    errors: dict[str, str],
    status: int = 200,
) -> web.Response:
    return page(
        request,
        "reply.html",
        status=status,
        token=request.match_info["token"],
        subject=subject,
        values=values,
        errors=errors,
        max_chars=MAX_REPLY_CHARS,
    )


async def reply_page(request: web.Request) -> web.Response:
    info = await _info(request)
    if isinstance(info, web.Response):
        return info
    wave = await surveys.wave_of(request.app[RESOURCES].pool, info.notification_id)
    if wave is not None:
        return _survey_page(request, wave, {"priorities": []}, {})
    return _reply_page(request, await _subject(request, info.notification_id), {}, {})


async def reply_submit(request: web.Request) -> web.Response:
    form = await read_form(request)
    if not csrf.valid(request, form):
        return csrf_refused(request)
    info = await _info(request)
    if isinstance(info, web.Response):
        return info
    wave = await surveys.wave_of(request.app[RESOURCES].pool, info.notification_id)
    if wave is not None:
        return await _answer_survey(request, form, wave)
    return await _send_reply(request, form, info)


async def _send_reply(request: web.Request, form: Form, info: TokenInfo) -> web.Response:
    res, settings, state = request.app[RESOURCES], request.app[SETTINGS], public_state(request)
    body = text(form, "body", MAX_REPLY_CHARS + 100)
    try:
        await record_reply(
            res.pool, res.vault, res.producer, settings, request.match_info["token"], body,
            state.clock(),
        )  # fmt: skip
    except ReplyInvalid:
        message = (
            "Enter your reply"
            if not body
            else f"Your reply must be {MAX_REPLY_CHARS} characters or fewer"
        )
        subject = await _subject(request, info.notification_id)
        return _reply_page(request, subject, {"body": body}, {"body": message}, 422)
    except TokenRefused as exc:
        return link_refused(request, exc.status)
    except KeyShredded:
        return link_refused(request, TokenStatus.UNKNOWN)
    except KafkaError:
        return service_unavailable(request)
    return message_page(
        request,
        200,
        "Your reply has been sent",
        [
            "Thank you. Your neighbourhood policing team will read it.",
            "If you or someone else is in danger now, call 999. To report a crime that is "
            "not an emergency, call 101.",
        ],
    )


async def _answer_survey(request: web.Request, form: Form, wave: str) -> web.Response:
    values: dict[str, object] = {
        "confidence": text(form, "confidence", 2),
        "priorities": many(form, "priorities"),
        "concern": text(form, "concern", surveys.MAX_CONCERN + 100),
        "wants_contact": text(form, "wants_contact", 3),
    }
    answer, errors = surveys.parse_answer(
        str(values["confidence"]),
        many(form, "priorities"),
        str(values["concern"]),
        str(values["wants_contact"]),
    )
    if answer is None:
        return _survey_page(request, wave, values, errors, 422)
    intake = request.app[RESOURCES].intake
    try:
        await surveys.record_answer(
            intake, request.match_info["token"], wave, answer, public_state(request).clock()
        )
    except TokenRefused as exc:
        return link_refused(request, exc.status)
    except surveys.AlreadyAnswered:
        return message_page(
            request, 409, "You have already answered this survey", ["Thank you for taking part."]
        )
    except AlreadyOptedOut:
        return message_page(
            request,
            409,
            "You have stopped all messages",
            ["You asked us to stop contacting you, so we can no longer take your answers. "
             "Sign up again to take part."],
        )  # fmt: skip
    except ResidentNotFound:
        return link_refused(request, TokenStatus.UNKNOWN)
    except (PublishFailed, KafkaError):
        return service_unavailable(request)
    except IntakeError:
        return service_unavailable(request)
    return message_page(
        request,
        200,
        "Thank you for your answers",
        [
            "We use them, with everyone else's in your area, to decide what your "
            "neighbourhood team focuses on. We will tell you what we did about it.",
            "If you or someone else is in danger now, call 999.",
        ],
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/reply/{token}", reply_page)
    app.router.add_post("/reply/{token}", reply_submit)
