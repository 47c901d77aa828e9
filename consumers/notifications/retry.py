"""Retries with exponential backoff and jitter, shared by every channel.

Why jitter: after a mail server or SMS provider hiccup, thousands of sends fail at once; without
jitter they would all come back at the same instant and knock it over again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class PermanentFailure(Exception):
    """Do not retry (e.g. SMTP 5xx, HTTP 400): the same request would fail again."""


class TransientFailure(Exception):
    """Worth retrying (SMTP 4xx for one recipient, HTTP 408)."""


class Unreachable(TransientFailure):
    """The server itself is down or overloaded (no connection, SMTP 421, HTTP 429/5xx): worth
    retrying later, and a reason to stop trying the other messages for a while."""


@dataclass(frozen=True)
class Backoff:
    attempts: int = 4
    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        """Sleep before attempt ``attempt`` (1-based; the first attempt does not wait)."""
        raw = min(self.cap, self.base * self.factor ** max(0, attempt - 2))
        return raw * (0.5 + random.random() / 2)  # jitter, not security


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    attempts: int
    detail: str | None = None
    #: Failed, but only for now (server down, attempts used up): worth another round later.
    transient: bool = False
    #: The last failure was the server being unreachable (trips the channel's circuit).
    unreachable: bool = False


async def with_retries(
    attempt: Callable[[], Awaitable[object]],
    backoff: Backoff,
    on_retry: Callable[[int, Exception], Awaitable[None]] | None = None,
) -> Outcome:
    """Run ``attempt`` until it succeeds, fails permanently, or the attempts run out.

    ``attempt`` raises :class:`TransientFailure` or :class:`PermanentFailure`; any other
    exception is treated as transient (a network library's own error types vary).
    """
    last = "no attempt made"
    unreachable = False
    for n in range(1, backoff.attempts + 1):
        if n > 1:
            await asyncio.sleep(backoff.delay(n))
        try:
            await attempt()
            return Outcome(True, n)
        except PermanentFailure as exc:
            return Outcome(False, n, str(exc)[:300])
        except Exception as exc:  # classified as transient, retried, reported
            # Our own messages are safe to keep; a library's may quote an address: name only.
            last = str(exc)[:300] if isinstance(exc, TransientFailure) else type(exc).__name__
            unreachable = isinstance(exc, Unreachable)
            if on_retry is not None and n < backoff.attempts:
                await on_retry(n, exc)
    return Outcome(False, backoff.attempts, last, transient=True, unreachable=unreachable)
