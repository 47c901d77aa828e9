"""Per-client rate limits for the public forms that create records or send messages.

Why in memory: the web service runs as one process per host and the limits only need to stop
scripts, not to be exact across a fleet; a sliding window per client address costs a deque of
timestamps. The client address is aiohttp's ``request.remote``: behind a reverse proxy every
client would share the proxy's address, so such a deployment must pass the real address on
(not handled here yet). Addresses are kept only while they have recent attempts, and never
logged.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """At most ``limit`` attempts per key in any ``window_s`` seconds."""

    #: Keys kept at most; past this the oldest idle ones are dropped (bounded memory).
    MAX_KEYS = 100_000

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}

    def _prune(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        return hits

    def hit(self, key: str) -> float | None:
        """Count an attempt; None when allowed, else seconds until the next one may be made."""
        now = self.clock()
        hits = self._prune(key, now)
        if len(hits) >= self.limit:
            return max(1.0, hits[0] + self.window_s - now)
        hits.append(now)
        if len(self._hits) > self.MAX_KEYS:
            self._forget_idle(now)
        return None

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window_s]:
            del self._hits[key]
        while len(self._hits) > self.MAX_KEYS:
            del self._hits[next(iter(self._hits))]
