"""The public pages residents use (issue 5): sign up, confirm, settings, surveys, replies.

Server-rendered HTML with GOV.UK Frontend classes; every page works without JavaScript and is
built for a phone first (WCAG 2.2 AA: labels, fieldsets and legends, an error summary linking to
each field, a skip link, visible focus, ``lang``). One module per concern:

- :mod:`.register` sign-up; :mod:`.confirm` confirming an e-mail address;
- :mod:`.manage` settings through a personal link, :mod:`.mydata` a copy of one's data,
  :mod:`.erasure` deletion; :mod:`.unsubscribe` the one-click opt-out (RFC 8058);
- :mod:`.surveys` quarterly waves, the survey form and response rates;
- :mod:`.reply` the page behind the reply link in messages;
- :mod:`.links` residents' own tokens, :mod:`.csrf`, :mod:`.ratelimit`, :mod:`.mailer`,
  :mod:`.render`, :mod:`.forms`, :mod:`.assets` and :mod:`.state` are the shared plumbing;
- :mod:`.demomail` (demo mode only) shows the e-mails the demo mail sink kept.

Privacy (DESIGN §6) is carried by the modules it belongs to: personal data stays in the
identity vault, links are single-use or short-lived with only their hash stored, opting out is
immediate, erasure is crypto-shredding through :meth:`producers.intake.Intake.request_erasure`.
"""

from __future__ import annotations

from aiohttp import web

import api.public.assets
import api.public.confirm
import api.public.demomail
import api.public.erasure
import api.public.info
import api.public.manage
import api.public.mydata
import api.public.register
import api.public.reply
import api.public.unsubscribe
from api.public.render import make_environment
from api.public.state import PUBLIC, PublicState, public_ctx


def setup(app: web.Application) -> None:
    """Add the public pages to the web service (call after the shared resources are set up)."""
    app[PUBLIC] = PublicState(templates=make_environment())
    app.cleanup_ctx.append(public_ctx)
    api.public.assets.setup(app)
    api.public.info.setup(app)
    api.public.register.setup(app)
    api.public.confirm.setup(app)
    api.public.manage.setup(app)
    api.public.mydata.setup(app)
    api.public.erasure.setup(app)
    api.public.unsubscribe.setup(app)
    api.public.reply.setup(app)
    api.public.demomail.setup(app)  # demo mode only
