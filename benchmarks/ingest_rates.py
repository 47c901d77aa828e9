"""Ingest rates: the police.uk importer and the HTTP gateway next to raw aiokafka.

Usage (Kafka and PostgreSQL from the environment, started locally if not running):

    .venv/bin/python benchmarks/ingest_rates.py [--rows 100000] [--keep]
    # against the test servers:
    LPT_HOME=.lpt/test LPT_KAFKA_PORT=29092 LPT_PG_PORT=25432 .venv/bin/python benchmarks/ingest_rates.py

What it does, in one run so the figures are comparable:
1. builds a CSV of at least ``--rows`` rows from the real police.uk sample (repeated, each copy
   with new Crime IDs; ASB rows without an ID stay identical copies, which the importer keeps
   distinct by their occurrence index, as in real files);
2. imports it with ``producers.police_uk.import_files`` into a fresh topic prefix and a fresh
   database (like ``tests/conftest.py``'s ``isolated_settings``), then imports it again (nothing
   new to publish: the cost of the idempotency check alone);
3. publishes the *same encoded messages* with raw aiokafka to fresh topics of the same layout:
   ``create_batch``/``send_batch`` per partition, and one ``send()`` per message; plus
   ``lpt.kafka.publish_raw`` in the importer's chunk size. All producers use the project's
   producer options (``lpt.kafka.make_producer``: acks=all, idempotence, linger 5 ms), so the
   ratio shows what parsing, validation, encoding and the ledger cost on top of the client;
4. prints a table and writes ``benchmarks/results/ingest_rates.json``.

The HTTP gateway is measured by :func:`measure_gateway` with the same events as JSON batches.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402

from lpt.db import wait_for_postgres  # noqa: E402
from lpt.geo import ForceArea  # noqa: E402
from lpt.kafka import (  # noqa: E402
    ensure_topics,
    make_producer,
    publish_raw,
    topic_name,
    wait_for_kafka,
)
from lpt.logs import configure_logging  # noqa: E402
from lpt.scratch import create_scratch, drop_scratch  # noqa: E402
from lpt.settings import Settings, get_settings  # noqa: E402
from producers import police_uk  # noqa: E402
from producers.police_uk_rows import encode_file  # noqa: E402
from schemas.topics import CRIME  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ingest_rates.json"
Messages = list[tuple[bytes | None, bytes]]


@dataclass
class Measurement:
    name: str
    messages: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BenchContext:
    """What every measurement may use: fresh settings, the CSV, its encoded messages."""

    settings: Settings
    csv_path: Path
    rows: int
    messages: Messages = field(default_factory=list)
    topics: list[str] = field(default_factory=list)

    async def fresh_topic(self, label: str) -> str:
        """A new crime-layout topic (same partitions and config) for one raw measurement."""
        prefix = f"{self.settings.topic_prefix}{label}."
        settings = dataclasses.replace(self.settings, topic_prefix=prefix)
        self.topics += await ensure_topics(settings)
        return topic_name(CRIME, settings)


# --------------------------------------------------------------------------- input


def build_csv(data_dir: Path, rows: int, out: Path) -> int:
    """At least ``rows`` rows from the real sample, each repeat with new Crime IDs."""
    sources = sorted((data_dir / "police_uk").glob("*-street.csv"))
    if not sources:
        raise SystemExit(f"no police.uk sample in {data_dir / 'police_uk'} (set LPT_DATA_DIR)")
    header: list[str] = []
    real: list[list[str]] = []
    for path in sources:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader)
            real.extend(reader)
    written = 0
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        copy = 0
        while written < rows:
            for row in real:
                if row[0]:
                    row = [hashlib.sha256(f"{row[0]}/{copy}".encode()).hexdigest(), *row[1:]]
                writer.writerow(row)
            written += len(real)
            copy += 1
    return written


# --------------------------------------------------------------------------- measurements


async def measure_importer(ctx: BenchContext) -> list[Measurement]:
    first = await police_uk.import_files([ctx.csv_path], ctx.settings, progress=False)
    assert not first.errors, first.render()
    again = await police_uk.import_files([ctx.csv_path], ctx.settings, progress=False)
    assert again.published == 0, "re-import published events"
    return [
        Measurement(
            "importer: lpt import police-uk",
            first.published,
            first.seconds,
            "CSV parse, checks, ledger, encode, publish",
        ),
        Measurement(
            "importer: re-import (nothing new)",
            again.already_published,
            again.seconds,
            "parse + ledger look-up only",
        ),
    ]


async def _timed(
    ctx: BenchContext, label: str, send: Callable[[AIOKafkaProducer, str], Awaitable[None]]
) -> float:
    topic = await ctx.fresh_topic(label)
    producer = make_producer(ctx.settings)
    await producer.start()
    try:
        await publish_raw(producer, topic, ctx.messages[:100])  # metadata, producer id: warm up
        started = time.perf_counter()
        await send(producer, topic)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def measure_raw_aiokafka(ctx: BenchContext) -> list[Measurement]:
    msgs = ctx.messages

    async def send_batch(producer: AIOKafkaProducer, topic: str) -> None:
        partitions = sorted(await producer.partitions_for(topic))
        batches: dict[int, Any] = {}
        futures = []
        for key, value in msgs:
            part = producer._partitioner(key, partitions, partitions)
            batch = batches.get(part)
            if batch is None:
                batch = batches[part] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=part))
                batch = batches[part] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for part, batch in batches.items():
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=part))
        await asyncio.gather(*futures)

    async def send_each(producer: AIOKafkaProducer, topic: str) -> None:
        futures = [await producer.send(topic, value, key=key) for key, value in msgs]
        await asyncio.gather(*futures)

    async def chunked_publish_raw(producer: AIOKafkaProducer, topic: str) -> None:
        for start in range(0, len(msgs), police_uk.CHUNK_ROWS):
            await publish_raw(producer, topic, msgs[start : start + police_uk.CHUNK_ROWS])

    return [
        Measurement(
            "raw aiokafka: create_batch/send_batch",
            len(msgs),
            await _timed(ctx, "rawbatch", send_batch),
            "same messages, default partitioner",
        ),
        Measurement(
            "raw aiokafka: send() per message",
            len(msgs),
            await _timed(ctx, "rawsend", send_each),
            "same messages",
        ),
        Measurement(
            "lpt.kafka.publish_raw (importer chunks)",
            len(msgs),
            await _timed(ctx, "publishraw", chunked_publish_raw),
            f"chunks of {police_uk.CHUNK_ROWS:,}",
        ),
    ]


# ============================================================================ GATEWAY
# The HTTP ingest gateway (api/ingest.py) as a force crime system would use it: the same
# events as JSON batches of 500 from 4 connections, the server in its own `lpt serve` process,
# on a topic prefix of its own (so its idempotency ledger starts empty).
async def measure_gateway(ctx: BenchContext) -> list[Measurement] | None:
    from benchmarks.gateway_rate import measure_gateway_rate

    drop = {"event_id", "produced_at", "source", "trace_id"}
    events = [
        {k: v for k, v in json.loads(value).items() if k not in drop} for _, value in ctx.messages
    ]
    prefix = f"{ctx.settings.topic_prefix}gateway."
    settings = dataclasses.replace(ctx.settings, topic_prefix=prefix)
    await ensure_topics(settings)
    figures = await measure_gateway_rate(settings, events)
    return [
        Measurement(
            "gateway: POST batches of 500 (4 conns)",
            int(figures["accepted"]),
            float(figures["seconds"]),
            f"p50 {figures['latency_ms_p50']} ms/request; {figures['duplicates']} duplicates",
        )
    ]


# ============================================================================ END GATEWAY

#: Run in this order; each returns its rows for the table (or None when not available).
MEASUREMENTS: list[Callable[[BenchContext], Awaitable[list[Measurement] | None]]] = [
    measure_importer,
    measure_raw_aiokafka,
    measure_gateway,
]


# --------------------------------------------------------------------------- set-up, output


async def fresh_settings(base: Settings) -> Settings:
    """Own database (migrated) and topic prefix, as tests/conftest.py ``isolated_settings``."""
    return await create_scratch(base, "bench")


async def clean_up(ctx: BenchContext) -> None:
    await drop_scratch(ctx.settings)


def render(results: list[Measurement], baseline: Measurement | None) -> str:
    lines = [
        f"{'measurement':42} {'messages':>9} {'seconds':>8} {'msgs/s':>10} {'vs raw batch':>12}"
    ]
    for m in results:
        ratio = f"{m.rate / baseline.rate:.2f}x" if baseline and baseline.rate else "-"
        lines.append(
            f"{m.name:42} {m.messages:>9,} {m.seconds:>8.2f} {m.rate:>10,.0f} {ratio:>12}"
            + (f"  {m.note}" if m.note else "")
        )
    return "\n".join(lines)


async def run(rows: int, keep: bool) -> dict[str, Any]:
    base = get_settings()
    if base.local_kafka or base.local_postgres:
        from lpt.services import start_backing_services

        start_backing_services(base)
    await wait_for_kafka(base)
    await wait_for_postgres(base)
    settings = await fresh_settings(base)
    with tempfile.TemporaryDirectory(prefix="lpt-bench-") as tmp:
        csv_path = Path(tmp) / "police-uk-bench-street.csv"
        written = build_csv(base.data_dir, rows, csv_path)
        ctx = BenchContext(settings=settings, csv_path=csv_path, rows=written)
        ctx.messages = encode_file(csv_path, ForceArea.from_settings(settings))
        print(
            f"{written:,} CSV rows, {len(ctx.messages):,} messages "
            f"(avg {sum(len(v) for _, v in ctx.messages) / len(ctx.messages):.0f} bytes), "
            f"{settings.topic_partitions} partitions, Kafka {base.bootstrap_servers}",
            file=sys.stderr,
        )
        results: list[Measurement] = []
        try:
            for measure in MEASUREMENTS:
                results += await measure(ctx) or []
        finally:
            if not keep:
                await clean_up(ctx)
    baseline = next((m for m in results if m.name.startswith("raw aiokafka: create_batch")), None)
    print(render(results, baseline))
    report = {
        "benchmark": "ingest_rates",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "rows": written,
        "messages": len(ctx.messages),
        "partitions": settings.topic_partitions,
        "kafka": base.bootstrap_servers,
        "producer": "lpt.kafka.make_producer (acks=all, idempotence, linger_ms=5)",
        "results": [
            {
                "name": m.name,
                "messages": m.messages,
                "seconds": round(m.seconds, 4),
                "rate_per_s": round(m.rate, 1),
                "vs_raw_send_batch": round(m.rate / baseline.rate, 4) if baseline else None,
                "note": m.note,
            }
            for m in results
        ],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="CSV rows (at least)")
    parser.add_argument("--keep", action="store_true", help="keep the topics and database")
    args = parser.parse_args()
    configure_logging(level=os.environ.get("LPT_LOG_LEVEL", "warning"))
    asyncio.run(run(args.rows, args.keep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
