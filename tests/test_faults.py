"""Fault tests (issue 6): the stream worker through crashes and outages, loopback only.

Each test runs ``lpt worker`` processes on a Kafka broker and a PostgreSQL cluster of the
module's own (``tests/faults_helpers.FaultStack``: the project's ``infra/`` scripts under
``.lpt/faults``, ports 29192/29193 and 25532), because restarting the shared test servers would
break every other test running beside them. Each ends with the same three checks:

* the PostgreSQL tables equal an independent oracle (``tests/streams_helpers.crime_oracle``:
  harm per res-9 cell, crimes per type and cell, out-of-area count; nothing lost, nothing
  counted twice);
* the stream worker's consumer groups have no lag left (as ``lpt wait-idle`` and the ops page
  see it);
* dead letters are accounted for: exactly the poison sent, none for good events.

Faults: SIGKILL during a backfill of the real police.uk sample (twice: while reading the input,
and while the scorer writes); the broker stopped and started during live traffic; PostgreSQL
stopped and started while the scorer writes through; poison on every input topic.

Select them with ``pytest -m faults`` or ``make test-faults``; they also run in ``make test``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import h3
import pytest

from lpt.geo import ForceArea
from lpt.kafka import (
    RawMessage,
    dead_letter_topic_name,
    make_producer,
    publish,
    publish_raw,
    topic_name,
)
from lpt.settings import Settings
from producers.police_uk import import_files
from producers.police_uk_rows import Encoder, parse_file
from schemas.common import EncryptedField, Location
from schemas.crime import CrimeReported
from schemas.engagement import DoorKnocked, SurveyAnswered
from schemas.envelope import Envelope
from schemas.registry import encode
from schemas.residents import ResidentRegistered
from schemas.topics import CRIME, DOORKNOCKS, RESIDENTS, SURVEYS, TopicSpec, event_key
from streams.cli import scorer_settled
from streams.lag import stream_groups
from tests.faults_helpers import (
    FaultStack,
    LiveProducer,
    Supervisor,
    input_progress,
    ops_view,
    read_topic,
    stream_lag,
    wait_idle_supervised,
)
from tests.streams_helpers import (
    CrimeOracle,
    cells,
    crime_oracle,
    force_row,
    oracle_differences,
    oracle_harm_weights,
)

pytestmark = pytest.mark.faults

HULL = (53.7445, -0.3328)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def faults(data_dir: Path) -> AsyncIterator[FaultStack]:
    """The module's own Kafka broker and PostgreSQL cluster, stopped at the end."""
    stack = FaultStack.create()
    async with stack.exclusive():
        await asyncio.to_thread(stack.reuse_kafka_jars)
        await asyncio.to_thread(stack.reset_kafka_data)
        try:
            await asyncio.to_thread(stack.start_kafka)
            await asyncio.to_thread(stack.start_postgres)
            await stack.prepare(data_dir)
            yield stack
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(stack.stop_kafka)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(stack.stop_postgres)


@pytest.fixture
async def scratch(faults: FaultStack) -> AsyncIterator[Settings]:
    """Own topics, consumer groups and database (copied from the reference-data template)."""
    settings = await faults.scratch("f")
    yield settings
    # A test that failed mid-outage must not leave the next one without servers.
    await asyncio.to_thread(faults.start_kafka)
    await asyncio.to_thread(faults.start_postgres)
    await faults.drop(settings)


# --------------------------------------------------------------------------- shared checks


