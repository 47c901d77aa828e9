"""Officer web pages (placeholder until the pages are written)."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    pass
