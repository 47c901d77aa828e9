"""The officer app's query side, projected from Kafka: set-ups, door knocks, area activity.

Why from Kafka and not only from the app's own requests: door knocks also arrive through the
gateway and the intake API, registrations and survey answers come from the public pages, and
Kafka is the source of truth (a replay rebuilds these tables). The web service runs one
consumer in the group ``<prefix>officer-app.projection``; every write is an idempotent upsert
keyed by event id, so the app may also apply its own events at once (read-your-writes) and the
consumer's later copy changes nothing.

Rows here hold no personal data: set-ups, knocks at addresses (a house number within a
postcode, never a person), and counts of registrations and survey answers by area.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import asyncpg
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from api.officer.areas import AreaCache
from lpt.kafka import rewind_to_committed, topic_name
from lpt.logs import get_logger
from lpt.settings import Settings
from schemas.engagement import DoorKnocked, SurveyAnswered
from schemas.envelope import Envelope
from schemas.registry import InvalidEvent, decode
from schemas.residents import ResidentRegistered
from schemas.setups import SetupArchived, SetupCreated, SetupTargets, SetupUpdated
from schemas.topics import DOORKNOCKS, RESIDENTS, SETUPS, SURVEYS

log = get_logger(__name__)

BATCH = 2000
#: Decoding is CPU work in the web service's event loop: step aside this often.
YIELD_EVERY = 100
_DOOR_RE = re.compile(r"[^a-z0-9]+")


def door_key(address_ref: str | None) -> str | None:
    """A house number or name normalised for matching ("Flat 2, 14" ~ "flat 2 14")."""
    if not address_ref:
        return None
    key = _DOOR_RE.sub(" ", address_ref.lower()).strip()
    return key or None


def group_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}officer-app.projection"


def _target_args(targets: SetupTargets | None) -> tuple[int | None, int | None, int | None, bool]:
    """The target parameters; an event without targets (older events) leaves them alone."""
    t = targets or SetupTargets()
    return t.doors, t.registrations, t.survey_responses, targets is not None


# Each statement writes the set-up's targets only when its first part (``applied``) wrote the
# set-up's row: a redelivered, replayed-over or outdated event changes no targets either.
_CREATE = """
WITH applied AS (
    INSERT INTO officer_setups (setup_id, name, goal, area_cells, ward_codes, community_group,
        starts_on, ends_on, revisit_registered, created_by, created_at, updated_at,
        last_event_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12)
    ON CONFLICT (setup_id) DO NOTHING
    RETURNING setup_id)
INSERT INTO officer_setup_targets (setup_id, doors, registrations, survey_responses)
SELECT setup_id, $13::int, $14::int, $15::int FROM applied WHERE $16::bool
ON CONFLICT (setup_id) DO UPDATE SET doors = EXCLUDED.doors,
    registrations = EXCLUDED.registrations, survey_responses = EXCLUDED.survey_responses"""

# Updates to an archived set-up are ignored: archived means read-only. An update older (in
# event time) than the state it would overwrite is a replay: skipped.
_UPDATE = """
WITH applied AS (
    UPDATE officer_setups SET name = COALESCE($2, name), goal = COALESCE($3, goal),
        ends_on = COALESCE($4, ends_on), revisit_registered = COALESCE($5, revisit_registered),
        updated_at = $6, last_event_id = $7
    WHERE setup_id = $1 AND archived_at IS NULL AND last_event_id <> $7 AND updated_at <= $6
    RETURNING setup_id)
