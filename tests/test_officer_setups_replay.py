"""Set-up targets travel in the set-up events, so a rebuild from ``setups.lifecycle`` keeps them.

Real app, Kafka and PostgreSQL: a supervisor creates set-ups with targets and changes targets
later; the events carry them; then a fresh database is filled only by the officer app's own
projection consumer replaying the topic from the start (as an operator rebuilds it), and the
set-ups, their targets and the progress report's targets are all back. An event published
before targets travelled (no ``targets`` field) still replays, with no targets.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from api.officer.projection import group_id
from lpt.kafka import make_producer, publish_raw, topic_name
from lpt.scratch import create_database, drop_database
from lpt.settings import Settings
from schemas import decode
from schemas.registry import InvalidEvent
from schemas.setups import SetupCreated, SetupTargets, SetupUpdated
from schemas.topics import SETUPS, event_key
from tests.test_officer_support import (
    WARD_CENTRE,
    delete_topics,
    officer_settings,
    seed,
    served,
    session_for,
    setup_created,
)
from tests.web_helpers import read_all

TARGETS = {"doors": 100, "registrations": 50, "survey_responses": 20}


def body(name: str, targets: dict[str, Any] | None) -> dict[str, Any]:
    today = date.today()
    out: dict[str, Any] = {
        "name": name,
        "goal": "Register households and hear their priorities",
        "ward_codes": [WARD_CENTRE],
        "starts_on": today.isoformat(),
        "ends_on": (today + timedelta(days=30)).isoformat(),
    }
    if targets is not None:
        out["targets"] = targets
    return out


async def reset_to_earliest(settings: Settings, group: str) -> None:
    """What an operator does before a rebuild: the group's offsets back to the start
    (``kafka-consumer-groups --reset-offsets --to-earliest``); the group must be empty."""
    topic = topic_name(SETUPS, settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = SETUPS.partitions or settings.topic_partitions
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        await consumer.commit({tp: begin[tp] for tp in tps})
    finally:
        await consumer.stop()


async def wait_for_rows(pool: asyncpg.Pool, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pool.fetchval("SELECT count(*) FROM officer_setups") >= count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the projection did not rebuild the set-ups in time")


@pytest.fixture
async def settings(isolated_settings: Settings) -> AsyncIterator[Settings]:
    settings = officer_settings(isolated_settings)
    await seed(settings)
    yield settings
    await delete_topics(settings)


async def test_targets_survive_a_rebuild_from_the_topic(settings: Settings) -> None:
    async with served(settings) as server, session_for(server, "supervisor.hull") as sup:
        resp = await sup.send("POST", "/api/v1/setups", json=body("Kept", TARGETS))
        assert resp.status == 201, await resp.text()
        kept = (await resp.json())["setup_id"]
        resp = await sup.send("POST", "/api/v1/setups", json=body("Changed", TARGETS))
        changed = (await resp.json())["setup_id"]
        # Targets changed alone (no other field): that too must become an event.
        new_targets = {"doors": 300, "registrations": None, "survey_responses": 5}
        resp = await sup.send("PATCH", f"/api/v1/setups/{changed}", json={"targets": new_targets})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["targets"] == new_targets
        resp = await sup.send("POST", "/api/v1/setups", json=body("No targets", None))
        untargeted = (await resp.json())["setup_id"]

    events = [decode(r.value) for r in await read_all(settings, SETUPS, 4)]
    created = {e.setup_id: e for e in events if isinstance(e, SetupCreated)}
    updates = [e for e in events if isinstance(e, SetupUpdated)]
    assert created[kept].targets == SetupTargets(**TARGETS)
    assert created[untargeted].targets == SetupTargets()  # given as "no targets", not absent
    assert [u.targets for u in updates] == [SetupTargets(**new_targets)]

    # An event from before targets travelled: no "targets" key at all.
    legacy_id = f"su-legacy-{uuid.uuid4().hex[:6]}"
    legacy = setup_created(
        legacy_id,
        "Published before targets travelled",
        occurred_at=created[kept].occurred_at,
        goal="Old event shape",
        created_by="o-legacy",
    )
    raw = legacy.model_dump_json(exclude={"targets"}).encode()
    assert b'"targets"' not in raw
    producer = make_producer(settings)
    await producer.start()
    try:
        await publish_raw(producer, topic_name(SETUPS, settings), [(event_key(legacy), raw)])
    finally:
        await producer.stop()

    # Rebuild: an empty database, the projection's group back to the start, the real app.
    rebuilt = await create_database(settings, f"t_{uuid.uuid4().hex[:10]}")
    try:
        await seed(rebuilt)  # accounts and reference postcodes only; no set-up rows
        await reset_to_earliest(rebuilt, group_id(rebuilt))
        pool = await asyncpg.create_pool(rebuilt.dsn, min_size=1, max_size=2)
        try:
            assert await pool.fetchval("SELECT count(*) FROM officer_setup_targets") == 0
            async with served(rebuilt) as server, session_for(server, "supervisor.hull") as sup:
                await wait_for_rows(pool, 4)
                got = {}
                for sid in (kept, changed, untargeted, legacy_id):
                    resp = await sup.get(f"/api/v1/setups/{sid}")
                    assert resp.status == 200, await resp.text()
                    got[sid] = (await resp.json())["targets"]
                report = await (await sup.get(f"/api/v1/setups/{kept}/report")).json()
        finally:
            await pool.close()
    finally:
        await drop_database(rebuilt)
    nothing = {"doors": None, "registrations": None, "survey_responses": None}
    assert got == {kept: TARGETS, changed: new_targets, untargeted: nothing, legacy_id: nothing}
    assert report["progress"]["doors_knocked"]["target"] == 100
    assert report["progress"]["registrations"]["target"] == 50


def test_old_events_without_targets_still_decode() -> None:
    """Backward compatible: the field is optional; an old payload decodes with ``None``."""
    for event in (
        SetupCreated(
            occurred_at=datetime.now(UTC),
            source="officer-app",
            setup_id="su-old",
            name="Old",
            goal="Old shape",
            community_group="Residents association",
            starts_on=date.today(),
            ends_on=date.today(),
            created_by="o-old",
        ),
        SetupUpdated(occurred_at=datetime.now(UTC), source="officer-app", setup_id="su-old"),
    ):
        raw = event.model_dump_json(exclude={"targets"}).encode()
        assert b'"targets"' not in raw
        again = decode(raw)
        assert type(again) is type(event) and again.targets is None  # type: ignore[attr-defined]
        assert again == event
    payload = json.loads(raw)
    payload["targets"] = {"doors": -1}
    with pytest.raises(InvalidEvent) as caught:  # a bad target is refused, naming the field
        decode(json.dumps(payload).encode())
    assert caught.value.field == "targets.doors"
