"""CSRF protection for the public forms: a signed double-submit cookie.

Residents have no session, so there is nothing server-side to tie a form to. Each browser gets
a random cookie; every form carries ``HMAC(key, cookie)`` in a hidden field. A POST is accepted
only when the field matches the cookie it came with. Another site can make a browser send the
cookie but cannot read it, and cannot compute the HMAC without the server's key (so even a
cookie planted from a sibling domain does not help). The cookie is ``SameSite=Lax`` and
``HttpOnly``, and ``__Host-``-prefixed when cookies are https-only.

The one-click unsubscribe POST is deliberately exempt: RFC 8058 mail clients send it without
cookies, and the signed unsubscribe token in the URL is the proof instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from aiohttp import web

from api.context import SETTINGS
from api.public.forms import Form
from api.public.state import public_state

FIELD = "csrf_token"
_NEW_COOKIE = web.RequestKey("public.csrf_new_cookie", str)
#: Browsers drop the cookie after this; a form left open longer asks the resident to retry.
MAX_AGE_S = 12 * 3600


def cookie_name(secure: bool) -> str:
    return "__Host-lpt_csrf" if secure else "lpt_csrf"


def _sign(key: bytes, value: str) -> str:
    mac = hmac.new(key, value.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _well_formed(value: str | None) -> bool:
    return (
        value is not None
        and 20 <= len(value) <= 64
        and value.replace("-", "").replace("_", "").isalnum()
    )


def form_token(request: web.Request) -> str:
    """The hidden-field value for this browser (creating its cookie when it has none)."""
    name = cookie_name(request.app[SETTINGS].cookie_secure)
    value = request.cookies.get(name)
    if not _well_formed(value):
        value = request.get(_NEW_COOKIE)
        if value is None:
            value = secrets.token_urlsafe(32)
            request[_NEW_COOKIE] = value
    assert value is not None
    return _sign(public_state(request).csrf_key, value)


def set_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Attach the cookie :func:`form_token` created for this request, if any."""
    value = request.get(_NEW_COOKIE)
    if value is None:
        return
    secure = request.app[SETTINGS].cookie_secure
    response.set_cookie(
        cookie_name(secure),
        value,
        max_age=MAX_AGE_S,
        path="/",
        secure=secure,
        httponly=True,
        samesite="Lax",
    )


def valid(request: web.Request, form: Form) -> bool:
    """Does the posted form carry the token that matches this browser's cookie?"""
    value = request.cookies.get(cookie_name(request.app[SETTINGS].cookie_secure))
    given = form.get(FIELD)
    if not _well_formed(value) or not isinstance(given, str) or not given:
        return False
    assert value is not None
    return hmac.compare_digest(given, _sign(public_state(request).csrf_key, value))