async def until(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 120, poll: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(poll)


async def assert_no_lag(settings: Settings) -> None:
    """Nothing left to consume, as ``lpt wait-idle`` sees it (input group, then the internal
    stages) and as the ops page sees it (every group on the deployment's topics)."""
    lags = await stream_lag(settings)
    assert len(lags) == 3 and all(v == 0 for v in lags.values()), lags
    view = await ops_view(settings)
    groups = {g.group: g.total_lag for g in view.groups}
    assert set(lags) <= set(groups), groups
    assert all(v == 0 for v in groups.values()), groups


async def assert_tables_equal_oracle(settings: Settings, oracle: CrimeOracle) -> None:
    """Tables = oracle, right after the worker said it was idle. On a difference, the tables
    are read again for a while, so the failure says which bug it is: events lost or counted
    twice (the difference stays), or an idle signal given before the tables were final (the
    difference goes away)."""
    streamed = await cells(settings)
    assert len(streamed) >= len(oracle.crimes) > 100
    differences = oracle_differences(streamed, oracle)
    if differences:
        status = await scorer_status(settings)
        lags = await stream_lag(settings)
        deadline = time.monotonic() + 30
        later = differences
        while later and time.monotonic() < deadline:
            await asyncio.sleep(2)
            later = oracle_differences(await cells(settings), oracle)
        kind = (
            "persisting (lost or double-counted events)"
            if later
            else ("gone within 30 s (wait-idle said idle before the tables were final)")
        )
        raise AssertionError(
            f"{len(differences)} differences from the oracle, {kind}; at idle: lag {lags}, "
            f"scorer status {status}; e.g. {differences[:5]}"
        )
    force = await force_row(settings)
    total = sum(r["components"]["harm"] or 0 for r in streamed.values())
    assert force["components"]["harm"]["raw"] == pytest.approx(total, rel=1e-6)
    assert sum(force["extra"]["context"]["outside_force_area"].values()) == oracle.outside


async def scorer_status(settings: Settings) -> dict[str, Any]:
    conn = await asyncpg.connect(settings.dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM priority_status WHERE id = 'scorer'")
    finally:
        await conn.close()
    return dict(row) if row is not None else {}


async def assert_no_dead_letters(settings: Settings) -> None:
    for spec in (CRIME, RESIDENTS, SURVEYS, DOORKNOCKS):
        dead = await read_topic(settings, dead_letter_topic_name(spec, settings))
        assert not dead, [dict(r.headers) for r in dead[:3]]


async def table_rows(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM priority_areas"))
    finally:
        await conn.close()


def street_files(data_dir: Path, months: Sequence[str] | None = None) -> list[Path]:
    files = sorted((data_dir / "police_uk").glob("*-street.csv"))
    assert len(files) == 6
    return [f for f in files if months is None or f.name[:7] in months]


def encoded_rows(files: Sequence[Path], settings: Settings) -> list[RawMessage]:
    """The rows as the importer publishes them (key = res-9 cell), without the ledger."""
    area = ForceArea.from_settings(settings)
    encoder = Encoder()
    out: list[RawMessage] = []
    for path in files:
        parsed = parse_file(path, area)
        out.extend(encoder.encode(parsed, range(len(parsed))))
    return out


# --------------------------------------------------------------------------- 1. SIGKILL


async def test_sigkill_during_backfill_then_restart_matches_oracle(
    scratch: Settings, data_dir: Path, tmp_path: Path
) -> None:
    """The whole real sample (six months, ~52k rows) imported, then one worker backfills it and
    is SIGKILLed twice: while it reads the input (small input batches, so the kill lands
    between commits), and after the input was read while the internal stages and the scorer's
    PostgreSQL writes are still under way. Each time it is restarted at once on the same home
    (its RocksDB state as the kill left it)."""
    settings = dataclasses.replace(scratch, stream_input_batch=2000)
    files = street_files(data_dir)
    summary = await import_files(files, settings, progress=False)
    total = summary.published
    assert total > 50_000 and not summary.errors
    oracle = crime_oracle(files, data_dir, settings.force_boundary)

    sup = Supervisor(settings, tmp_path / "home")
    try:
        progress = 0

        async def input_midway() -> bool:
            nonlocal progress
            progress = await input_progress(settings)
            return progress >= total // 4

        await until(input_midway, "a quarter of the input committed")
        sup.kill()
        assert progress < total, "the first kill must land while the input is being read"
        sup.restart()

        input_group, stages_group, scorer_group = stream_groups(settings)

        async def scorer_writing() -> bool:
            lags = await stream_lag(settings)
            if lags[input_group] or await table_rows(settings) == 0:
                return False
            busy = lags[stages_group] or lags[scorer_group]
            assert busy or not await scorer_settled(settings), (
                "the pipeline went idle before the second kill"
            )
            return True

        await until(scorer_writing, "the input read and the scorer writing")
        sup.kill()
        sup.restart()

        await wait_idle_supervised(sup, timeout=240)
        assert not sup.restarts, sup.restarts  # only the test's own kills
        # Compared while the worker still runs (a late table write would still land).
        await assert_tables_equal_oracle(settings, oracle)
        await assert_no_lag(settings)
    finally:
        sup.stop()
    await assert_no_dead_letters(settings)


# --------------------------------------------------------------------------- 2. broker restart


async def test_broker_restart_during_live_traffic_exactly_once(
    faults: FaultStack, scratch: Settings, data_dir: Path, tmp_path: Path
) -> None:
    """Two months of the sample (2018-12, 2019-01: ~17k rows) sent live in small chunks while
    one worker runs; a third of the way in, the broker is stopped and started again (same log
    directory). The producer keeps sending (a chunk that fails is sent again: duplicates the
    stream must drop); the worker keeps running. Afterwards every row counts exactly once."""
    settings = scratch
    files = street_files(data_dir, ("2018-12", "2019-01"))
    messages = encoded_rows(files, settings)
    oracle = crime_oracle(files, data_dir, settings.force_boundary)
    assert len(messages) > 15_000
    chunks = [messages[i : i + 250] for i in range(0, len(messages), 250)]
    producer = LiveProducer(settings, topic_name(CRIME, settings), chunks, pause=0.15)

    sup = Supervisor(settings, tmp_path / "home")
    sending = asyncio.create_task(producer.run())
    try:
        pid = sup.worker.proc.pid

        async def a_third_in() -> bool:
            return producer.sent_chunks >= len(chunks) // 3 and await input_progress(settings) > 0

        await until(a_third_in, "a third of the traffic sent and the worker consuming")
        sent_before = producer.sent_chunks
        await asyncio.to_thread(faults.stop_kafka)
        await asyncio.sleep(2)
        await asyncio.to_thread(faults.start_kafka)
        await asyncio.wait_for(sending, 180)
        assert sent_before < len(chunks) == producer.sent_chunks  # traffic went on afterwards
        # At-least-once delivery: the chunks in flight around the outage sent once more, as a
        # producer that never saw their acknowledgements would. They must not count twice.
        again = LiveProducer(settings, producer.topic, chunks[sent_before - 4 : sent_before + 1])
        await again.run()
        await wait_idle_supervised(sup, timeout=240)
        # The worker rode the outage out: the same process, never restarted.
        assert not sup.restarts, sup.restarts
        assert sup.worker.proc.pid == pid and sup.alive
        await assert_tables_equal_oracle(settings, oracle)
        await assert_no_lag(settings)
    finally:
        sending.cancel()
        sup.stop()
    await assert_no_dead_letters(settings)


# --------------------------------------------------------------------------- 3. PostgreSQL restart


async def test_postgres_restart_during_write_through_matches_oracle(
    faults: FaultStack, scratch: Settings, data_dir: Path, tmp_path: Path
) -> None:
    """Two months (2018-10, 2018-11: ~17.8k rows) sent live; once the scorer has written rows,
    PostgreSQL is stopped (fast shutdown: open connections are cut) for a few seconds while
    traffic and processing go on, then started again. The worker either waits for it or exits
    and is restarted as a supervisor would; either way the tables end equal to the oracle."""
    settings = scratch
    files = street_files(data_dir, ("2018-10", "2018-11"))
    messages = encoded_rows(files, settings)
    oracle = crime_oracle(files, data_dir, settings.force_boundary)
    chunks = [messages[i : i + 250] for i in range(0, len(messages), 250)]
    producer = LiveProducer(settings, topic_name(CRIME, settings), chunks, pause=0.15)

    sup = Supervisor(settings, tmp_path / "home")
    sending = asyncio.create_task(producer.run())
    try:

        async def written() -> bool:
            return await table_rows(settings) > 0

        await until(written, "the scorer's first rows in PostgreSQL")
        sent_before = producer.sent_chunks
        await asyncio.to_thread(faults.stop_postgres)
        down_until = time.monotonic() + 4
        while time.monotonic() < down_until:  # the worker's exits are a supervisor's business
            sup.check()
            await asyncio.sleep(0.2)
        await asyncio.to_thread(faults.start_postgres)
        await asyncio.wait_for(sending, 180)
        assert sent_before < len(chunks) == producer.sent_chunks
        await wait_idle_supervised(sup, timeout=240)
        await assert_tables_equal_oracle(settings, oracle)
        await assert_no_lag(settings)
    finally:
        sending.cancel()
        sup.stop()
    await assert_no_dead_letters(settings)
    assert (await scorer_status(settings))["settled"] is True
    # Recorded for the report: whether the worker survived the outage or was restarted.
    print(f"postgres restart: worker restarts by the supervisor: {len(sup.restarts)}")


# --------------------------------------------------------------------------- 4. poison


@dataclasses.dataclass(frozen=True)
class Poison:
    spec: TopicSpec
    value: bytes
    #: the field the dead letter must name ("" when the bytes are not JSON at all)
    field: str
    #: text the reason must contain
    reason: str


def _contact(resident: str) -> EncryptedField:
    return EncryptedField(key_id=resident, nonce="0" * 24, ciphertext="c2VhbGVk")


def _point(i: int) -> tuple[float, float]:
    """Points spread over a few km of Hull: many res-9 cells, every partition."""
    return HULL[0] + 0.004 * (i % 7) - 0.012, HULL[1] + 0.006 * (i // 7 % 7) - 0.018


def _good_events() -> list[Envelope]:
    start = datetime(2026, 2, 1, tzinfo=UTC)
    types = ["Burglary", "Robbery", "Shoplifting", "Violence and sexual offences",
             "Anti-social behaviour", "Drugs", "Criminal damage and arson"]  # fmt: skip
    out: list[Envelope] = []
    for i in range(140):
        lat, lng = _point(i)
        out.append(
            CrimeReported(
                incident_id=f"F{i}",
                crime_type=types[i % len(types)],
                reported_by="Humberside Police",
                falls_within="Humberside Police",
                occurred_at=start + timedelta(days=i % 40),
                source="test",
                location=Location(lat=lat, lng=lng),
                location_text=f"On or near Fault Street {i % 9}",
            )
        )
    for i in range(60):
        lat, lng = _point(i % 3)  # three cells: 20 residents each (above the 10 shown)
        rid = f"resident{i:05d}"
        loc = Location(lat=lat, lng=lng)
        out.append(
            ResidentRegistered(
                resident_id=rid,
                postcode="HU1 1AA",
                location=loc,
                channels=["email"],
                contact=_contact(rid),
                age_band="25-34",
                consent_version="v1",
                occurred_at=start + timedelta(days=i % 30),
                source="test",
            )
        )
        out.append(
            SurveyAnswered(
                resident_id=rid,
                wave="2026Q1",
                location=loc,
                confidence=1 + i % 5,
                priorities=["burglary"],
                occurred_at=start + timedelta(days=30 + i % 5),
                source="test",
            )
        )
    for i in range(30):
        lat, lng = _point(i)
        out.append(
            DoorKnocked(
                officer_id="officer0001",
                postcode="HU1 1AA",
                address_ref=str(i),
                location=Location(lat=lat, lng=lng),
                outcome="spoke",
                occurred_at=start + timedelta(days=i),
                source="test",
            )
        )
    return out


def _without(event: Envelope, field: str) -> bytes:
    data = json.loads(encode(event))
    del data[field]
    return json.dumps(data).encode()


def _with(event: Envelope, **changes: Any) -> bytes:
    data = json.loads(encode(event))
    data.update(changes)
    return json.dumps(data).encode()


def _poison(good: Sequence[Envelope]) -> list[Poison]:
    """Per input topic: bytes that are not JSON, a required field missing, a field with an
    invalid value, and a valid event of another topic's type."""
    first = {type(e): e for e in reversed(good)}
    crime, reg = first[CrimeReported], first[ResidentRegistered]
    survey, knock = first[SurveyAnswered], first[DoorKnocked]
    garbage = b"\x00\xff{not json"
    wrong = "does not belong"
    return [
        Poison(CRIME, garbage, "", "not JSON"),
        Poison(CRIME, _without(crime, "crime_type"), "crime_type", "crime_type"),
        Poison(CRIME, _with(crime, location={"lat": 123.0, "lng": -0.3}), "location.lat", "lat"),
        Poison(CRIME, encode(survey), "type", wrong),
        Poison(RESIDENTS, garbage + b"r", "", "not JSON"),
        Poison(RESIDENTS, _without(reg, "resident_id"), "resident_id", "resident_id"),
        Poison(RESIDENTS, _with(reg, channels=[]), "channels", "channels"),
        Poison(RESIDENTS, encode(knock), "type", wrong),
        Poison(SURVEYS, garbage + b"s", "", "not JSON"),
        Poison(SURVEYS, _without(survey, "confidence"), "confidence", "confidence"),
        Poison(SURVEYS, _with(survey, confidence=9), "confidence", "confidence"),
        Poison(SURVEYS, encode(crime), "type", wrong),
        Poison(DOORKNOCKS, garbage + b"d", "", "not JSON"),
        Poison(DOORKNOCKS, _without(knock, "outcome"), "outcome", "outcome"),
        Poison(DOORKNOCKS, _with(knock, outcome="bribed"), "outcome", "outcome"),
        Poison(DOORKNOCKS, encode(reg), "type", wrong),
    ]


def _oracle_of(good: Sequence[Envelope], data_dir: Path) -> tuple[CrimeOracle, dict[str, Any]]:
    """Crime oracle of the good crimes, and per cell the registrations, addresses knocked and
    survey answers (count, mean confidence) the tables must show."""
    weights = oracle_harm_weights(data_dir)
    harm: dict[str, list[tuple[float, float]]] = defaultdict(list)
    crimes: dict[str, list[tuple[str, float]]] = defaultdict(list)
    registered: Counter[str] = Counter()
    knocked: Counter[str] = Counter()
    answers: dict[str, list[int]] = defaultdict(list)
    for e in good:
        assert getattr(e, "location", None) is not None
        cell = h3.cell_to_parent(h3.latlng_to_cell(e.location.lat, e.location.lng, 10), 9)  # type: ignore[attr-defined]
        t = e.occurred_at.timestamp()
        if isinstance(e, CrimeReported):
            crimes[cell].append((e.crime_type, t))
            if weights[e.crime_type]:
                harm[cell].append((weights[e.crime_type], t))
        elif isinstance(e, ResidentRegistered):
            registered[cell] += 1
        elif isinstance(e, DoorKnocked):
            knocked[cell] += 1
        elif isinstance(e, SurveyAnswered):
            answers[cell].append(e.confidence)
    as_of = max(e.occurred_at.timestamp() for e in good)
    oracle = CrimeOracle(dict(harm), dict(crimes), 0, as_of)
    return oracle, {"registered": registered, "knocked": knocked, "answers": answers}


async def test_poison_on_every_input_topic_goes_to_dead_letters(
    faults: FaultStack, scratch: Settings, data_dir: Path, tmp_path: Path
) -> None:
    """Good events on all four input topics with poison between them (on the good events'
    partitions). The worker stays up, every poison message is on its topic's dead-letter
    topic with a reason naming the field, nothing else is, and the good events are all in the
    tables."""
    settings = scratch
    good = _good_events()
    poison = _poison(good)
    half = len(good) // 2
    producer = make_producer(settings)
    await producer.start()
    sup = Supervisor(settings, tmp_path / "home")
    try:
        await publish(producer, good[:half:2] + good[half::2], settings)  # every topic gets some
        by_topic: dict[str, list[RawMessage]] = defaultdict(list)
        keys = [event_key(e) for e in good]
        for i, p in enumerate(poison):
            by_topic[p.spec.name].append((keys[i * 7 % len(keys)], p.value))
        specs = {p.spec.name: p.spec for p in poison}
        for name, raw in by_topic.items():
            await publish_raw(producer, topic_name(specs[name], settings), raw)
        await publish(producer, good[1:half:2] + good[half + 1 :: 2], settings)
        await wait_idle_supervised(sup, timeout=120)
        assert not sup.restarts and sup.alive, sup.restarts  # bad input never stops it
        await _check_poison_run(settings, good, poison, data_dir)
    finally:
        await producer.stop()
        sup.stop()


async def _check_poison_run(
    settings: Settings, good: Sequence[Envelope], poison: Sequence[Poison], data_dir: Path
) -> None:
    # Dead letters: exactly the poison, each on its own topic's DLQ, reason naming the field.
    for spec in (CRIME, RESIDENTS, SURVEYS, DOORKNOCKS):
        sent = [p for p in poison if p.spec is spec]
        dead = await read_topic(settings, dead_letter_topic_name(spec, settings))
        assert len(dead) == len(sent) == 4, spec.name
        assert Counter(r.value for r in dead) == Counter(p.value for p in sent), spec.name
        for record in dead:
            headers = {k: v.decode() for k, v in record.headers}
            p = next(p for p in sent if p.value == record.value)
            assert headers["dlq.topic"] == topic_name(spec, settings)
            assert headers["dlq.field"] == p.field, (spec.name, headers)
            assert p.reason in headers["dlq.reason"], (spec.name, headers)
            if p.field:
                assert headers["dlq.reason"].startswith(p.field.split(".")[0]), headers
            assert headers["dlq.offset"].isdigit() and headers["dlq.partition"].isdigit()
    view = await ops_view(settings)
    counted = {t.catalogue_name: t.dead_letters for t in view.topics if t.dead_letter_name}
    for spec in (CRIME, RESIDENTS, SURVEYS, DOORKNOCKS):
        assert counted[spec.name] == 4, counted

    # The good events, all of them and once each.
    oracle, extra = _oracle_of(good, data_dir)
    streamed = await cells(settings)
    differences = oracle_differences(streamed, oracle, rel=1e-9)
    assert not differences, differences[:5]
    registered = {c: r["engagement"]["registered"] for c, r in streamed.items()}
    assert {c: n for c, n in registered.items() if n} == dict(extra["registered"])
    knocked = {c: r["engagement"]["addresses_visited"] for c, r in streamed.items()}
    assert {c: n for c, n in knocked.items() if n} == dict(extra["knocked"])
    for cell, confidences in extra["answers"].items():
        survey = streamed[cell]["survey"]
        assert survey is not None and survey["responses"] == len(confidences) == 20
        assert survey["mean_confidence"] == pytest.approx(
            sum(confidences) / len(confidences), abs=1e-3
        )
    await assert_no_lag(settings)
