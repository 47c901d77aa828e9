"""The worker process on real Kafka: requests in, e-mails out, statuses and dead letters back.

Invalid requests (not JSON, an audience naming special-category data, a cell that is not an
H3 cell, an unknown set-up) go to the dead-letter topic with the reason and the worker goes
on; redelivered and re-published requests send nothing twice; offsets are committed, so a
restarted worker does not redo the work; the ``cli`` entry point runs as a real process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import date
from typing import Any

from test_notifications_support import (  # noqa: F401 - fixtures
    BEVERLEY,
    HULL,
    NOON,
    PUBLIC,
    WARD_BEVERLEY,
    WARD_HULL,
    Env,
    add_people,
    env_fixture,
    publish_requests,
    read_topic,
    request,
    smtp_channel,
    smtp_server_fixture,
    statuses,
)

from consumers.notifications.worker import NotificationWorker
from lpt.kafka import dead_letter_topic_name, make_producer, topic_name
from schemas.notifications import Audience
from schemas.registry import encode
from schemas.residents import ResidentUpdated
from schemas.setups import SetupCreated
from schemas.topics import NOTIFICATIONS_REQUESTED, RESIDENTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def run_until_idle(env: Env, timeout: float = 60.0) -> NotificationWorker:
    worker = NotificationWorker(
        env.settings, channels={"email": smtp_channel(env.smtp.port)}, clock=env.clock
    )
    await worker.start()
    try:
        await asyncio.wait_for(worker.run(asyncio.Event(), until_idle=True), timeout)
    finally:
        await worker.stop()
    return worker


async def send_raw(env: Env, values: list[bytes]) -> None:
    producer = make_producer(env.settings)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(
                topic_name(NOTIFICATIONS_REQUESTED, env.settings), value, key=b"bad"
            )
    finally:
        await producer.stop()


async def test_worker_sends_dead_letters_bad_requests_and_never_sends_twice(env: Env) -> None:
    hull = await add_people(env.pool, env.settings, [(HULL, WARD_HULL)] * 2)
    bev = await add_people(env.pool, env.settings, [(BEVERLEY, WARD_BEVERLEY)] * 2)
    good = request("n-good", Audience(ward_codes=[WARD_HULL]))
    by_ethnicity: dict[str, Any] = json.loads(encode(request("n-eth", Audience(cells=[HULL]))))
    by_ethnicity["audience"]["ethnic_group"] = "asian"
    await send_raw(
        env,
        [
            b"{not json",
            json.dumps(by_ethnicity).encode(),
            encode(request("n-cell", Audience(cells=["8919404284fffff", "zzz"]))),
            encode(request("n-setup-unknown", Audience(setup_id="su-missing"))),
        ],
    )
    setup = SetupCreated(
        occurred_at=NOON, source="officer-app", setup_id="su-bev", name="Beverley",
        goal="Visit", area_cells=[BEVERLEY], starts_on=date(2026, 3, 1),
        ends_on=date(2026, 4, 1), created_by="sgt-1",
    )  # fmt: skip
    await publish_requests(env.settings, [setup])
    # Preference changes arrive on the residents topic (an impossible one is dead-lettered).
    await publish_requests(
        env.settings,
        [
            ResidentUpdated(occurred_at=NOON, source="public-web",
                            resident_id=hull[0].resident_id, max_per_week=3,
                            quiet_hours=(22, 7)),
            ResidentUpdated(occurred_at=NOON, source="public-web",
                            resident_id=hull[1].resident_id, quiet_hours=(25, 7)),
        ],
    )  # fmt: skip
    # The same request delivered twice, and re-published under a new event id.
    await publish_requests(
        env.settings, [good, good, good.model_copy(update={"event_id": uuid.uuid4()})]
    )
    # On another topic: the worker catches up on set-ups when a request names an unknown one.
    await publish_requests(env.settings, [request("n-setup", Audience(setup_id="su-bev"))])

    worker = await run_until_idle(env)
    assert worker.stats.dead_letters == 5
    assert worker.stats.duplicates == 2
    assert worker.stats.requests == 2 and worker.stats.setups == 1
    for person in hull + bev:
        assert len(env.smtp.inbox.to(person.email)) == 1

    dead = await read_topic(
        env.settings,
        NOTIFICATIONS_REQUESTED,
        dead_letter_topic_name(NOTIFICATIONS_REQUESTED, env.settings),
    )
    headers = [dict(r.headers) for r in dead]
    fields = [h["dlq.field"].decode() for h in headers]
    assert fields == ["", "audience.ethnic_group", "audience.cells", "audience.setup_id"]
    reasons = [h["dlq.reason"].decode() for h in headers]
    assert reasons[0].startswith("not JSON")
    assert "Extra inputs are not permitted" in reasons[1]
    assert "'zzz' is not an H3 cell" in reasons[2] and "unknown set-up" in reasons[3]
    assert dead[0].value == b"{not json"  # the original bytes, for replay after a fix
    [bad_prefs] = await read_topic(
        env.settings, RESIDENTS, dead_letter_topic_name(RESIDENTS, env.settings)
    )
    assert dict(bad_prefs.headers)["dlq.field"] == b"quiet_hours"
    prefs = await env.pool.fetchrow(
        "SELECT max_per_week, quiet_start, quiet_end FROM notification_preferences"
    )
    assert (prefs["max_per_week"], prefs["quiet_start"].hour, prefs["quiet_end"].hour) == (3, 22, 7)
    assert {h["dlq.topic"].decode() for h in headers} == {
        topic_name(NOTIFICATIONS_REQUESTED, env.settings)
    }
    sent = [s for s in await statuses(env.settings) if s.status == "sent"]
    assert sorted(s.notification_id for s in sent) == ["n-good"] * 2 + ["n-setup"] * 2

    # Offsets were committed: a restarted worker has nothing to do.
    again = await run_until_idle(env)
    assert again.stats.requests == 0 and again.stats.dead_letters == 0
    assert len(env.smtp.inbox.messages) == 4


async def test_cli_runs_the_worker_as_a_process(env: Env) -> None:
    [person] = await add_people(env.pool, env.settings, [(HULL, WARD_HULL)])
    await publish_requests(env.settings, [request("n-cli", Audience(cells=[HULL]), urgent=True)])
    process_env = dict(os.environ)
    process_env.update(
        LPT_DATABASE_URL=env.settings.dsn,
        LPT_TOPIC_PREFIX=env.settings.topic_prefix,
        LPT_SMTP_URL=env.settings.smtp_url,
        LPT_PUBLIC_URL=PUBLIC,
        LPT_MASTER_KEY_FILE=str(env.settings.master_key_file),
        LPT_LINK_KEY_FILE=str(env.settings.link_key_file),
        LPT_SURVEY_AUTO_WAVES="0",  # this test counts the messages of one request
    )
    code = (
        "import argparse, sys; from consumers.notifications.worker import cli; "
        "sys.exit(cli(argparse.Namespace(until_idle=True)))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=ROOT, env=process_env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "1 requests, 1 sent" in out.decode()
    [mail] = env.smtp.inbox.to(person.email)
    assert mail["List-Unsubscribe"].startswith(f"<{PUBLIC}/unsubscribe/")
    assert person.email.encode() not in err  # no personal data in the logs


async def test_a_stop_during_an_outage_leaves_the_batch_uncommitted(env: Env) -> None:
    """Stopping while PostgreSQL is away must not commit the requests not yet handled: they
    would be lost (committed, never sent). Here every request meets an outage, stop comes
    during the backoff, and the group's offsets must still be where they were."""
    await publish_requests(
        env.settings,
        [request(f"n-outage-{i}", Audience(ward_codes=[WARD_HULL])) for i in range(3)],
    )
    worker = NotificationWorker(
        env.settings, channels={"email": smtp_channel(env.smtp.port)}, clock=env.clock
    )
    stop = asyncio.Event()
    attempts: list[str] = []

    async def database_away(record: Any) -> None:
        attempts.append(record.value.decode()[:40])
        stop.set()  # the shutdown signal arrives during the outage
        raise ConnectionRefusedError("PostgreSQL is away")

    worker.process = database_away  # type: ignore[method-assign]
    await worker.start()
    try:
        await asyncio.wait_for(worker.run(stop), 30)
        assert worker.consumer is not None
        committed = [await worker.consumer.committed(tp) for tp in worker.consumer.assignment()]
    finally:
        await worker.stop()
    assert attempts, "the worker never tried a request"
    assert all(offset is None for offset in committed), committed
