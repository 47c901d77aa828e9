"""What the officer app keeps for the life of the process (one object under one app key)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aiohttp import web

from api.officer.accounts import AccountStore
from api.officer.areas import AreaCache
from api.officer.auth import AuthBackend, LoginThrottle, SessionStore
from api.officer.cache import ShortCache
from api.officer.live import LiveHub
from lpt.settings import Settings


@dataclass
class OfficerState:
    settings: Settings
    pool: asyncpg.Pool
    accounts: AccountStore
    sessions: SessionStore
    throttle: LoginThrottle
    backend: AuthBackend
    areas: AreaCache
    live: LiveHub
    cache: ShortCache


OFFICER = web.AppKey("officer", OfficerState)


def officer_state(request: web.Request) -> OfficerState:
    return request.app[OFFICER]
