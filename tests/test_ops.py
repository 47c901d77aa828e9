"""Operations on real Kafka and PostgreSQL: /metrics, consumer lag, dead letters and replay,
worker registry, access to the ops page, trace ids through the gateway."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from api.ops.state import OPS
from lpt.deadletter import send_dead_letter_and_wait
from lpt.kafka import make_producer, publish_raw, topic_name
from lpt.metrics import REGISTRY
from lpt.metrics_server import WorkerMetricsServer
from lpt.settings import Settings
from schemas.topics import CRIME, NOTIFICATIONS_REQUESTED, RESIDENTS, TopicSpec
from tests.streams_helpers import ROOT, worker_env
from tests.test_gateway import crime
from tests.web_helpers import KEY_A, running_app, web_settings

TOKEN = "ops-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def ops_settings(settings: Settings, **overrides: Any) -> Settings:
    return web_settings(settings, ops_token=TOKEN, **overrides)


@pytest.fixture
async def ops(isolated_settings: Settings) -> AsyncIterator[tuple[TestClient[Any, Any], Settings]]:
    settings = ops_settings(isolated_settings)
    async with running_app(settings) as client:
        client.server.app[OPS].sampler.reuse_s = 0.0  # every request sees a fresh snapshot
        yield client, settings


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def of_group(
    found: dict[str, list[tuple[dict[str, str], float]]], name: str, group: str
) -> dict[int, float]:
    return {
        int(labels["partition"]): value
        for labels, value in found.get(name, [])
        if labels.get("consumergroup") == group
    }


async def put_messages(settings: Settings, spec: TopicSpec, n: int) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        await publish_raw(
            producer, topic_name(spec, settings), [(f"k{i}".encode(), b"{}") for i in range(n)]
        )
    finally:
        await producer.stop()


async def commit(settings: Settings, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def end_offsets(settings: Settings, spec: TopicSpec) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        name = topic_name(spec, settings)
        tps = [TopicPartition(name, p) for p in range(spec.partitions or settings.topic_partitions)]
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


# -- /metrics and lag ---------------------------------------------------------------------


async def test_metrics_serves_every_catalogue_name_and_routes_not_paths(ops: Any) -> None:
    client, _ = ops
    await client.get("/ops/dead-letters/crime.incidents")  # 401, but timed by route
    resp = await client.get("/metrics?scope=local")
    assert resp.status == 200 and resp.content_type == "text/plain"
    text = await resp.text()
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    for family in REGISTRY.collect():
        wanted = family.name + ("_total" if family.type == "counter" else "")
        assert wanted in declared or family.name in declared, family.name
    routes = {
        labels["route"]
        for labels, _ in samples(text)["lpt_http_request_seconds_count"]
        if labels["status"] == "401"
    }
    assert "/ops/dead-letters/{topic}" in routes
    assert not any("crime.incidents" in r for r in routes)
    assert samples(text)["lpt_kafka_up"][0][1] == 1.0


async def test_lag_in_messages_and_seconds_then_zero_when_caught_up(ops: Any) -> None:
    client, settings = ops
    await put_messages(settings, CRIME, 12)
    ends = await end_offsets(settings, CRIME)
    group = f"{settings.topic_prefix}lag-test"
    behind = {tp: max(0, end - 1) for tp, end in ends.items()}  # one behind where there is any
    await commit(settings, group, behind)
    await asyncio.sleep(1.2)  # so the oldest unconsumed message is more than a second old

    found = samples(await (await client.get("/metrics")).text())
    lag = of_group(found, "kafka_consumergroup_lag", group)
    seconds = of_group(found, "kafka_consumergroup_lag_seconds", group)
    expected = {tp.partition: ends[tp] - behind[tp] for tp in ends}
    assert lag == expected and sum(lag.values()) == sum(1 for e in ends.values() if e)
    for partition, messages in expected.items():
        if messages:
            assert 1.0 <= seconds[partition] < 120, seconds
        else:
            assert seconds[partition] == 0.0
    current = of_group(found, "kafka_consumergroup_current_offset", group)
    assert current == {tp.partition: float(o) for tp, o in behind.items()}

    first = await (await client.get("/api/v1/ops", headers=AUTH)).json()
    groups = {g["group"]: g for g in first["consumer_groups"]}
    assert groups[group]["lag"] == sum(expected.values())
    assert groups[group]["lag_seconds"] >= 1.0
    assert len(groups[group]["partitions"]) == settings.topic_partitions

    await asyncio.sleep(1.0)
    await commit(settings, group, ends)  # caught up
    found = samples(await (await client.get("/metrics")).text())
    assert set(of_group(found, "kafka_consumergroup_lag", group).values()) == {0.0}
    assert set(of_group(found, "kafka_consumergroup_lag_seconds", group).values()) == {0.0}
    later = await (await client.get("/api/v1/ops", headers=AUTH)).json()
    groups = {g["group"]: g for g in later["consumer_groups"]}
    crime_topic = topic_name(CRIME, settings)
    assert groups[group]["lag"] == 0 and later["rate_window_s"] >= 1.0
    assert groups[group]["consume_rate"][crime_topic] > 0  # committed offsets moved
    html = await (await client.get("/ops", headers=AUTH)).text()
    assert f'data-group-lag="{group}">0<' in html


# -- dead letters ------------------------------------------------------------------------


async def _dead_letter(settings: Settings, spec: TopicSpec, key: bytes, value: bytes) -> int:
    """Publish to the input topic, read it back and dead-letter it as a worker does."""
    producer = make_producer(settings)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic_name(spec, settings), value, key=key)
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
        await consumer.start()
        try:
            tp = TopicPartition(meta.topic, meta.partition)
            consumer.assign([tp])
            consumer.seek(tp, meta.offset)
            record: ConsumerRecord[bytes, bytes] = await consumer.getone()
        finally:
            await consumer.stop()
        await send_dead_letter_and_wait(
            producer,
            settings,
            spec,
            record,
            "crime_type: not a police.uk type",
            "crime_type",
            "test-consumer",
        )
        return int(meta.offset)
    finally:
        await producer.stop()


async def test_dead_letter_inspected_and_replayed_once_onto_its_topic(ops: Any) -> None:
    client, settings = ops
    bad = json.dumps(crime("HP-DLQ", crime_type="Burglary!!")).encode()
    original_offset = await _dead_letter(settings, CRIME, b"cell-1", bad)

    listing = await (
        await client.get("/api/v1/ops/dead-letters/crime.incidents", headers=AUTH)
    ).json()
    assert listing["total"] == 1
    (entry,) = listing["dead_letters"]
    assert entry["reason"].startswith("crime_type") and entry["field"] == "crime_type"
    assert entry["original"]["topic"] == topic_name(CRIME, settings)
    assert entry["original"]["offset"] == original_offset and entry["replay"] is None

    path = f"/api/v1/ops/dead-letters/crime.incidents/{entry['partition']}/{entry['offset']}"
    detail = await (await client.get(path, headers=AUTH)).json()
    assert detail["payload_shown"] and "Burglary!!" in detail["payload"]  # no personal data
    assert detail["headers"]["dlq.consumer"] == "test-consumer"
    page = await (await client.get(path.replace("/api/v1", ""), headers=AUTH)).text()
    assert "crime_type: not a police.uk type" in page and "Replay to its original topic" in page

    before = await end_offsets(settings, CRIME)
    resp = await client.post(path + "/replay", json={"note": "type list fixed"}, headers=AUTH)
    assert resp.status == 201, await resp.text()
    replay = (await resp.json())["replay"]
    assert replay["topic"] == topic_name(CRIME, settings) and replay["replayed_by"] == "ops-token"
    tp = TopicPartition(replay["topic"], replay["partition"])
    assert replay["offset"] == before[tp]  # appended to the original topic

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, replay["offset"])
        again = await consumer.getone()
    finally:
        await consumer.stop()
    assert (again.key, again.value) == (b"cell-1", bad)
    headers = dict(again.headers)
    assert headers["replayed_from"].decode().endswith(f":{entry['partition']}:{entry['offset']}")
    assert headers["trace_id"] == resp.headers["X-Trace-Id"].encode()  # the replay request's

    conn = await asyncpg.connect(settings.dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM ops_replays")
    finally:
        await conn.close()
    assert (
        row is not None and row["replayed_by"] == "ops-token" and row["note"] == "type list fixed"
    )
    assert (row["original_offset"], row["replayed_to_offset"]) == (
        original_offset,
        replay["offset"],
    )

    resp = await client.post(path + "/replay", headers=AUTH)
    assert resp.status == 409  # once only
    assert (await (await client.get(path, headers=AUTH)).json())["replay"]["offset"] == replay[
        "offset"
    ]
    metrics = samples(await (await client.get("/metrics?scope=local")).text())
    held = {labels["topic"]: v for labels, v in metrics["lpt_dead_letter_messages"]}
    assert held["crime.incidents"] == 1.0 and held["residents.lifecycle"] == 0.0


async def test_dead_letter_payload_of_personal_topics_shows_only_its_shape(ops: Any) -> None:
    client, settings = ops
    value = json.dumps(
        {
            "type": "resident.registered",
            "source": "intake",
            "postcode": "HU1 1AA",
            "ethnic_group": "white_british",
            "channels": ["email"],
        }
    ).encode()
    await _dead_letter(settings, RESIDENTS, b"r-1", value)
    listing = await (
        await client.get("/api/v1/ops/dead-letters/residents.lifecycle", headers=AUTH)
    ).json()
    (entry,) = listing["dead_letters"]
    path = f"/api/v1/ops/dead-letters/residents.lifecycle/{entry['partition']}/{entry['offset']}"
    detail = await (await client.get(path, headers=AUTH)).json()
    assert detail["payload_shown"] is False
    shape = json.loads(detail["payload"])
    assert shape["postcode"] == "<str>" and shape["type"] == "resident.registered"
    page = await (await client.get(path.replace("/api/v1", ""), headers=AUTH)).text()
    assert "HU1 1AA" not in page and "white_british" not in page


# -- access ------------------------------------------------------------------------------


async def test_ops_pages_need_the_admin_role_or_the_ops_token(isolated_settings: Settings) -> None:
    from api.officer.accounts import AccountStore
    from tests.test_officer_support import PASSWORD, officer_settings, served, session_for

    settings = officer_settings(isolated_settings, ops_token=TOKEN)
    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=2)
    try:
        store = AccountStore(pool)
        await store.create("ops.admin", "Ops Admin", "admin", password=PASSWORD)
        await store.create("ops.officer", "Ops Officer", "officer", password=PASSWORD)
    finally:
        await pool.close()
    replay = "/api/v1/ops/dead-letters/crime.incidents/0/0/replay"
    async with served(settings) as server:
        async with session_for(server, None) as anon:
            assert (await anon.get("/api/v1/ops")).status == 401
            page = await anon.get("/ops")
            assert page.status == 401 and page.content_type == "text/html"
            assert (
                await anon.get("/api/v1/ops", headers={"Authorization": "Bearer x"})
            ).status == 401
            assert (await anon.send("POST", replay, csrf=False)).status == 401
            assert (await anon.get("/api/v1/ops", headers=AUTH)).status == 200
            assert (await anon.get("/metrics")).status == 200  # open, like /healthz
        async with session_for(server, "ops.officer") as officer:
            assert (await officer.get("/api/v1/ops")).status == 403
            assert (await officer.get("/ops")).status == 403
        async with session_for(server, "ops.admin") as admin:
            assert (await admin.get("/api/v1/ops")).status == 200
            page = await admin.get("/ops")
            assert page.status == 200 and "Consumer lag" in await page.text()
            # State-changing with a session needs its CSRF token.
            assert (await admin.send("POST", replay, csrf=False)).status == 403
            assert (await admin.send("POST", replay)).status == 404  # allowed; no such letter
    no_token = officer_settings(isolated_settings)
    async with served(no_token) as server, session_for(server, None) as anon:
        assert (await anon.get("/api/v1/ops", headers=AUTH)).status == 401  # token unset


# -- workers -----------------------------------------------------------------------------


async def test_workers_register_serve_metrics_and_are_aggregated(ops: Any) -> None:
    client, settings = ops
    worker = WorkerMetricsServer(dataclasses.replace(settings, metrics_port=0), "test-worker")
    url = await worker.start()
    try:
        assert url is not None and url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            own = await resp.text()
        assert resp.status == 200 and "kafka_consumergroup_lag" in own

        overview = await (await client.get("/api/v1/ops", headers=AUTH)).json()
        (row,) = [w for w in overview["workers"] if w["name"] == worker.name]
        assert (row["kind"], row["health"], row["url"]) == ("test-worker", "up", url)

        text = await (await client.get("/metrics")).text()
        series = [ln.rsplit(" ", 1)[0] for ln in text.splitlines() if ln and ln[0] != "#"]
        assert len(series) == len(set(series))  # no series twice: each says its process
        types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
        assert len(types) == len(set(types))  # each family declared once
        found = samples(text)
        up = {labels["worker"]: v for labels, v in found["lpt_worker_up"]}
        assert up[worker.name] == 1.0
        processes = {labels.get("lpt_process") for labels, _ in found["lpt_kafka_up"]}
        assert processes == {"web", worker.name}  # the worker's own scrape, labelled
        local = samples(await (await client.get("/metrics?scope=local")).text())
        ages = {labels["worker"]: v for labels, v in local["lpt_worker_heartbeat_age_seconds"]}
        assert 0 <= ages[worker.name] < 10  # for alerts when Prometheus scrapes workers itself
    finally:
        await worker.stop()
    overview = await (await client.get("/api/v1/ops", headers=AUTH)).json()
    (row,) = [w for w in overview["workers"] if w["name"] == worker.name]
    assert row["health"] == "stopped"
    found = samples(await (await client.get("/metrics")).text())
    assert worker.name not in {labels.get("lpt_process") for labels, _ in found["lpt_kafka_up"]}


async def test_notification_worker_process_serves_metrics_aggregated_by_the_web(
    ops: Any, tmp_path: Path
) -> None:
    """``lpt notify`` as a real process: registered as kind ``notifications``, its own counters
    (here a dead letter it wrote) reach the web service's /metrics under its process label,
    and a clean stop shows as ``stopped``."""
    client, settings = ops
    env = worker_env(settings, tmp_path)
    env.update(
        LPT_MASTER_KEY_FILE=str(settings.master_key_file),
        LPT_LINK_KEY_FILE=str(tmp_path / "link.key"),
        LPT_SURVEY_AUTO_WAVES="0",
        LPT_METRICS_PORT="0",
        LPT_METRICS_HOST="127.0.0.1",
    )
    log_path = tmp_path / "notify.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lpt.cli", "notify"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        producer = make_producer(settings)
        await producer.start()
        try:
            await producer.send_and_wait(
                topic_name(NOTIFICATIONS_REQUESTED, settings), b"not json", key=b"bad"
            )
        finally:
            await producer.stop()
        name = None
        dead: dict[str, float] = {}
        for _ in range(120):  # up to 30 s: start-up, registration, the dead letter
            assert proc.poll() is None, log_path.read_text()[-2000:]
            overview = await (await client.get("/api/v1/ops", headers=AUTH)).json()
            mine = [w for w in overview["workers"] if w["kind"] == "notifications"]
            if mine:
                name = mine[0]["name"]
                found = samples(await (await client.get("/metrics")).text())
                dead = {
                    labels.get("lpt_process", ""): v
                    for labels, v in found.get("lpt_dead_letters_total", [])
                    if labels["topic"] == NOTIFICATIONS_REQUESTED.name
                }
                if dead.get(name):
                    break
            await asyncio.sleep(0.25)
        assert name is not None, "the notification worker never registered"
        assert mine[0]["health"] == "up" and mine[0]["url"].startswith("http://127.0.0.1:")
        assert dead[name] == 1.0, dead  # counted in the worker process, labelled with it
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    overview = await (await client.get("/api/v1/ops", headers=AUTH)).json()
    (row,) = [w for w in overview["workers"] if w["name"] == name]
    assert row["health"] == "stopped"


# -- tracing -----------------------------------------------------------------------------


async def test_trace_id_from_http_request_reaches_the_kafka_headers(
    isolated_settings: Settings,
) -> None:
    settings = web_settings(isolated_settings)
    async with running_app(settings) as client:
        resp = await client.post(
            "/api/v1/ingest/events",
            json={"events": [crime("HP-TRACE")]},
            headers={"X-API-Key": KEY_A, "X-Trace-Id": "trace-from-crime-system-1"},
        )
        assert resp.status == 202 and resp.headers["X-Trace-Id"] == "trace-from-crime-system-1"
        fresh = await client.get("/healthz")
        assert len(fresh.headers["X-Trace-Id"]) == 32  # a new one when none is given
    consumer = AIOKafkaConsumer(
        topic_name(CRIME, settings),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 10)
    finally:
        await consumer.stop()
    assert dict(record.headers)["trace_id"] == b"trace-from-crime-system-1"


async def test_replay_refuses_unknown_topics_and_offsets(ops: Any) -> None:
    client, _ = ops
    assert (
        await client.get("/api/v1/ops/dead-letters/priority.changed", headers=AUTH)
    ).status == 404
    assert (
        await client.get("/api/v1/ops/dead-letters/crime.incidents/0/99", headers=AUTH)
    ).status == 404
    resp = await client.post("/api/v1/ops/dead-letters/crime.incidents/0/99/replay", headers=AUTH)
    assert resp.status == 404
