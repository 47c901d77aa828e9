"""``lpt import police-uk FILE...``: police.uk street-level CSVs published as crime events.

Each valid row becomes one ``crime.reported`` event on the crime topic (row checks, identity
and field choices: :mod:`producers.police_uk_rows`); malformed rows are skipped with a reason
and counted; the summary is printed and recorded in ``import_runs``.

Idempotent: event ids are deterministic; ids already in ``ingest_ledger`` are not published
again, and a chunk's ids are written to the ledger only after the broker acknowledged the chunk
(a crash in between may re-publish that chunk: consumers dedupe by event id as well). A
second import of the same file therefore publishes nothing.

Throughput: one file is parsed and its points tested against the force area in one vectorised
call; then, chunk by chunk, the ledger is asked which ids are new, the new rows are encoded, and
the chunk is published in partition batches (``lpt.kafka.publish_raw``) while the next chunk is
being encoded.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from tqdm import tqdm

from lpt.geo import ForceArea
from lpt.kafka import ensure_topics, make_producer, publish_raw, topic_name
from lpt.logs import get_logger
from lpt.settings import Settings, get_settings
from producers.police_uk_rows import (
    SOURCE,
    Encoder,
    ImportFileError,
    Message,
    ParsedFile,
    parse_file,
)
from producers.police_uk_summary import FileSummary, ImportSummary
from schemas.topics import CRIME

__all__ = ["ImportSummary", "cli", "import_files", "import_sample_if_needed"]

#: Rows per round of ledger look-up, encode, publish and ledger insert.
CHUNK_ROWS = 5_000
#: Session advisory lock held while importing: two imports at once (``lpt up --import-sample``
#: and a manual ``lpt import``) would both find the same ids unpublished and publish them twice.
IMPORT_LOCK_ID = 0x4C505450

log = get_logger(__name__)


class MemoPartitioner:
    """aiokafka's default partitioner (the Java client's murmur2) with each key's hash kept.

    Same partitions as every other producer of these keys; police.uk rows share a few thousand
    res-9 cells, and the pure-Python murmur2 otherwise costs as much as the send itself.
    """

    def __init__(self, max_keys: int = 500_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        h = self._hashes.get(key)
        if h is None:
            h = murmur2(key) & 0x7FFFFFFF
            if len(self._hashes) < self._max_keys:
                self._hashes[key] = h
        return all_partitions[h % len(all_partitions)]


async def _already_published(conn: asyncpg.Connection, ids: list[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT event_id::text FROM ingest_ledger WHERE event_id = ANY($1::uuid[])", ids
    )
    return {r[0] for r in rows}


async def _publish_and_record(
    producer: AIOKafkaProducer,
    conn: asyncpg.Connection,
    topic: str,
    messages: list[Message],
    ids: list[str],
) -> None:
    """Publish, wait for the broker's acks, then write the ids to the ledger (in that order)."""
    await publish_raw(producer, topic, messages)
    await conn.execute(
        "INSERT INTO ingest_ledger (event_id, source, topic)"
        " SELECT unnest($1::uuid[]), $2, $3 ON CONFLICT (event_id) DO NOTHING",
        ids,
        SOURCE,
        topic,
    )


def _count(summary: FileSummary, parsed: ParsedFile, published: list[bool]) -> None:
    """Fill the summary's counts (per crime type too) from the parsed rows and what was new."""
    status = [
        "unlocated" if r.lat is None else ("in_area" if inside else "out_of_area")
        for r, inside in zip(parsed.records, parsed.in_area, strict=True)
    ]
    crime_types = [r.crime_type for r in parsed.records]
    combos = Counter(zip(crime_types, published, status, strict=True))
    for (crime_type, new, where), n in combos.items():
        counts = summary.by_crime_type.setdefault(crime_type, Counter())
        counts["rows"] += n
        counts["published" if new else "already_published"] += n
        if where != "in_area":
            counts[where] += n
    summary.published = sum(published)
    summary.already_published = len(published) - summary.published
    summary.unlocated = status.count("unlocated")
    summary.out_of_area = status.count("out_of_area")
    summary.out_of_area_by_lsoa = Counter(
        r.lsoa_name or r.lsoa_code or "(no LSOA)"
        for r, where in zip(parsed.records, status, strict=True)
        if where == "out_of_area"
    )


