"""The stream worker on real Kafka and PostgreSQL, as ``lpt worker`` processes.

* the oracle: harm per res-9 cell from the real police.uk sample equals an independent batch
  computation over the CSV rows (no code shared with ``streams/``);
* semantics: duplicates, updates that move an incident to another partition, stale versions,
  dead letters, near-repeat rings across partitions, small-number suppression, change events;
* robustness on one synthetic data set published while a worker runs ("live"): a replay from
  the start, a worker killed with SIGKILL mid-stream and restarted, and two workers splitting the
  partitions all end with the same tables.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import random
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h3
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from lpt.geo import ForceArea
from lpt.kafka import dead_letter_topic_name, make_producer, publish, publish_raw, topic_name
from lpt.scratch import drop_database
from lpt.settings import Settings
from schemas.common import EncryptedField, Location
from schemas.crime import CrimeReported, CrimeUpdated
from schemas.engagement import DoorKnocked, SurveyAnswered
from schemas.envelope import Envelope
from schemas.priority import OfficerAlert, PriorityChanged
from schemas.registry import decode
from schemas.residents import ResidentOptedOut, ResidentRegistered
from schemas.topics import CRIME, OFFICER_ALERTS, PRIORITY_CHANGED
from streams.source import input_group
from tests.streams_helpers import (
    ROOT,
    Worker,
    cells,
    comparable,
    force_row,
    new_database,
    wait_idle,
    with_app,
    worker_env,
)

HULL = (53.7445, -0.3328)
DAY = 86400.0


# --------------------------------------------------------------------------- the oracle


def _oracle_harm(
    data_dir: Path, boundary: Path
) -> tuple[dict[str, list[tuple[float, float]]], int]:
    """Independent batch computation over the CSV rows: {res-9 cell: [(weight, t), ...]} and the
    number of located rows outside the force area. Weights straight from the shared file."""
    weights: dict[str, float] = {}
    with open(
        data_dir / "harm_weights" / "cchi2026_days_by_policeuk_crime_type_national.csv"
    ) as fh:
        for row in csv.DictReader(fh):
            weights[row["crime_type"]] = float(row["cchi_days"])
    for excluded in ("Drugs", "Possession of weapons", "Anti-social behaviour"):
        weights[excluded] = 0.0
    area = ForceArea.load(boundary)
    rows = []
    for path in sorted((data_dir / "police_uk").glob("*-street.csv")):
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows.extend(r for r in csv.DictReader(fh) if r["Latitude"] and r["Longitude"])
    inside = area.contains(
        [float(r["Latitude"]) for r in rows], [float(r["Longitude"]) for r in rows]
    ).tolist()
    per_cell: dict[str, list[tuple[float, float]]] = defaultdict(list)
    outside = 0
    for r, ok in zip(rows, inside, strict=True):
        if not ok:
            outside += 1
            continue
        w = weights[r["Crime type"]]
        if w == 0:
            continue
        cell = h3.cell_to_parent(
            h3.latlng_to_cell(float(r["Latitude"]), float(r["Longitude"]), 10), 9
        )
        y, m = (int(x) for x in r["Month"].split("-"))
        per_cell[cell].append((w, datetime(y, m, 15, tzinfo=UTC).timestamp()))
    return per_cell, outside


async def test_oracle_streamed_harm_equals_batch_computation(
    isolated_settings: Settings, data_dir: Path, tmp_path: Path
) -> None:
    from producers.police_uk import import_files
    from reference.loaders import load_reference

    settings = isolated_settings
    await load_reference(settings, data_dir, progress=False)
    files = sorted((data_dir / "police_uk").glob("*-street.csv"))
    summary = await import_files(files, settings, progress=False)
    assert summary.published > 50_000
    worker = Worker(settings, tmp_path / "home")
    try:
        await wait_idle(settings, [worker], timeout=240)
    finally:
        worker.stop()
    streamed = await cells(settings)
    expected, outside = _oracle_harm(data_dir, settings.force_boundary)

    half_life = 90 * DAY
    checked = 0
    for cell, contributions in expected.items():
        row = streamed.get(cell)
        assert row is not None, f"cell {cell} with harm missing from the stream's table"
        t_now = datetime.fromisoformat(row["as_of"].replace("Z", "+00:00")).timestamp()
        want = sum(w * 2 ** (-(t_now - t) / half_life) for w, t in contributions)
        got = row["components"]["harm"]
        assert got == pytest.approx(want, rel=1e-6), cell
        checked += 1
    with_harm = {c for c, r in streamed.items() if (r["components"]["harm"] or 0) > 0}
    assert with_harm == set(expected)
    assert checked > 2000
    assert {r["as_of"] for r in streamed.values()} == {"2022-01-15T00:00:00Z"}

    # Roll-ups add up, outside-the-area crimes are counted at force level only.
    force = await force_row(settings)
    total = sum(r["components"]["harm"] or 0 for r in streamed.values())
    assert force["components"]["harm"]["raw"] == pytest.approx(total, rel=1e-6)
    assert sum(force["extra"]["context"]["outside_force_area"].values()) == outside
    las = await cells(settings, "local_authority")
    assert {"E06000010", "E06000011", "E06000012", "E06000013"} <= set(las)  # Humberside's four
    assert sum(r["components"]["harm"] or 0 for r in las.values()) <= total * (1 + 1e-9)
    hull = las["E06000010"]
    assert hull["components"]["deprivation"] is not None
    assert any(r["components"]["deprivation"] is not None for r in streamed.values())
    assert await cells(settings, "ward")
    top = min(streamed.values(), key=lambda r: r["rank"])
    assert top["reasons"] and top["reasons"][0]["data_date"] and top["actions"]
    assert top["streets"][0]["street"].startswith("On or near ")


# --------------------------------------------------------------------------- semantics


def _crime(incident: str, crime_type: str, lat: float, lng: float, day: int, **kw: Any) -> Any:
    model = CrimeUpdated if kw.get("version", 1) > 1 else CrimeReported
    return model(
        incident_id=incident,
        crime_type=crime_type,
        reported_by="Humberside Police",
        falls_within="Humberside Police",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=day),
        source="test",
        location=Location(lat=lat, lng=lng),
        location_text=kw.pop("street", "On or near Test Street"),
        **kw,
    )


def _contact(resident: str) -> EncryptedField:
    return EncryptedField(key_id=resident, nonce="0" * 24, ciphertext="c2VhbGVk")


def _far_cell(lat: float, lng: float, partitions: int) -> tuple[float, float]:
    """A point ~1 km away whose res-9 cell lands on another partition (of input and cells)."""
    from streams.items import partition_for

    home = h3.cell_to_parent(h3.latlng_to_cell(lat, lng, 10), 9)
    for k in range(1, 200):
        la, ln = lat + 0.001 * k, lng + 0.0013 * k
        cell = h3.cell_to_parent(h3.latlng_to_cell(la, ln, 10), 9)
        if h3.grid_distance(home, cell) > 2 and partition_for(cell, partitions) != partition_for(
            home, partitions
        ):
            return la, ln
    raise AssertionError("no far cell found")


async def _consume_all(settings: Settings, topic: str, timeout: float = 5.0) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch and out:
                break
            for records in batch.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


async def test_duplicates_updates_dead_letters_near_repeat_and_suppression(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings
    lat, lng = HULL
    far_lat, far_lng = _far_cell(lat, lng, settings.topic_partitions)
    home = h3.cell_to_parent(h3.latlng_to_cell(lat, lng, 10), 9)
    far = h3.cell_to_parent(h3.latlng_to_cell(far_lat, far_lng, 10), 9)
    robbery = _crime("INC-1", "Robbery", lat, lng, 0)
    burglary = _crime("INC-2", "Burglary", lat, lng, 1)
    moved = _crime("INC-1", "Shoplifting", far_lat, far_lng, 0, version=2)  # other partition
    stale = _crime("INC-1", "Robbery", lat, lng, 0, event_id=uuid.uuid4())  # v1 after v2
    drugs = _crime("INC-3", "Drugs", lat, lng, 2)
    asb = _crime("INC-4", "Anti-social behaviour", lat, lng, 2)
    respondents = [f"resident{i:04d}" for i in range(19)]
    events: list[Envelope] = [robbery, robbery, burglary, burglary, moved, stale, drugs, asb]
    # 9 answers in the home cell (suppressed), 10 in the far cell (shown)
    for i, rid in enumerate(respondents):
        la, ln = (lat, lng) if i < 9 else (far_lat, far_lng)
        events.append(
            SurveyAnswered(
                resident_id=rid,
                wave="2026Q1",
                location=Location(lat=la, lng=ln),
                confidence=2 if i < 9 else 4,
                priorities=["burglary"],
                occurred_at=datetime(2026, 1, 3, tzinfo=UTC),
                source="test",
            )
        )
    reg = ResidentRegistered(
        resident_id="resident9999",
        postcode="HU1 1AA",
        location=Location(lat=lat, lng=lng),
        channels=["email"],
        contact=_contact("resident9999"),
        age_band="25-34",
        consent_version="v1",
        occurred_at=datetime(2026, 1, 2, tzinfo=UTC),
        source="test",
    )
    events += [reg, reg]
    producer = make_producer(settings)
    await producer.start()
    try:
        await publish(producer, events, settings)
        crime_topic = topic_name(CRIME, settings)
        await publish_raw(
            producer,
            crime_topic,
            [(b"bad", b"not json"), (b"bad", json.dumps({"type": "crime.reported"}).encode())],
        )
        # a valid event of another topic's type does not belong here either
        await publish_raw(producer, crime_topic, [(b"x", events[8].model_dump_json().encode())])
    finally:
        await producer.stop()

    worker = Worker(settings, tmp_path / "home")
    try:
        await wait_idle(settings, [worker])
        table = await cells(settings)
        h, f = table[home], table[far]
        # Robbery v1 retracted by the v2 that moved it; duplicates and the stale v1 ignored.
        # as_of = 3 January (the surveys); burglary on the 2nd, the moved shoplifting on the 1st
        as_of = datetime.fromisoformat(h["as_of"].replace("Z", "+00:00"))
        assert as_of == datetime(2026, 1, 3, tzinfo=UTC)
        assert h["components"]["harm"] == pytest.approx(244.68 * 2 ** (-1 / 90), rel=1e-9)
        assert f["components"]["harm"] == pytest.approx(1.0 * 2 ** (-2 / 90), rel=1e-9)
        assert h["counts"] == {
            "Anti-social behaviour": {"30d": 1, "90d": 1},
            "Burglary": {"30d": 1, "90d": 1},
            "Drugs": {"30d": 1, "90d": 1},
        }
        # Near-repeat: the burglary's cell and its whole ring, whatever partition they are on.
        ring = h3.grid_ring(home, 1)
        assert h["components"]["near_repeat"] == pytest.approx(1.0)
        for c in ring:
            assert table[c]["components"]["near_repeat"] == pytest.approx(0.5)
        from streams.items import partition_for

        parts = {partition_for(c, settings.topic_partitions) for c in [home, *ring]}
        assert len(parts) > 1  # the ring really spans partitions
        # Small-number suppression: 9 answers hidden, 10 shown.
        assert h["survey"] is None and h["components"]["trust_gap"] is None
        assert f["survey"] == {
            "responses": 10,
            "mean_confidence": 4.0,
            "priority_share": {"burglary": 1.0},
        }
        assert h["engagement"]["registered"] == 1  # the duplicate registration counted once

        # Opt-out takes the registration away; the worker keeps going after bad input.
        producer = make_producer(settings)
        await producer.start()
        try:
            await publish(
                producer,
                [
                    ResidentOptedOut(
                        resident_id="resident9999",
                        location=Location(lat=lat, lng=lng),
                        occurred_at=datetime(2026, 1, 3, tzinfo=UTC),
                        source="test",
                    )
                ],
                settings,
            )
        finally:
            await producer.stop()
        await wait_idle(settings, [worker])
        assert (await cells(settings))[home]["engagement"]["registered"] == 0

        # The CLI shows the same table.
        env = worker_env(settings, tmp_path / "home")
        out = subprocess.run(
            [sys.executable, "-m", "lpt.cli", "cells", "--res", "9", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        listed = {r["cell"]: r for r in json.loads(out.stdout)}
        assert listed[home]["components"]["harm"] == pytest.approx(h["components"]["harm"])
        assert {"score", "rank", "components", "reasons", "as_of"} <= set(listed[home])
        idle = subprocess.run(
            [sys.executable, "-m", "lpt.cli", "wait-idle", "--timeout", "60"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert idle.returncode == 0, idle.stderr
    finally:
        worker.stop()

    dead = await _consume_all(settings, dead_letter_topic_name(CRIME, settings))
    assert len(dead) == 3
    reasons = [dict(r.headers) for r in dead]
    assert {h["dlq.topic"].decode() for h in reasons} == {topic_name(CRIME, settings)}
    assert all(h["dlq.offset"] and h["dlq.partition"] for h in reasons)
    assert any(h["dlq.reason"].startswith(b"not JSON") for h in reasons)
    assert any(h["dlq.field"] == b"type" for h in reasons)
    assert dead[0].value in (b"not json", json.dumps({"type": "crime.reported"}).encode()) or any(
        r.value == b"not json" for r in dead
    )
    changes = [
        decode(r.value)
        for r in await _consume_all(settings, topic_name(PRIORITY_CHANGED, settings))
    ]
    assert changes and all(isinstance(c, PriorityChanged) for c in changes)
    assert any(c.cell == home and c.change == "entered_top" and c.resolution == 9 for c in changes)
    alerts = [
        decode(r.value) for r in await _consume_all(settings, topic_name(OFFICER_ALERTS, settings))
    ]
    assert any(
        isinstance(a, OfficerAlert) and a.kind == "near_repeat" and a.cell == home for a in alerts
    )


# --------------------------------------------------------------------------- robustness


def _synthetic_events(seed: int = 11) -> list[Envelope]:
    """~15k events over ~150 cells of Hull: crimes (with duplicates, updates that move them and
    stale versions), registrations and opt-outs, survey answers, door knocks."""
    rng = random.Random(seed)
    start = datetime(2025, 10, 1, tzinfo=UTC)
    points = [
        (HULL[0] + rng.uniform(-0.03, 0.03), HULL[1] + rng.uniform(-0.05, 0.05)) for _ in range(60)
    ]
    types = ["Burglary", "Violence and sexual offences", "Robbery", "Shoplifting",
             "Anti-social behaviour", "Drugs", "Vehicle crime", "Criminal damage and arson"]  # fmt: skip
    out: list[Envelope] = []
    crimes: list[CrimeReported] = []
    for i in range(9000):
        la, ln = rng.choice(points)
        la += rng.uniform(-0.004, 0.004)
        ln += rng.uniform(-0.006, 0.006)
        c = CrimeReported(
            incident_id=f"S{i}",
            crime_type=rng.choice(types),
            reported_by="Humberside Police",
            falls_within="Humberside Police",
            source="test",
            occurred_at=start + timedelta(days=rng.randint(0, 120)),
            location=Location(lat=round(la, 6), lng=round(ln, 6)),
            location_text=f"On or near Street {rng.randint(1, 400)}",
        )
        crimes.append(c)
        out.append(c)
        if rng.random() < 0.04:
            out.append(c)  # duplicate delivery
    for c in rng.sample(crimes, 400):
        la, ln = rng.choice(points)
        out.append(
            CrimeUpdated(
                incident_id=c.incident_id,
                version=2,
                crime_type=rng.choice(types),
                reported_by="Humberside Police",
                falls_within="Humberside Police",
                source="test",
                occurred_at=c.occurred_at,
                location=Location(lat=la, lng=ln),
                location_text="On or near Moved Street",
            )
        )
        if rng.random() < 0.5:
            out.append(c.model_copy(update={"event_id": uuid.uuid4()}))  # stale v1 later
    for i in range(2000):
        la, ln = rng.choice(points)
        rid = f"resident{i:05d}"
        loc = Location(lat=la, lng=ln)
        out.append(
            ResidentRegistered(
                resident_id=rid,
                postcode="HU1 1AA",
                location=loc,
                channels=["email"],
                contact=_contact(rid),
                age_band=rng.choice(["16-24", "25-34", "50-64", "65+"]),
                ethnic_group=rng.choice(["white", "asian", "black", "mixed"]),
                consent_version="v1",
                occurred_at=start + timedelta(days=rng.randint(0, 100)),
                source="test",
            )
        )
        if rng.random() < 0.7:
            out.append(
                SurveyAnswered(
                    resident_id=rid,
                    wave="2025Q4",
                    location=loc,
                    confidence=rng.randint(1, 5),
                    priorities=rng.sample(["burglary", "drugs", "anti_social_behaviour"], 2),
                    occurred_at=start + timedelta(days=rng.randint(60, 110)),
                    source="test",
                )
            )
        if rng.random() < 0.05:
            out.append(
                ResidentOptedOut(
                    resident_id=rid,
                    location=loc,
                    source="test",
                    occurred_at=start + timedelta(days=115),
                )
            )
    for _ in range(1500):
        la, ln = rng.choice(points)
        out.append(
            DoorKnocked(
                officer_id="officer0001",
                postcode="HU1 1AA",
                address_ref=str(rng.randint(1, 600)),
                location=Location(lat=la, lng=ln),
                outcome=rng.choice(["spoke", "no_answer"]),
                occurred_at=start + timedelta(days=rng.randint(0, 120)),
                source="test",
            )
        )
    return out


@dataclasses.dataclass
class LiveRun:
    settings: Settings
    events: int
    table: dict[str, tuple[Any, ...]]
    raw: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def live_run(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    """The synthetic events published in three chunks *while* a worker runs."""
    from lpt.kafka import ensure_topics

    async def setup() -> LiveRun:
        base = dataclasses.replace(stack, topic_prefix=f"s{uuid.uuid4().hex[:8]}.")
        await ensure_topics(base)
        settings = with_app(await new_database(base), base.topic_prefix + "live")
        events = _synthetic_events()
        worker = Worker(settings, tmp_path_factory.mktemp("live"))
        try:
            producer = make_producer(settings)
            await producer.start()
            try:
                third = len(events) // 3
                for k in range(3):
                    await publish(
                        producer, events[k * third : (k + 1) * third if k < 2 else None], settings
                    )
                    await asyncio.sleep(1.0)
            finally:
                await producer.stop()
            await wait_idle(settings, [worker])
        finally:
            worker.stop()
        raw = await cells(settings)
        return LiveRun(settings, len(events), comparable(raw), raw)

    run = asyncio.run(setup())
    yield run
    asyncio.run(drop_database(run.settings))


@pytest.fixture
async def fresh_run(live_run: LiveRun) -> AsyncIterator[Settings]:
    """The live run's topics, a new app id (consumer group, internal topics) and database."""
    settings = with_app(
        await new_database(live_run.settings), live_run.settings.topic_prefix + uuid.uuid4().hex[:6]
    )
    yield settings
    await drop_database(settings)


