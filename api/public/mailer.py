"""Messages a resident asked for themselves (confirm your address, your settings link).

They go through the notification channels (:mod:`consumers.notifications.channels`: the same
SMTP connection handling, retries and message format, including the RFC 8058 one-click
``List-Unsubscribe`` header), but not through the notification worker's budget: the resident
has just asked for this one message, so holding it for a weekly digest would defeat it.

They are sent while the resident waits, with a short retry (:data:`state.MAIL_BACKOFF`); if
the mail server does not take it, the page says so and offers to send it again. Nothing is
queued, because the raw link may exist only inside the message (only its hash is stored).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from api.public.state import PublicState
from consumers.notifications.channels import Outgoing
from consumers.notifications.compose import MessageTemplate
from consumers.notifications.tokens import unsubscribe_url
from lpt.logs import get_logger
from lpt.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class PersonalMessage:
    kind: str  # for the log: "confirm_email", "manage_link", "already_registered"
    subject: str
    body: str


async def send_personal(
    state: PublicState,
    settings: Settings,
    resident_id: str,
    channel: str,
    address: str,
    message: PersonalMessage,
) -> bool:
    """Deliver one message on one channel now; True when the server accepted it."""
    sender = state.channels.get(channel)
    if sender is None:
        log.warning("public.message_channel_off", channel=channel, kind=message.kind)
        return False
    message_id = "pm-" + secrets.token_hex(12)
    template = MessageTemplate(message_id, message.subject, message.body, settings.mail_from)
    link = unsubscribe_url(settings.public_base_url, state.unsubscribe_key, resident_id)
    [outcome] = await sender.send_many(
        [Outgoing(message_id, resident_id, channel, address, template, link, None)]
    )
    if outcome.ok:
        log.info("public.message_sent", kind=message.kind, channel=channel, resident_id=resident_id)
    else:
        log.warning(
            "public.message_failed",
            kind=message.kind,
            channel=channel,
            resident_id=resident_id,
            detail=outcome.detail,
        )
    return outcome.ok


def confirm_message(force: str, url: str, hours: int, manage_url: str) -> PersonalMessage:
    return PersonalMessage(
        "confirm_email",
        "Confirm your email address",
        f"Thank you for signing up for updates from {force}.\n\n"
        f"Confirm your email address (this link works once, for {hours} hours):\n{url}\n\n"
        "You can change what we send you, get a copy of the details we hold or delete them "
        f"at any time. To do that, ask for a link here:\n{manage_url}\n\n"
        "If you did not sign up, you can ignore this email: use the link at the end to make "
        "sure we never write to this address again.",
    )


def manage_message(force: str, url: str, hours: int) -> PersonalMessage:
    return PersonalMessage(
        "manage_link",
        "Your link to change your settings",
        f"You asked for a link to your registration with {force}.\n\n"
        "Use it to change what we send you, see or download the details we hold about you, "
        f"or delete them. It works for {hours} hours:\n{url}\n\n"
        "Do not share this link: anyone who has it can see your details. If you did not ask "
        "for it, you can ignore this email.",
    )


def already_registered_message(force: str, url: str, hours: int) -> PersonalMessage:
    return PersonalMessage(
        "already_registered",
        "You are already signed up",
        f"Someone, probably you, tried to sign up for updates from {force} with this email "
        "address. It is already signed up, so nothing has changed.\n\n"
        f"To change your settings, use this link (it works for {hours} hours):\n{url}\n\n"
        "If this was not you, you can ignore this email.",
    )
