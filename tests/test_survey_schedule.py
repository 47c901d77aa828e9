"""The notification worker opens each quarter's survey wave by itself, once (real Kafka,
PostgreSQL and SMTP server).

Once means: a restarted worker, a second worker starting at the same moment, or a redelivered
request never opens the wave again or gives anyone a second personal link; a resident who
registers later in the quarter is left to ``lpt survey-wave``; ``LPT_SURVEY_AUTO_WAVES=0``
turns it off.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

from test_notifications_support import (  # noqa: F401 - fixtures
    HULL,
    WARD_HULL,
    Env,
    add_people,
    env_fixture,
    read_topic,
    smtp_channel,
    smtp_server_fixture,
)

from api.public import surveys
from consumers.notifications.waves import WaveScheduler
from consumers.notifications.worker import NotificationWorker
from lpt.kafka import make_producer
from lpt.settings import Settings
from schemas.topics import NOTIFICATIONS_REQUESTED

#: Wednesday 1 April 2026, 12:00 UTC (13:00 in London): the first day of 2026Q2.
Q2_NOON = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


async def run_worker(env: Env, settings: Settings) -> NotificationWorker:
    worker = NotificationWorker(
        settings, channels={"email": smtp_channel(env.smtp.port)}, clock=env.clock
    )
    await worker.start()
    try:
        await asyncio.wait_for(worker.run(asyncio.Event(), until_idle=True), 60)
    finally:
        await worker.stop()
    return worker


def invitations(env: Env, email: str) -> int:
    return sum(m["Subject"] == surveys.SUBJECT for m in env.smtp.inbox.to(email))


async def wave_counts(env: Env) -> dict[str, tuple[int, int, int]]:
    """Per wave: invited residents, invitation requests, personal links issued."""
    rows = await env.pool.fetch(
        """SELECT w.wave,
                  (SELECT count(*) FROM survey_invitations i WHERE i.wave = w.wave) AS invited,
                  (SELECT count(*) FROM survey_wave_notifications n WHERE n.wave = w.wave) AS reqs,
                  (SELECT count(*) FROM reply_tokens t JOIN survey_wave_notifications n
                     ON n.notification_id = t.message_id WHERE n.wave = w.wave) AS links
           FROM survey_waves w ORDER BY w.wave"""
    )
    return {r["wave"]: (r["invited"], r["reqs"], r["links"]) for r in rows}


async def test_worker_opens_each_quarter_wave_once(env: Env) -> None:
    settings = dataclasses.replace(env.settings, survey_auto_waves=True)
    people = await add_people(env.pool, settings, [(HULL, WARD_HULL)] * 3)

    await run_worker(env, settings)  # the clock says 10 March 2026: 2026Q1
    assert await wave_counts(env) == {"2026Q1": (3, 1, 3)}
    assert [invitations(env, p.email) for p in people] == [1, 1, 1]
    [invite] = [m for m in env.smtp.inbox.to(people[0].email) if m["Subject"] == surveys.SUBJECT]
    assert "/reply/" in invite.get_content()  # the personal link

    # Restarted in the same quarter, with a resident registered since: nothing is reopened
    # (late joiners are invited by running `lpt survey-wave` by hand).
    [late] = await add_people(env.pool, settings, [(HULL, WARD_HULL)])
    await run_worker(env, settings)
    assert await wave_counts(env) == {"2026Q1": (3, 1, 3)}
    assert [invitations(env, p.email) for p in people] == [1, 1, 1]
    assert invitations(env, late.email) == 0
    assert len(await read_topic(settings, NOTIFICATIONS_REQUESTED)) == 1

    # A new quarter, and two workers' schedulers reach it at the same moment: one opens it.
    env.clock.now = Q2_NOON
    producer = make_producer(settings)
    await producer.start()
    try:
        ticks = await asyncio.gather(
            *(WaveScheduler(env.pool, producer, settings, env.clock).tick() for _ in range(2))
        )
    finally:
        await producer.stop()
    assert ticks.count("2026Q2") == 1 and ticks.count(None) == 1
    await run_worker(env, settings)
    await run_worker(env, settings)  # and once more: still one link each
    assert await wave_counts(env) == {"2026Q1": (3, 1, 3), "2026Q2": (4, 1, 4)}
    assert [invitations(env, p.email) for p in [*people, late]] == [2, 2, 2, 1]


async def test_schedule_is_off_when_the_setting_says_so(env: Env) -> None:
    assert env.settings.survey_auto_waves is False
    [person] = await add_people(env.pool, env.settings, [(HULL, WARD_HULL)])
    worker = await run_worker(env, env.settings)
    assert worker.waves is None
    assert await wave_counts(env) == {}
    assert invitations(env, person.email) == 0