def _assert_same_tables(got: dict[str, dict[str, Any]], live: LiveRun) -> None:
    assert len(live.table) > 100
    mine = comparable(got)
    assert set(mine) == set(live.table)
    diff = [c for c in live.table if mine[c] != live.table[c]]
    assert not diff, (
        f"{len(diff)} cells differ, e.g. {diff[0]}: {mine[diff[0]]} != {live.table[diff[0]]}"
    )


async def test_replay_from_the_start_equals_live_processing(
    live_run: LiveRun, fresh_run: Settings, tmp_path: Path
) -> None:
    assert any(r["components"]["near_repeat"] for r in live_run.raw.values())
    assert any(r["survey"] for r in live_run.raw.values())
    worker = Worker(fresh_run, tmp_path / "home")
    try:
        await wait_idle(fresh_run, [worker])
    finally:
        worker.stop()
    _assert_same_tables(await cells(fresh_run), live_run)


async def _committed_input(settings: Settings) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(input_group(settings.stream_app_id))
    finally:
        await admin.close()
    prefix = settings.topic_prefix
    return sum(
        m.offset
        for tp, m in offsets.items()
        if tp.topic.startswith(prefix)
        and m.offset > 0
        and not tp.topic.startswith(settings.stream_app_id)
    )


async def test_sigkill_mid_stream_then_restart_equals_uninterrupted(
    live_run: LiveRun, fresh_run: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    # Small input batches, so the kill can land between two of them.
    worker = Worker(dataclasses.replace(fresh_run, stream_input_batch=500), home)
    deadline = time.monotonic() + 120
    progress = 0
    while time.monotonic() < deadline:
        progress = await _committed_input(fresh_run)
        if progress > 0:
            break
        await asyncio.sleep(0.05)
    worker.kill()
    assert 0 < progress < live_run.events, "the kill must land mid-stream"
    restarted = Worker(fresh_run, home)  # same home: its RocksDB state as the kill left it
    try:
        await wait_idle(fresh_run, [restarted])
    finally:
        restarted.stop()
    _assert_same_tables(await cells(fresh_run), live_run)


async def test_two_workers_split_the_partitions_and_agree(
    live_run: LiveRun, fresh_run: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "home"  # one host: the workers take separate slot directories
    workers = [Worker(fresh_run, home, "w1"), Worker(fresh_run, home, "w2")]
    members: dict[str, set[int]] = {}
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=fresh_run.bootstrap_servers)
        await admin.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(members) < 2:
                await asyncio.sleep(0.5)
                members = await _assignment(admin, fresh_run)
        finally:
            await admin.close()
        await wait_idle(fresh_run, workers)
    finally:
        for w in workers:
            w.stop()
    assert len(members) == 2, members
    assert all(members.values()) and not set.intersection(*members.values())
    _assert_same_tables(await cells(fresh_run), live_run)


async def _assignment(admin: AIOKafkaAdminClient, settings: Settings) -> dict[str, set[int]]:
    """Partitions of the crime topic per member of the input group (its description)."""
    desc = await admin.describe_consumer_groups([input_group(settings.stream_app_id)])
    crime = topic_name(CRIME, settings)
    out: dict[str, set[int]] = {}
    for group in desc:
        for member in group.groups[0][5] if hasattr(group, "groups") else []:
            member_id, _, _, _, assignment = member[:5]
            parts = _decode_assignment(assignment).get(crime, set())
            out[member_id] = parts
    return {m: p for m, p in out.items() if p}


def _decode_assignment(raw: bytes) -> dict[str, set[int]]:
    import struct

    out: dict[str, set[int]] = {}
    if not raw:
        return out
    pos = 2  # version
    (n_topics,) = struct.unpack_from(">i", raw, pos)
    pos += 4
    for _ in range(n_topics):
        (length,) = struct.unpack_from(">h", raw, pos)
        pos += 2
        topic = raw[pos : pos + length].decode()
        pos += length
        (n_parts,) = struct.unpack_from(">i", raw, pos)
        pos += 4
        parts = struct.unpack_from(f">{n_parts}i", raw, pos)
        pos += 4 * n_parts
        out[topic] = set(parts)
    return out
