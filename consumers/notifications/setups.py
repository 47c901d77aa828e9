"""The worker's own view of targeted set-ups, so a request can be addressed to a set-up.

Why a projection of its own (``notification_setups``) rather than another service's table: the
worker must resolve a set-up's area and community group even when the officer app is down, and
Kafka is the source of truth (DESIGN §2), so the table can always be rebuilt from the topic.
"""

from __future__ import annotations

import asyncpg

from schemas.envelope import Envelope
from schemas.setups import SetupArchived, SetupCreated, SetupUpdated


async def apply_setup_event(conn: asyncpg.Connection | asyncpg.Pool, event: Envelope) -> bool:
    """Apply one set-up event; False when the event is not about set-ups."""
    if isinstance(event, SetupCreated):
        await conn.execute(
            """INSERT INTO notification_setups (setup_id, area_cells, ward_codes,
                   community_group, updated_at)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (setup_id) DO UPDATE
               SET area_cells = EXCLUDED.area_cells, ward_codes = EXCLUDED.ward_codes,
                   community_group = EXCLUDED.community_group, updated_at = EXCLUDED.updated_at""",
            event.setup_id,
            list(event.area_cells),
            list(event.ward_codes),
            event.community_group,
            event.occurred_at,
        )
        return True
    if isinstance(event, SetupArchived):
        await conn.execute(
            """UPDATE notification_setups SET archived_at = COALESCE(archived_at, $2)
               WHERE setup_id = $1""",
            event.setup_id,
            event.occurred_at,
        )
        return True
    # An update changes name, goal or dates, never the audience: nothing to do here.
    return isinstance(event, SetupUpdated)
