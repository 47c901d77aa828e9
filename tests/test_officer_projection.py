"""The officer app's projection consumer does not lose a batch it failed to apply.

Real Kafka and PostgreSQL: the projection reads a set-up event, its first attempt to write
the batch fails (as when PostgreSQL restarts), and the set-up must still reach
``officer_setups`` without a restart of the app. Before the fix the consumer's position was
already past the batch, so it was skipped until the next restart.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from api.officer.areas import AreaCache
from api.officer.projection import Projection
from lpt.kafka import make_producer, publish
from lpt.settings import Settings
from schemas.envelope import Envelope
from tests.test_officer_support import setup_created


async def test_a_batch_that_failed_to_apply_is_read_again(isolated_settings: Settings) -> None:
    settings = isolated_settings
    producer = make_producer(settings)
    await producer.start()
    try:
        await publish(
            producer,
            [setup_created("su-flaky-1", "Flaky 1"), setup_created("su-flaky-2", "Flaky 2")],
            settings,
        )
    finally:
        await producer.stop()

    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=2)
    projection = Projection(settings, pool, AreaCache(pool))
    real_apply = projection.apply
    attempts: list[list[str]] = []

    async def fails_once(events: list[Envelope]) -> None:
        attempts.append([getattr(e, "setup_id", "") for e in events])
        if len(attempts) == 1:
            raise ConnectionResetError("database restarted")
        await real_apply(events)

    projection.apply = fails_once  # type: ignore[method-assign]
    await projection.start()
    try:
        deadline = time.monotonic() + 30
        rows: list[str] = []
        while time.monotonic() < deadline:
            rows = [r["setup_id"] for r in await pool.fetch("SELECT setup_id FROM officer_setups")]
            if len(rows) == 2:
                break
            await asyncio.sleep(0.2)
    finally:
        await projection.stop()
        await pool.close()
    assert sorted(rows) == ["su-flaky-1", "su-flaky-2"]
    # The failed batch itself was read again, not only later messages.
    assert len(attempts) >= 2
    assert set(attempts[0]) <= {s for batch in attempts[1:] for s in batch}
