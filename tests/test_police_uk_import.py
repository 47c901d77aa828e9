"""The police.uk importer on the real Humberside files, real Kafka and real PostgreSQL.

Counts are taken independently with the csv module; published events are read back from the
topic with aiokafka and decoded with the event schema (so a drift between the importer's fast
JSON and ``CrimeReported`` fails here).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from lpt.geo import ForceArea
from lpt.kafka import topic_name
from lpt.settings import Settings
from producers.police_uk import import_files, import_sample_if_needed
from producers.police_uk_rows import event_id, parse_file
from schemas import decode
from schemas.crime import CrimeReported
from schemas.envelope import deterministic_id
from schemas.topics import CRIME

ROOT = Path(__file__).resolve().parent.parent
HUMBERSIDE_LAS = (
    "Kingston upon Hull",
    "East Riding of Yorkshire",
    "North Lincolnshire",
    "North East Lincolnshire",
)
#: LSOAs of rows "Reported by" Humberside Police that lie far outside its area.
FAR_AWAY_LSOAS = {"County Durham 064G", "Darlington 015A", "Barnsley 021F", "Doncaster 003G"}


def street_files(data_dir: Path) -> list[Path]:
    files = sorted((data_dir / "police_uk").glob("*-street.csv"))
    assert len(files) == 6
    return files


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


async def partitions(settings: Settings) -> list[TopicPartition]:
    topic = topic_name(CRIME, settings)
    return [TopicPartition(topic, p) for p in range(settings.topic_partitions)]


async def end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(await partitions(settings)))
    finally:
        await consumer.stop()


async def consume_all(settings: Settings) -> list[ConsumerRecord[bytes, bytes]]:
    """Every message on the crime topic, from the beginning to the current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        parts = await partitions(settings)
        consumer.assign(parts)
        end = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            batch = await consumer.getmany(timeout_ms=2000, max_records=20_000)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


def decode_crimes(records: list[ConsumerRecord[bytes, bytes]]) -> list[CrimeReported]:
    events = [decode(r.value) for r in records]
    assert all(isinstance(e, CrimeReported) for e in events)
    return events  # type: ignore[return-value]


async def test_six_files_counts_flags_keys_and_idempotent_reimport(
    isolated_settings: Settings, data_dir: Path
) -> None:
    files = street_files(data_dir)
    rows = [r for path in files for r in read_rows(path)]
    expected_types = collections.Counter(r["Crime type"] for r in rows)

    summary = await import_files(files, isolated_settings, progress=False)

    assert not summary.errors and not summary.skipped
    assert summary.rows == summary.published == len(rows)
    assert {t: c["published"] for t, c in summary.by_crime_type.items()} == expected_types

    records = await consume_all(isolated_settings)
    events = decode_crimes(records)  # every message is a valid CrimeReported
    assert collections.Counter(e.crime_type for e in events) == expected_types
    assert len({e.event_id for e in events}) == len(events) == len(rows)
    assert {e.source for e in events} == {"police-uk"}

    # Event time: the 15th of the row's month, 00:00 UTC; all these months carry 2011 LSOAs.
    for e in events[:500]:
        year, month = map(int, e.month.split("-"))  # type: ignore[union-attr]
        assert e.occurred_at == datetime(year, month, 15, tzinfo=UTC)
    assert {e.lsoa_vintage for e in events} == {2011}

    # Keys: the res-9 score cell, so one cell's events share a partition.
    for record, e in zip(records[:2000], events[:2000], strict=True):
        assert e.location is not None
        assert record.key == e.location.score_cell.encode()

    # Out of the force area: counted and flagged; far-away rows are out, Humberside rows in
    # (including the coastal ones the generalised boundary line cuts off).
    flagged = [e for e in events if not e.in_force_area]
    assert len(flagged) == summary.out_of_area
    far = [e for e in events if e.lsoa_name in FAR_AWAY_LSOAS]
    assert len(far) == 4 and not any(e.in_force_area for e in far)
    own = [e for e in events if (e.lsoa_name or "").startswith(HUMBERSIDE_LAS)]
    assert all(e.in_force_area for e in own)
    assert sum(e.lsoa_name == "East Riding of Yorkshire 005A" for e in own) > 100  # Bridlington

    # Rows with a Crime ID keep it; ASB rows without one get distinct generated ids.
    with_id = collections.Counter(r["Crime ID"] for r in rows if r["Crime ID"])
    assert collections.Counter(e.incident_id for e in events if e.incident_id in with_id) == (
        with_id
    )
    no_id = [r for r in rows if not r["Crime ID"]]
    generated = [e for e in events if e.incident_id.startswith("puk-")]
    assert len(generated) == len(no_id) == len({e.incident_id for e in generated})
    assert {e.crime_type for e in generated} == {"Anti-social behaviour"}

    conn = await asyncpg.connect(isolated_settings.dsn)
    try:
        runs = await conn.fetch(
            "SELECT file_name, rows_read, published, finished_at, flagged FROM import_runs"
        )
        ledger = await conn.fetchval("SELECT count(*) FROM ingest_ledger")
    finally:
        await conn.close()
    assert sorted(r["file_name"] for r in runs) == [p.name for p in files]
    assert all(r["finished_at"] is not None for r in runs)
    assert sum(r["published"] for r in runs) == ledger == len(rows)
    assert sum(json.loads(r["flagged"])["out_of_area"] for r in runs) == summary.out_of_area

    # A second import publishes nothing: the topic's end offsets do not move.
    before = await end_offsets(isolated_settings)
    again = await import_files(files, isolated_settings, progress=False)
    assert again.published == 0
    assert again.already_published == len(rows)
    assert await end_offsets(isolated_settings) == before


