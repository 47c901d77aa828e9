"""Status page and health endpoints on real Kafka and PostgreSQL."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from lpt.kafka import dead_letter_topic_name, topic_name
from lpt.settings import Settings
from schemas.topics import ALL_TOPICS, CRIME
from tests.test_gateway import crime
from tests.web_helpers import KEY_A, running_app, web_settings


async def test_status_lists_topics_counts_dead_letters_and_group_lag(
    isolated_settings: Settings,
) -> None:
    settings = web_settings(isolated_settings)
    crime_topic = topic_name(CRIME, settings)
    async with running_app(settings) as client:
        batch = {"events": [crime(f"HP-{n}") for n in range(3)]}
        resp = await client.post("/api/v1/ingest/events", json=batch, headers={"X-API-Key": KEY_A})
        assert resp.status == 202

        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(dead_letter_topic_name(CRIME, settings), b"bad message")
        finally:
            await producer.stop()

        group = f"{settings.topic_prefix}status-test-group"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(crime_topic, p) for p in range(settings.topic_partitions)]
            consumer.assign(tps)
            await consumer.commit({tp: 0 for tp in tps})  # committed nothing consumed: lag 3
        finally:
            await consumer.stop()

        resp = await client.get("/api/v1/status")
        assert resp.status == 200
        status: dict[str, Any] = await resp.json()
        topics = {t["catalogue_name"]: t for t in status["topics"]}
        assert set(topics) == {spec.name for spec in ALL_TOPICS}
        assert topics["crime.incidents"]["messages"] == 3
        assert topics["crime.incidents"]["partitions"] == settings.topic_partitions
        assert topics["crime.incidents"]["dead_letters"] == 1
        assert topics["residents.lifecycle"]["messages"] == 0
        assert topics["residents.lifecycle"]["dead_letters"] == 0
        assert topics["priority.changed"]["dead_letters"] is None  # no dead-letter topic
        groups = {g["group"]: g for g in status["consumer_groups"]}
        assert groups[group]["lag"] == 3
        assert groups[group]["lag_by_topic"] == {crime_topic: 3}

        page = await client.get("/")
        assert page.status == 200 and page.content_type == "text/html"
        html = await page.text()
        assert 'name="viewport"' in html and "<script" not in html
        assert crime_topic in html and group in html
        row = html[html.index(crime_topic) : html.index("</tr>", html.index(crime_topic))]
        assert '<td class="n">3</td>' in row  # its message count
        assert '<span class="warn">1</span>' in row  # its dead letter


async def test_health_and_readiness(isolated_settings: Settings) -> None:
    async with running_app(web_settings(isolated_settings)) as client:
        resp = await client.get("/healthz")
        assert (resp.status, await resp.json()) == (200, {"status": "ok"})
        resp = await client.get("/readyz")
        body = await resp.json()
        assert resp.status == 200 and body["checks"] == {"kafka": "ok", "postgres": "ok"}
        resp = await client.get("/no/such/page")
        assert resp.status == 404 and (await resp.json())["status"] == 404
        resp = await client.get("/api/v1/ingest/events")
        assert resp.status == 405 and (await resp.json())["status"] == 405
