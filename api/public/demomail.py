"""Demo mode only: the e-mails the demo mail sink kept, readable in the browser.

Why a page: a demo user signs up, and the confirmation, updates, survey invitations and their
personal links must be somewhere they can open without a mail client. The demo mail sink
(:mod:`lpt.mailsink`) writes every message to ``$LPT_HOME/mail``; these pages list them and show
one with its links clickable. The routes exist only when ``LPT_DEMO=1`` (they show residents'
addresses, fictional in a demo); outside demo mode they are not registered at all (404).
"""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiohttp import web

from api.context import SETTINGS
from api.public.render import page
from lpt.mailsink import list_mail, mail_dir

_NAME = re.compile(r"^[0-9A-Za-z-]{1,80}\.eml$")
_URL = re.compile(r"https?://[^\s<>\"']+")
SHOWN_HEADERS = ("From", "To", "Date", "Subject", "List-Unsubscribe", "List-Unsubscribe-Post")


async def mail_index(request: web.Request) -> web.Response:
    directory = mail_dir(request.app[SETTINGS])
    return page(request, "demo_mail.html", mails=list_mail(directory), directory=str(directory))


def _text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain", "html"))
    return body.get_content() if body is not None else ""


async def mail_message(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    path = mail_dir(request.app[SETTINGS]) / name
    if not _NAME.match(name) or not path.is_file():
        raise web.HTTPNotFound()
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    base = request.app[SETTINGS].public_base_url
    text = _text(message)
    # Only links into this service become clickable (confirm, reply, unsubscribe, manage).
    links = [u for u in dict.fromkeys(_URL.findall(text)) if u.startswith(base + "/")]
    shown = [(h, str(message[h])) for h in SHOWN_HEADERS if message[h] is not None]
    return page(
        request,
        "demo_mail_message.html",
        subject=str(message["Subject"] or "(no subject)"),
        mail_headers=shown,
        text=text,
        links=links,
    )


def setup(app: web.Application) -> None:
    if not app[SETTINGS].demo_mode:
        return
    app.router.add_get("/demo/mail", mail_index)
    app.router.add_get("/demo/mail/{name}", mail_message)