def test_generated_ids_are_stable_and_distinct(data_dir: Path, tmp_path: Path) -> None:
    """ASB rows without Crime ID: same ids when re-read, even with the rows in another order;
    identical rows stay distinct; the fast event id equals schemas' deterministic_id."""
    source = street_files(data_dir)[0]
    area = ForceArea.load(ROOT / "lpt" / "data" / "humberside_force_area.geojson")
    first = parse_file(source, area)
    second = parse_file(source, area)
    assert [r.event_id for r in first.records] == [r.event_id for r in second.records]

    rows = read_rows(source)
    asb = [r for r in rows if not r["Crime ID"]]
    identical = sum(n - 1 for n in collections.Counter(map(tuple, map(dict.values, asb))).values())
    assert identical > 100  # the real file has many identical ASB rows
    generated = {r.incident_id for r in first.records if r.incident_id.startswith("puk-")}
    assert len(generated) == len(asb)

    shuffled = tmp_path / source.name
    random.Random(7).shuffle(rows)
    with shuffled.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    reordered = parse_file(shuffled, area)
    assert {r.event_id for r in reordered.records} == {r.event_id for r in first.records}
    assert {r.incident_id for r in reordered.records} >= generated

    for parts in (("police-uk", "crime.reported", "2018-10", "abc"), ("é", "x\x1fy")):
        assert event_id(*parts) == str(deterministic_id(*parts))


def _malformed_csv(source: Path, out: Path) -> dict[str, object]:
    """A copy of real rows with malformed, unlocated and 2021-vintage rows mixed in."""
    rows = read_rows(source)[:60]
    header = list(rows[0])
    bad_month = dict(rows[0], Month="2019-13")
    bad_type = dict(rows[1], **{"Crime type": "Alien abduction"})
    bad_coords = dict(rows[2], Longitude="not-a-number")
    half_coords = dict(rows[3], Latitude="")
    unlocated = [
        dict(r, Longitude="", Latitude="", Location="No location", **{"LSOA code": ""})
        for r in rows[4:7]
    ]
    recent = dict(rows[7], Month="2024-03", **{"Crime ID": "x" * 64})
    good = rows[8:]
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerow(list(bad_month.values()))
        writer.writerow(list(good[0].values())[:5])  # a truncated line
        for r in (bad_type, bad_coords, half_coords, *unlocated, recent, *good):
            writer.writerow([r[h] for h in header])
    return {
        "skipped": {
            "bad_month": 1,
            "wrong_column_count": 1,
            "unknown_crime_type": 1,
            "bad_coordinates": 2,
        },
        "valid": len(unlocated) + 1 + len(good),
        "crime_types": collections.Counter(r["Crime type"] for r in (*unlocated, recent, *good)),
    }


async def test_cli_skips_malformed_rows_publishes_unlocated_and_reports_bad_files(
    isolated_settings: Settings, data_dir: Path, tmp_path: Path
) -> None:
    sample = tmp_path / "2019-02-mixed-street.csv"
    expected = _malformed_csv(street_files(data_dir)[4], sample)
    not_police = tmp_path / "not-police.csv"
    not_police.write_text("a,b,c\n1,2,3\n")
    env = dict(
        os.environ,
        LPT_DATABASE_URL=isolated_settings.dsn,
        LPT_TOPIC_PREFIX=isolated_settings.topic_prefix,
        LPT_KAFKA_BOOTSTRAP=isolated_settings.bootstrap_servers,
    )
    done = subprocess.run(
        [sys.executable, "-m", "lpt.cli", "import", "police-uk", str(not_police), str(sample)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # one file could not be imported ...
    assert "not-police.csv" in done.stdout and "NOT IMPORTED" in done.stdout
    assert "missing columns" in done.stdout
    for reason in expected["skipped"]:  # type: ignore[attr-defined]
        assert reason in done.stdout
    assert f"{sample.name}:2" in done.stdout  # the bad month's line is named

    records = await consume_all(isolated_settings)
    events = decode_crimes(records)  # ... the other one was
    assert len(events) == expected["valid"]
    assert collections.Counter(e.crime_type for e in events) == expected["crime_types"]
    unlocated = [e for e in events if e.location is None]
    assert len(unlocated) == 3
    assert all(e.in_force_area and e.lsoa_vintage is None for e in unlocated)
    keys = {r.key for r in records}
    assert all(e.incident_id.encode() in keys for e in unlocated)  # keyed by incident id
    recent = next(e for e in events if e.month == "2024-03")
    assert recent.lsoa_vintage == 2021
    assert recent.occurred_at == datetime(2024, 3, 15, tzinfo=UTC)

    conn = await asyncpg.connect(isolated_settings.dsn)
    try:
        run = await conn.fetchrow(
            "SELECT rows_read, published, skipped, flagged FROM import_runs WHERE file_name = $1",
            sample.name,
        )
    finally:
        await conn.close()
    assert run is not None
    assert json.loads(run["skipped"]) == expected["skipped"]
    assert run["published"] == expected["valid"]
    assert run["rows_read"] == expected["valid"] + sum(expected["skipped"].values())  # type: ignore[attr-defined]
    assert json.loads(run["flagged"])["unlocated"] == 3


async def test_sample_import_runs_once(
    isolated_settings: Settings, data_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "police_uk"
    folder.mkdir()
    source = street_files(data_dir)[-1]
    (folder / source.name).write_bytes(source.read_bytes())
    settings = dataclasses.replace(isolated_settings, data_dir=tmp_path)

    first = await import_sample_if_needed(settings)
    assert first is not None and first.published == len(read_rows(source))
    before = await end_offsets(settings)
    assert await import_sample_if_needed(settings) is None  # recorded in import_runs
    assert await end_offsets(settings) == before
