"""A short-lived cache for the heavy priority reads (whole levels, GeoJSON outlines).

Why: a list or map request reads and renders thousands of rows, and the phones of a whole
shift ask for the same level within seconds of each other. The priority tables change at the
stream processors' pace and changes reach open pages through the live feed anyway, so an answer
up to ``TTL`` seconds old is as good as a fresh one. One build per key at a time: when an entry
expires under load, the other requests wait for that build instead of all rebuilding it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

TTL = 2.0
MAX_ENTRIES = 4096


class ShortCache:
    def __init__(self, ttl: float = TTL, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._building: dict[Hashable, asyncio.Future[Any]] = {}

    async def get(self, key: Hashable, build: Callable[[], Awaitable[Any]]) -> Any:
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        pending = self._building.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._building[key] = future
        try:
            value = await build()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._building.pop(key, None)
        future.set_result(value)
        self._entries[key] = (time.monotonic(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()
