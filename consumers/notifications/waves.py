"""The quarterly survey wave, opened on schedule by the notification worker.

Why here: the worker already runs all the time and does timed housekeeping (quiet-hours
releases, digests); a separate cron job would be one more thing to forget on a new server. The
first housekeeping round of a quarter opens that quarter's wave (``2026Q2``) with
:func:`api.public.surveys.issue_wave`, exactly as ``lpt survey-wave`` does by hand.

Once only, however many workers run and however often they restart:

* the wave is opened only when ``survey_waves`` has no row for it (so a wave opened by hand, or
  by another worker, is left alone; residents who register later in the quarter are invited by
  running ``lpt survey-wave`` again, never behind the operator's back);
* the check and the opening happen under a PostgreSQL advisory lock, so two workers starting
  together cannot both open it;
* and :func:`issue_wave` itself invites a resident to a wave at most once (primary key), and its
  invitation requests have deterministic notification ids, so even a redelivered request gives
  each resident one personal link.

Each process remembers the last wave it saw opened, so the database is asked once per quarter,
not every round. ``LPT_SURVEY_AUTO_WAVES=0`` turns the schedule off.
"""

from __future__ import annotations

import asyncpg
from aiokafka import AIOKafkaProducer

from consumers.notifications.budget import Clock
from lpt.logs import get_logger
from lpt.settings import Settings
from producers.intake import current_wave

log = get_logger(__name__)

#: Advisory lock key of the wave schedule (any constant unused elsewhere in the database).
WAVE_LOCK = 0x4C50_5457  # "LPTW"


class WaveScheduler:
    """Opens the current quarter's wave once; :meth:`tick` is called every housekeeping round."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        settings: Settings,
        clock: Clock,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.settings = settings
        self.clock = clock
        self._known_open: str | None = None

    async def tick(self) -> str | None:
        """Open the current wave if nobody has; returns the wave opened by this call, if any."""
        now = self.clock()
        wave = current_wave(now)
        if wave == self._known_open:
            return None
        from api.public.surveys import issue_wave  # the web side owns waves; imported on use

        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", WAVE_LOCK):
                return None  # another worker is opening it right now; look again next round
            try:
                if await conn.fetchval("SELECT 1 FROM survey_waves WHERE wave = $1", wave):
                    self._known_open = wave
                    return None
                issued = await issue_wave(self.pool, self.producer, self.settings, wave, now)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", WAVE_LOCK)
        self._known_open = wave
        log.info(
            "survey.wave_opened_on_schedule",
            wave=wave,
            invited=issued.invited,
            requests=len(issued.notification_ids),
        )
        return wave