async def _import_one(
    path: Path,
    force_area: ForceArea,
    encoder: Encoder,
    conn: asyncpg.Connection,
    ledger_conn: asyncpg.Connection,
    producer: AIOKafkaProducer,
    topic: str,
    progress: bool,
) -> FileSummary:
    summary = FileSummary(file=Path(path).name)
    try:
        parsed = parse_file(path, force_area)
    except ImportFileError as exc:
        summary.error = str(exc)
        log.warning("police_uk.file_rejected", file=summary.file, reason=summary.error)
        return summary
    summary.sha256 = parsed.sha256
    summary.rows = parsed.rows_read
    summary.skipped = parsed.skipped
    summary.skipped_lines = parsed.skipped_lines
    run_id = await conn.fetchval(
        "INSERT INTO import_runs (source, file_name, file_sha256) VALUES ($1, $2, $3) RETURNING id",
        SOURCE,
        summary.file,
        parsed.sha256,
    )
    ids = [r.event_id for r in parsed.records]
    published = [False] * len(ids)
    in_flight: asyncio.Task[None] | None = None
    with tqdm(
        total=len(ids),
        unit="row",
        unit_scale=True,
        desc=summary.file,
        disable=not progress,
        file=sys.stderr,
        leave=False,
    ) as bar:
        for start in range(0, len(ids), CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, len(ids))
            done = await _already_published(conn, ids[start:stop])
            fresh = [i for i in range(start, stop) if ids[i] not in done]
            messages = encoder.encode(parsed, fresh)
            if in_flight is not None:
                await in_flight
            in_flight = None
            if fresh:
                for i in fresh:
                    published[i] = True
                in_flight = asyncio.create_task(
                    _publish_and_record(
                        producer, ledger_conn, topic, messages, [ids[i] for i in fresh]
                    )
                )
            bar.update(stop - start)
        if in_flight is not None:  # the last chunk, before the run is marked finished
            await in_flight
    _count(summary, parsed, published)
    await conn.execute(
        "UPDATE import_runs SET finished_at = now(), rows_read = $2, published = $3,"
        " skipped = $4::jsonb, flagged = $5::jsonb WHERE id = $1",
        run_id,
        summary.rows,
        summary.published,
        json.dumps(dict(summary.skipped)),
        json.dumps(summary.flagged()),
    )
    log.info(
        "police_uk.file_imported",
        file=summary.file,
        rows=summary.rows,
        published=summary.published,
        already_published=summary.already_published,
        skipped=sum(summary.skipped.values()),
        out_of_area=summary.out_of_area,
        unlocated=summary.unlocated,
    )
    return summary


async def import_files(
    paths: Sequence[Path], settings: Settings, *, progress: bool = True
) -> ImportSummary:
    """Publish the rows of police.uk street-level CSVs; see the module docstring.

    A file that cannot be read (missing, not UTF-8, not a police.uk header) is reported in the
    summary (``errors``) and the other files are still imported.
    """
    started = time.perf_counter()
    await ensure_topics(settings)  # idempotent; spares a fresh deployment `lpt topics` first
    force_area = ForceArea.from_settings(settings)
    encoder = Encoder()
    topic = topic_name(CRIME, settings)
    summary = ImportSummary()
    conn = await asyncpg.connect(settings.dsn)
    ledger_conn = await asyncpg.connect(settings.dsn)
    producer = make_producer(settings, partitioner=MemoPartitioner())
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", IMPORT_LOCK_ID)  # released on close
        await producer.start()
        for path in paths:
            summary.files.append(
                await _import_one(
                    Path(path), force_area, encoder, conn, ledger_conn, producer, topic, progress
                )
            )
    finally:
        await producer.stop()
        await ledger_conn.close()
        await conn.close()
    summary.seconds = time.perf_counter() - started
    return summary


def sample_files(settings: Settings) -> list[Path]:
    return sorted((settings.data_dir / "police_uk").glob("*-street.csv"))


async def import_sample_if_needed(settings: Settings) -> ImportSummary | None:
    """Import the sample files (``data_dir/police_uk/*-street.csv``) no run has finished yet.

    Files are recognised by content (SHA-256), so a renamed copy is not imported twice; even
    if it were, the ledger would publish nothing new.
    """
    files = sample_files(settings)
    if not files:
        log.warning("police_uk.no_sample", folder=str(settings.data_dir / "police_uk"))
        return None
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    conn = await asyncpg.connect(settings.dsn)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT file_sha256 FROM import_runs"
            " WHERE source = $1 AND finished_at IS NOT NULL AND file_sha256 = ANY($2::text[])",
            SOURCE,
            list(digests.values()),
        )
    finally:
        await conn.close()
    done = {r["file_sha256"] for r in rows}
    todo = [p for p in files if digests[p] not in done]
    if not todo:
        print(f"police.uk sample: all {len(files)} file(s) already imported")
        return None
    summary = await import_files(todo, settings, progress=sys.stderr.isatty())
    print(summary.render())
    return summary


def cli(args: argparse.Namespace) -> int:
    """``lpt import police-uk FILE... [--no-progress]``; exit 1 if a file was not imported."""
    settings = get_settings()
    try:
        summary = asyncio.run(import_files(args.files, settings, progress=not args.no_progress))
    except (KafkaError, OSError, asyncpg.PostgresError) as exc:
        print(
            f"error: import stopped, Kafka ({settings.bootstrap_servers}) or PostgreSQL failed: "
            f"{exc!r}. Rows published so far are in the ledger; run the import again.",
            file=sys.stderr,
        )
        return 2
    print(summary.render())
    return 1 if summary.errors else 0
