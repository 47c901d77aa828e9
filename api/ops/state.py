"""What the ops module keeps for the life of the web process (one object under one app key)."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web

from .lag import LagSampler


@dataclass
class OpsState:
    sampler: LagSampler
    #: For scraping the workers' /metrics (one connection pool for the process).
    http: aiohttp.ClientSession


OPS = web.AppKey("ops", OpsState)


def ops_state(request: web.Request) -> OpsState:
    return request.app[OPS]
