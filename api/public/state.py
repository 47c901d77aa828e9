"""What the public pages share across requests: templates, keys, rate limits, message channels.

Why a mutable holder created at ``setup`` time: tests (and operators) can replace a rate limit
or the clock before the application starts, and the parts that need I/O (the master key, the
SMTP connections) are filled in at start-up by :func:`public_ctx`, after the shared resources
(pool, producer, vault) exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import jinja2
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from api.context import SETTINGS
from api.public.ratelimit import RateLimiter
from consumers.notifications.channels import Channel, channels_from_settings
from consumers.notifications.retry import Backoff
from identity.crypto import load_master_key
from identity.linkkey import load_link_key
from schemas.envelope import utcnow

#: Registrations per client address in :data:`REGISTER_WINDOW_S` (a household or an office
#: behind one address registers a few people; a script registers thousands).
REGISTER_LIMIT = 10
REGISTER_WINDOW_S = 15 * 60
#: Requests for a link by e-mail (manage link, new confirmation link) per client address:
#: each sends a message to someone, so they are limited like registrations.
LINK_LIMIT = 5
LINK_WINDOW_S = 15 * 60
#: A page that is waiting on the mail server must not hang the resident for long: two quick
#: attempts, then the page says the message could not be sent and offers to send it again.
MAIL_BACKOFF = Backoff(attempts=2, base=0.3, cap=1.0)


def derive_key(master_key: bytes, purpose: bytes) -> bytes:
    """A key for one purpose, derived from (never equal to) the master key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master_key)


@dataclass
class PublicState:
    templates: jinja2.Environment
    register_limit: RateLimiter = field(
        default_factory=lambda: RateLimiter(REGISTER_LIMIT, REGISTER_WINDOW_S)
    )
    link_limit: RateLimiter = field(default_factory=lambda: RateLimiter(LINK_LIMIT, LINK_WINDOW_S))
    clock: Callable[[], datetime] = utcnow
    mail_backoff: Backoff = MAIL_BACKOFF
    #: Filled at start-up by :func:`public_ctx`.
    csrf_key: bytes = b""
    unsubscribe_key: bytes = b""
    channels: Mapping[str, Channel] = field(default_factory=dict)


PUBLIC = web.AppKey("public", PublicState)


def public_state(request: web.Request) -> PublicState:
    return request.app[PUBLIC]


async def public_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the page keys (CSRF from the master key; the link key of its own) and open the
    message channels."""
    settings = app[SETTINGS]
    state = app[PUBLIC]
    master = load_master_key(settings.master_key_file)
    state.csrf_key = derive_key(master, b"lpt public csrf v1")
    state.unsubscribe_key = load_link_key(settings)
    channels = channels_from_settings(settings, state.mail_backoff)
    for channel in channels.values():
        await channel.start()
    state.channels = channels
    try:
        yield
    finally:
        for channel in channels.values():
            await channel.close()