INSERT INTO officer_setup_targets (setup_id, doors, registrations, survey_responses)
SELECT setup_id, $8::int, $9::int, $10::int FROM applied WHERE $11::bool
ON CONFLICT (setup_id) DO UPDATE SET doors = EXCLUDED.doors,
    registrations = EXCLUDED.registrations, survey_responses = EXCLUDED.survey_responses"""


async def apply_setup(conn: asyncpg.Connection | asyncpg.Pool, event: Envelope) -> None:
    """One set-up event into ``officer_setups`` and its targets (which travel in the events,
    so a replay of the topic rebuilds them too)."""
    if isinstance(event, SetupCreated):
        await conn.execute(
            _CREATE,
            event.setup_id,
            event.name,
            event.goal,
            event.area_cells,
            event.ward_codes,
            event.community_group,
            event.starts_on,
            event.ends_on,
            event.revisit_registered,
            event.created_by,
            event.occurred_at,
            event.event_id,
            *_target_args(event.targets),
        )
    elif isinstance(event, SetupUpdated):
        await conn.execute(
            _UPDATE,
            event.setup_id,
            event.name,
            event.goal,
            event.ends_on,
            event.revisit_registered,
            event.occurred_at,
            event.event_id,
            *_target_args(event.targets),
        )
    elif isinstance(event, SetupArchived):
        await conn.execute(
            """UPDATE officer_setups SET archived_at = $2, archived_by = $3, updated_at = $2,
                   last_event_id = $4
               WHERE setup_id = $1 AND archived_at IS NULL""",
            event.setup_id,
            event.occurred_at,
            event.archived_by,
            event.event_id,
        )


async def apply_doorknocks(
    conn: asyncpg.Connection | asyncpg.Pool, events: list[DoorKnocked]
) -> None:
    if not events:
        return
    await conn.executemany(
        """INSERT INTO officer_doorknocks (event_id, occurred_at, officer_id, postcode,
               address_ref, door_key, outcome, setup_id, cell, ward_code, local_authority_code)
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, p.ward_code, p.local_authority_code
           FROM (SELECT 1) one LEFT JOIN ref_postcodes p ON p.postcode = $4
           ON CONFLICT (event_id) DO NOTHING""",
        [
            (
                e.event_id,
                e.occurred_at,
                e.officer_id,
                e.postcode,
                e.address_ref,
                door_key(e.address_ref),
                e.outcome,
                e.setup_id,
                e.location.score_cell if e.location else None,
            )
            for e in events
        ],
    )


async def apply_activity(
    conn: asyncpg.Connection | asyncpg.Pool,
    rows: list[tuple[object, str, object, str | None, str | None, str | None, list[str]]],
) -> None:
    if rows:
        await conn.executemany(
            """INSERT INTO officer_area_activity (event_id, kind, occurred_at, cell, ward_code,
                   local_authority_code, community_groups)
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING""",
            rows,
        )


class Projection:
    """The consumer that keeps the app's tables in step with the topics."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, areas: AreaCache) -> None:
        self.settings = settings
        self.pool = pool
        self.areas = areas
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.applied = 0

    async def start(self) -> None:
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            *(topic_name(t, s) for t in (SETUPS, DOORKNOCKS, RESIDENTS, SURVEYS)),
            bootstrap_servers=s.bootstrap_servers,
            group_id=group_id(s),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="officer-projection")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
                if not batches:
                    continue
                events: list[Envelope] = []
                decoded = 0
                for tp, records in batches.items():
                    for r in records:
                        decoded += 1
                        if decoded % YIELD_EVERY == 0:
                            await asyncio.sleep(0)  # let the HTTP requests in between
                        try:
                            events.append(decode(r.value or b""))
                        except (InvalidEvent, ValidationError, ValueError) as exc:
                            # Input topics' bad messages are the dead-letter path's business
                            # (their producers refuse them); here they are counted and skipped.
                            log.warning(
                                "officer.projection_bad_event",
                                topic=tp.topic,
                                offset=r.offset,
                                reason=getattr(exc, "reason", type(exc).__name__),
                            )
                await self.apply(events)
                await consumer.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep projecting after a database or broker hiccup
                log.warning("officer.projection_failed", error=type(exc).__name__)
                await asyncio.sleep(1.0)
                await self._rewind()

    async def _rewind(self) -> None:
        """Back to the committed offsets: the consumer's position is already past the batch
        that failed, and without this it would be skipped until the next restart (the upserts
        are idempotent, so reading part of it again is harmless)."""
        assert self._consumer is not None
        try:
            await rewind_to_committed(self._consumer)
        except Exception as exc:  # the broker is still away: the next fetch fails and retries
            log.warning("officer.projection_rewind_failed", error=type(exc).__name__)

    async def apply(self, events: list[Envelope]) -> None:
        index = await self.areas.get()
        knocks: list[DoorKnocked] = []
        activity: list[
            tuple[object, str, object, str | None, str | None, str | None, list[str]]
        ] = []
        setups: list[Envelope] = []
        for e in events:
            if isinstance(e, DoorKnocked):
                knocks.append(e)
            elif isinstance(e, SetupCreated | SetupUpdated | SetupArchived):
                setups.append(e)
            elif isinstance(e, ResidentRegistered):
                cell = e.location.score_cell if e.location else None
                activity.append(
                    (
                        e.event_id,
                        "registration",
                        e.occurred_at,
                        cell,
                        e.ward_code,
                        e.local_authority_code,
                        list(e.community_groups),
                    )
                )
            elif isinstance(e, SurveyAnswered):
                cell = e.location.score_cell if e.location else None
                ward = index.ward_of_cell(cell)
                la = index.la_of_ward.get(ward) if ward else None
                activity.append((e.event_id, "survey_response", e.occurred_at, cell, ward, la, []))
        async with self.pool.acquire() as conn, conn.transaction():
            for s in setups:  # in order: created, updated, archived
                await apply_setup(conn, s)
            await apply_doorknocks(conn, knocks)
            await apply_activity(conn, activity)
        self.applied += len(events)
