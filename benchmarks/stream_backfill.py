"""Stream worker throughput and live latency, against raw aiokafka and a naive consumer.

In one run, on a fresh topic prefix and database (removed afterwards):

1. publishes ``--events`` synthetic ``crime.reported`` events (default 1,000,000) at the
   police.uk sample's real snapped points (so the cell count is realistic), over one year, at
   random times (``--in-time-order``: sorted by time, as an import or live input arrives);
2. **raw**: aiokafka consumes the whole topic, no decoding (the ceiling of any Python consumer);
   then, on up to 300k of the records, aiokafka + ``json.loads`` and aiokafka + the input
   stage's validation (``TopicDecoder``): what one core reaches before any state is kept;
3. **naive**: one PostgreSQL upsert per event (decayed harm per cell), what a simple
   implementation does, for ``--naive-seconds``;
4. **backfill**: one ``lpt worker`` process from the start of the topic until every stage has
   caught up and the tables in PostgreSQL are settled (topic -> tables -> PostgreSQL), wall time
   including the worker's start-up, and the CPU seconds each part used meanwhile (the worker's
   three processes, and the Kafka broker and PostgreSQL cluster when they run under
   ``LPT_HOME``), with their sum per event: what moves the rate on a machine they share (and
   the rate that sum allows on the machine's cores with none idle, the CPU bound); and
   the peak resident memory of the worker's processes (batches grow with the backlog);
5. **live**: with that worker running, ``--rate`` events/s for ``--live-seconds``; four per
   second are probes: a burglary in a cell no event touched before. The latency is from the
   probe's send to the first scorer output about its cell (``priority.changed`` when the cell
   changes rank enough to be announced, else its near-repeat ``officer.alert``; both leave the
   scorer in the same batch). A new cell with one burglary rarely enters the top 10% (the
   score weighs seven components), so waiting for ``priority.changed`` alone would measure
   nothing.

Prints the figures and writes ``benchmarks/results/stream_backfill.json``::

    LPT_HOME=.lpt/test LPT_KAFKA_PORT=29092 LPT_PG_PORT=25432 \\
        .venv/bin/python benchmarks/stream_backfill.py --events 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import h3  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from aiokafka.errors import KafkaError  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from lpt.kafka import (  # noqa: E402
    ensure_topics,
    make_producer,
    partitions_of,
    publish_raw,
    topic_name,
)
from lpt.scratch import drop_database  # noqa: E402
from lpt.settings import Settings, get_settings  # noqa: E402
from schemas.registry import TopicDecoder  # noqa: E402
from schemas.topics import CRIME, OFFICER_ALERTS, PRIORITY_CHANGED  # noqa: E402
from streams.app import app_id  # noqa: E402
from streams.lag import LagProbe, stream_groups  # noqa: E402
from tests.streams_helpers import (  # noqa: E402
    Worker,
    child_roles,
    new_database,
    proc_children,
    proc_stat,
    wait_idle,
)

RESULTS = ROOT / "benchmarks" / "results" / "stream_backfill.json"
T = TypeVar("T")
TYPES = [
    ("Violence and sexual offences", 30), ("Anti-social behaviour", 25), ("Criminal damage and arson", 10),
    ("Shoplifting", 8), ("Other theft", 7), ("Vehicle crime", 6), ("Burglary", 5), ("Public order", 5),
    ("Drugs", 2), ("Other crime", 1), ("Robbery", 1),
]  # fmt: skip
#: A live probe waiting this long is a stall (``--dump-stalls``).
STALL_MS = 700
LOW_HARM = ["Shoplifting", "Other theft", "Bicycle theft", "Theft from the person"]


def sample_points(data_dir: Path) -> list[tuple[float, float, str]]:
    points: dict[tuple[float, float], str] = {}
    for path in sorted((data_dir / "police_uk").glob("*-street.csv")):
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for r in csv.DictReader(fh):
                if r["Latitude"] and r["Longitude"]:
                    points[(float(r["Latitude"]), float(r["Longitude"]))] = r["Location"]
    return [(la, ln, street) for (la, ln), street in sorted(points.items())]


class Encoder:
    """crime.reported JSON in the schema's shape, built by hand (publishing 1M events through
    pydantic would dominate the set-up)."""

    def __init__(self) -> None:
        self.cells: dict[tuple[float, float], tuple[str, bytes]] = {}

    def encode(
        self, i: int, lat: float, lng: float, street: str, crime_type: str, t: float, tag: str
    ) -> tuple[bytes, bytes]:
        hit = self.cells.get((lat, lng))
        if hit is None:
            cell = h3.latlng_to_cell(lat, lng, 10)
            hit = self.cells[(lat, lng)] = (cell, h3.cell_to_parent(cell, 9).encode())
        value = {
            "event_id": str(uuid.uuid4()), "schema_version": 1,
            "occurred_at": datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z"),
            "produced_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "source": "benchmark", "trace_id": None, "incident_id": f"{tag}{i}", "version": 1,
            "crime_type": crime_type, "month": None, "reported_by": "Humberside Police",
            "falls_within": "Humberside Police", "location": {"lat": lat, "lng": lng, "cell": hit[0]},
            "location_text": street, "lsoa_code": None, "lsoa_name": None, "lsoa_vintage": None,
            "outcome": None, "context": None, "in_force_area": True, "type": "crime.reported",
        }  # fmt: skip
        return hit[1], json.dumps(value, separators=(",", ":")).encode()


async def publish_backlog(
    settings: Settings, n: int, points: list[Any], seed: int, in_time_order: bool = False
) -> float:
    """``n`` crimes at random points over the past year, at random times or (``in_time_order``,
    like a police.uk import or live input) in time order."""
    rng = random.Random(seed)
    names = [t for t, _ in TYPES]
    weights = [w for _, w in TYPES]
    # The year up to now: the live phase then continues the backfill's event time, as a force
    # going live after loading its history would (a gap of months would make the first live
    # batch re-announce every area whose score decayed meanwhile).
    start = time.time() - 365 * 86400
    enc = Encoder()
    producer = make_producer(settings)
    await producer.start()
    topic = topic_name(CRIME, settings)
    t0 = time.perf_counter()
    try:
        chunk: list[tuple[bytes | None, bytes]] = []
        times = [start + rng.random() * 365 * 86400 for _ in range(n)]
        if in_time_order:
            times.sort()
        for i, t in enumerate(times):
            la, ln, street = points[rng.randrange(len(points))]
            kind = rng.choices(names, weights)[0]
            chunk.append(enc.encode(i, la, ln, street, kind, t, "B"))
            if len(chunk) >= 20_000:
                await publish_raw(producer, topic, chunk)
                chunk = []
        if chunk:
            await publish_raw(producer, topic, chunk)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


async def consume_rate(
    settings: Settings, n: int, per_record: Callable[[bytes], Any] | None = None
) -> float:
    """Records/s of aiokafka reading the topic's first ``n`` records, calling ``per_record`` on
    each value (None: no decoding at all, the ceiling of any Python consumer)."""
    consumer = AIOKafkaConsumer(
        topic_name(CRIME, settings),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        seen = 0
        t0 = time.perf_counter()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for records in batch.values():
                if per_record is not None:
                    for record in records:
                        per_record(record.value)
                seen += len(records)
        return seen / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


async def naive_consume(settings: Settings, seconds: float) -> tuple[float, int]:
    """One upsert per event: decayed harm per cell, the O(1) formula, in SQL."""
    conn = await asyncpg.connect(settings.dsn)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS naive_harm (cell text PRIMARY KEY, s float8, t float8)"
    )
    weights = {"Burglary": 244.68, "Robbery": 365.0, "Violence and sexual offences": 194.21}
    consumer = AIOKafkaConsumer(
        topic_name(CRIME, settings),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    done = 0
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            for records in batch.values():
                for r in records:
                    ev = json.loads(r.value)
                    t = datetime.fromisoformat(ev["occurred_at"].replace("Z", "+00:00")).timestamp()
                    await conn.execute(
                        "INSERT INTO naive_harm VALUES ($1, $2, $3) ON CONFLICT (cell) DO UPDATE"
                        " SET s = naive_harm.s * power(2, -(GREATEST($3, naive_harm.t) -"
                        " naive_harm.t) / 7776000.0) + $2 * power(2, -(GREATEST($3, naive_harm.t)"
                        " - $3) / 7776000.0), t = GREATEST($3, naive_harm.t)",
                        r.key.decode(),
                        weights.get(ev["crime_type"], 1.0),
                        t,
                    )
                    done += 1
        return done / (time.perf_counter() - t0), done
    finally:
        await consumer.stop()
        await conn.close()


async def live_latency(
    settings: Settings,
    worker: Worker,
    points: list[Any],
    rate: int,
    seconds: float,
    dump_dir: Path | None = None,
) -> dict[str, Any]:
    """Steady ``rate`` events/s of low-harm crime now; 4 probes/s (a burglary in a new cell)."""
    rng = random.Random(99)
    enc = Encoder()
    topic = topic_name(CRIME, settings)
    changed = AIOKafkaConsumer(
        topic_name(PRIORITY_CHANGED, settings),
        topic_name(OFFICER_ALERTS, settings),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await changed.start()
    await changed.seek_to_end()
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    kinds: dict[str, int] = {}

    async def watch() -> None:
        while True:
            batch = await changed.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batch.values():
                for r in records:
                    ev = json.loads(r.value)
                    if ev.get("cell") in sent:
                        seen.setdefault(ev["cell"], now)
                        kinds[ev["type"]] = kinds.get(ev["type"], 0) + 1

    async def dump_stalls() -> None:
        """When a probe waits over ``STALL_MS``, the stacks of every worker process (py-spy
        dump) into ``dumps``: what the pipeline was doing during a stall."""
        spy = Path(sys.executable).with_name("py-spy")
        while dump_dir is not None and len(dumps) < 3:
            await asyncio.sleep(0.1)
            now = time.perf_counter()
            if not any(now - t > STALL_MS / 1000 for c, t in sent.items() if c not in seen):
                continue
            children = subprocess.run(
                ["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True
            ).stdout.split()
            path = dump_dir / f"stall-{len(dumps)}.txt"
            with open(path, "w") as out:
                for pid in [str(worker.proc.pid), *children]:
                    proc = await asyncio.create_subprocess_exec(
                        str(spy), "dump", "--pid", pid, stdout=out, stderr=out
                    )
                    await proc.wait()
            dumps.append(str(path))
            await asyncio.sleep(5)

    dumps: list[str] = []
    watcher = asyncio.create_task(watch())
    dumper = asyncio.create_task(dump_stalls())
    producer = make_producer(settings, linger_ms=0)
    started = time.time()
    wall = started - time.perf_counter()  # perf_counter -> epoch
    await producer.start()
    used = {h3.cell_to_parent(h3.latlng_to_cell(la, ln, 10), 9) for la, ln, _ in points}
    try:
        tick = 0.05
        per_tick = max(1, int(rate * tick))
        t_end = time.perf_counter() + seconds
        i = 0
        next_at = time.perf_counter()
        while time.perf_counter() < t_end:
            now_event = time.time()
            msgs = []
            for _ in range(per_tick):
                la, ln, street = points[rng.randrange(len(points))]
                msgs.append(enc.encode(i, la, ln, street, rng.choice(LOW_HARM), now_event, "L"))
                i += 1
            probe_cell = None
            if int(next_at / 0.25) != int((next_at - tick) / 0.25):  # 4 probes per second
                while True:
                    la, ln = 53.6 + rng.random() * 0.3, -0.6 + rng.random() * 0.6
                    probe_cell = h3.cell_to_parent(h3.latlng_to_cell(la, ln, 10), 9)
                    if probe_cell not in used:
                        used.add(probe_cell)
                        break
                msgs.append(enc.encode(i, la, ln, "On or near Probe", "Burglary", now_event, "P"))
                i += 1
            await publish_raw(producer, topic, msgs)
            if probe_cell:
                sent[probe_cell] = time.perf_counter()
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.sleep(5)
    finally:
        watcher.cancel()
        dumper.cancel()
        await producer.stop()
        await changed.stop()
    timeline = sorted((sent[c], (seen[c] - sent[c]) * 1000) for c in sent if c in seen)
    lat = sorted(ms for _, ms in timeline)
    ident = app_id(settings)
    internal = [f"{ident}-{n}" for n in ("entities", "deltas", "summaries")]
    changelogs = [f"{ident}-{n}-changelog" for n in ("incidents", "cells")]
    path = [topic, *internal, *changelogs, topic_name(OFFICER_ALERTS, settings)]
    return {
        "rate_events_per_s": rate,
        "seconds": seconds,
        "events": i,
        "probes": len(sent),
        "probes_announced": len(lat),
        "first_output_types": kinds,
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
        "p99_ms": round(lat[max(0, int(len(lat) * 0.99) - 1)], 1) if lat else None,
        "p90_ms": round(lat[max(0, int(len(lat) * 0.9) - 1)], 1) if lat else None,
        "max_ms": round(lat[-1], 1) if lat else None,
        "slowest": [
            {"at_s": round(t + wall - started, 2), "ms": round(ms)}
            for t, ms in sorted(timeline, key=lambda p: -p[1])[:5]
        ],
        # Where a stall happened: the first topic on the path with a long gap is written by
        # the stage that stalled.
        "flow_gaps": await flow_gaps(settings, path, started, started + seconds),
        "stall_dumps": dumps,
    }


async def flow_gaps(
    settings: Settings, topics: list[str], start: float, end: float
) -> dict[str, dict[str, float]]:
    """Per topic, the longest time between consecutive messages (their send timestamps) from
    ``start`` to ``end`` (epoch s), and when it began (s after ``start``). A stall of the live
    path shows as a gap in the topic its stalled stage writes, and in none before it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        layout = await partitions_of(admin, topics)
    finally:
        await admin.close()
    parts = [TopicPartition(t, p) for t, ps in layout.items() for p in ps]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        consumer.assign(parts)
        firsts = await consumer.offsets_for_times({tp: int(start * 1000) for tp in parts})
        ends = await consumer.end_offsets(parts)
        stamps: dict[str, list[int]] = {t: [] for t in topics}
        todo = set()
        for tp in parts:
            first = firsts.get(tp)
            if first is None or first.offset >= ends[tp]:
                consumer.pause(tp)
                continue
            consumer.seek(tp, first.offset)
            todo.add(tp)
        while todo:
            batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            if not batch:
                break
            for tp, records in batch.items():
                stamps[tp.topic] += [r.timestamp for r in records if r.timestamp <= end * 1000]
                if records[-1].timestamp > end * 1000 or records[-1].offset + 1 >= ends[tp]:
                    consumer.pause(tp)
                    todo.discard(tp)
    finally:
        await consumer.stop()
    out: dict[str, dict[str, float]] = {}
    for topic, ts in stamps.items():
        ts.sort()
        gaps = [(b - a, a) for a, b in itertools.pairwise(ts)]
        if gaps:
            gap, at = max(gaps)
            name = topic.removeprefix(settings.topic_prefix)
            out[name] = {
                "max_gap_ms": gap,
                "at_s": round(at / 1000 - start, 2),
                "messages": len(ts),
            }
    return out


async def records_per_event(settings: Settings, events: int) -> dict[str, float]:
    """Messages each internal topic and changelog holds per input event, and PostgreSQL rows
    written per event: the pipeline's write amplification, which sets most of its CPU."""
    ident = app_id(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(ident)]
        layout = await partitions_of(admin, names)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(
            [TopicPartition(t, p) for t, ps in layout.items() for p in ps]
        )
    finally:
        await consumer.stop()
    out: dict[str, float] = {}
    for tp, end in ends.items():
        name = tp.topic.removeprefix(ident + "-")
        out[name] = out.get(name, 0.0) + end / events
    conn = await asyncpg.connect(settings.dsn)
    try:
        rows = await conn.fetch(
            "SELECT relname, n_tup_ins + n_tup_upd AS n FROM pg_stat_user_tables"
            " WHERE relname IN ('priority_areas', 'priority_history')"
        )
    finally:
        await conn.close()
    out.update({f"pg.{r['relname']}": r["n"] / events for r in rows})
    return {k: round(v, 3) for k, v in sorted(out.items()) if v}


async def drop_topics(settings: Settings, prefix: str) -> None:
    """The run's topics (inputs, internal, changelogs): thousands of leftover partitions slow
    every later broker start."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def stage_delays(settings: Settings) -> dict[str, tuple[float, float]]:
    """(sum, count) of ``lpt_stream_stage_delay_seconds`` (the wait) and of
    ``lpt_processing_seconds`` (the work, key ``<stage>.work``) per stage, from the /metrics of
    the worker's stages and scorer processes (their addresses are in ``ops_workers``)."""
    conn = await asyncpg.connect(settings.dsn)
    try:
        urls = {
            kind: await conn.fetchval(
                "SELECT url FROM ops_workers WHERE kind = $1 AND stopped_at IS NULL"
                " ORDER BY last_seen DESC LIMIT 1",
                kind,
            )
            for kind in ("input", "streams", "scorer")
        }
    finally:
        await conn.close()
    out: dict[str, list[float]] = {}
    async with aiohttp.ClientSession() as session:
        for kind, url in urls.items():
            if not url:
                continue
            async with session.get(url) as resp:
                text = await resp.text()
            for family in text_string_to_metric_families(text):
                if family.name not in (
                    "lpt_stream_stage_delay_seconds",
                    "lpt_processing_seconds",
                    "lpt_gc_pause_seconds",
                ):
                    continue
                for sample in family.samples:
                    if family.name == "lpt_gc_pause_seconds":
                        # (the mean pause, and as ".batches" how many, per process)
                        stage = f"gc{sample.labels['generation']}.{kind}.work"
                    else:
                        stage = sample.labels.get("stage") or f"{sample.labels.get('group')}.work"
                    pair = out.setdefault(stage, [0.0, 0.0])
                    if sample.name.endswith("_sum"):
                        pair[0] = sample.value
                    elif sample.name.endswith("_count"):
                        pair[1] = sample.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def _mean_delays(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, Any]:
    means: dict[str, Any] = {}
    for stage, (total, count) in after.items():
        t0, c0 = before.get(stage, (0.0, 0.0))
        if count > c0:
            means[stage] = round((total - t0) / (count - c0) * 1000, 1)
            if stage.endswith(".work"):
                means[stage.replace(".work", ".batches")] = int(count - c0)
    return means


async def caught_up_times(settings: Settings, t0: float, out: dict[str, float]) -> None:
    """Until cancelled: when (s after ``t0``) each stream group last caught up (its lag fell
    to zero), into ``out``: where a backfill spends its time (input, stages, scorer)."""
    groups = stream_groups(settings)
    names = dict(zip(groups, ("input", "stages", "scorer"), strict=True))
    busy: set[str] = set()  # a stage's topics are empty (no lag) until the one before it sends
    async with LagProbe(settings) as probe:
        while True:
            try:
                lags = await probe.lags(groups)
            except KafkaError:  # a group's coordinator not known yet (a fresh broker): again
                await asyncio.sleep(0.5)
                continue
            for group, lag in lags.items():
                if lag:
                    busy.add(group)
                    out.pop(names[group], None)
                elif group in busy and names[group] not in out:
                    out[names[group]] = round(time.perf_counter() - t0, 1)
            await asyncio.sleep(0.5)


def _cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU of a process (with ``reaped``: also of its children that exited)."""
    fields = proc_stat(pid)
    if fields is None:
        return 0.0
    ticks = sum(int(f) for f in fields[11 : 15 if reaped else 13])  # utime stime [cutime cstime]
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu(home: Path) -> dict[str, float]:
    """CPU seconds so far of the local Kafka broker and PostgreSQL cluster under ``home`` (the
    postmaster, its live backends and those that exited); absent when they run elsewhere."""
    out: dict[str, float] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        out["kafka"] = _cpu_seconds(int((home / "kafka" / "kafka.pid").read_text()))
    with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
        master = int((home / "pg" / "data" / "postmaster.pid").read_text().split()[0])
        out["postgres"] = _cpu_seconds(master, reaped=True) + sum(
            _cpu_seconds(c) for c in proc_children(master)
        )
    return out


def per_process(worker: Worker, measure: Callable[[int], T]) -> dict[str, T]:
    """``measure(pid)`` of the worker's three processes, by role."""
    out = {"stages": measure(worker.proc.pid)}
    out.update({role: measure(pid) for role, pid in child_roles(worker.proc.pid).items()})
    return out


def _peak_rss_mb(pid: int) -> float | None:
    """The most resident memory a process has had (``VmHWM``), in MB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def _profile(worker: Worker, path: str | None) -> subprocess.Popen[bytes] | None:
    """Sample the worker (stages and scorer processes) with py-spy (a dev dependency)."""
    if path is None:
        return None
    spy = Path(sys.executable).with_name("py-spy")
    command = [str(spy), "record", "--pid", str(worker.proc.pid), "--format", "raw"]
    command.append("--subprocesses")
    return subprocess.Popen([*command, "--nonblocking", "-o", path], stdout=subprocess.DEVNULL)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    base = get_settings()
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = await new_database(dataclasses.replace(base, topic_prefix=prefix))
    settings = dataclasses.replace(settings, stream_app_id=prefix + "streams")
    await ensure_topics(settings)
    points = sample_points(settings.data_dir)
    out: dict[str, Any] = {"events": args.events, "partitions": settings.topic_partitions}
    home = Path(args.home or ROOT / ".lpt" / "bench" / prefix)
    worker: Worker | None = None
    try:
        print(f"publishing {args.events:,} events ...", flush=True)
        published = await publish_backlog(settings, args.events, points, 1, args.in_time_order)
        out["publish_seconds"] = round(published, 1)
        out["in_time_order"] = args.in_time_order
        raw = await consume_rate(settings, args.events)
        out["raw_aiokafka_per_s"] = round(raw)
        print(f"raw aiokafka consumption: {raw:,.0f} events/s", flush=True)
        # What one core reaches before any state: parsing, and the input stage's validation.
        sample = min(args.events, 300_000)
        loads = await consume_rate(settings, sample, json.loads)
        validate = await consume_rate(settings, sample, TopicDecoder(CRIME.value_types, CRIME.name))
        out["json_loads_per_s"], out["validate_per_s"] = round(loads), round(validate)
        print(
            f"aiokafka + json.loads: {loads:,.0f} events/s ({loads / raw:.0%} of raw); "
            f"+ the input stage's validation: {validate:,.0f} events/s ({validate / raw:.0%})",
            flush=True,
        )
        naive, _ = await naive_consume(settings, args.naive_seconds)
        out["naive_upsert_per_s"] = round(naive)
        print(f"naive consumer (one upsert per event): {naive:,.0f} events/s", flush=True)

        servers_before = server_cpu(base.home)  # the broker and cluster this run uses
        t0 = time.perf_counter()
        worker = Worker(settings, home)
        profiler = _profile(worker, args.profile)
        caught_up: dict[str, float] = {}
        watch = asyncio.create_task(caught_up_times(settings, t0, caught_up))
        await wait_idle(settings, [worker], timeout=args.timeout)
        if watch.done() and watch.exception() is not None:
            print(f"lag watch failed: {watch.exception()!r}", flush=True)
        watch.cancel()
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            profiler.wait(30)
        elapsed = time.perf_counter() - t0
        # Where the CPU went (the machine's cores are shared by all of these).
        cpu = per_process(worker, _cpu_seconds)
        cpu.update({k: v - servers_before.get(k, 0.0) for k, v in server_cpu(base.home).items()})
        out["backfill_cpu_s"] = {k: round(v, 1) for k, v in cpu.items()}
        out["backfill_cpu_us_per_event"] = round(sum(cpu.values()) / args.events * 1e6, 1)
        # The most that CPU cost allows on this machine's cores with none idle: a rate target
        # above it needs less CPU per event, not better scheduling.
        cores = len(os.sched_getaffinity(0))
        bound = cores * args.events / sum(cpu.values())
        out["backfill_cpu_bound"] = {
            "cores": cores,
            "per_s": round(bound),
            "vs_raw": round(bound / raw, 4),
        }
        out["backfill_peak_rss_mb"] = per_process(worker, _peak_rss_mb)
        rate = args.events / elapsed
        out["backfill_seconds"] = round(elapsed, 1)
        out["backfill_per_s"] = round(rate)
        out["backfill_vs_raw"] = round(rate / raw, 4)
        out["backfill_vs_validate"] = round(rate / validate, 4)
        out["backfill_vs_naive"] = round(rate / naive, 2) if naive else None
        out["backfill_caught_up_s"] = caught_up
        # Collector pauses per process over the backfill: total seconds and count.
        totals = await stage_delays(settings)
        out["backfill_gc"] = {
            k.removesuffix(".work"): [round(v[0], 2), int(v[1])]
            for k, v in totals.items()
            if k.startswith("gc")
        }
        out["backfill_records_per_event"] = await records_per_event(settings, args.events)
        conn = await asyncpg.connect(settings.dsn)
        try:
            out["cells_res9"] = await conn.fetchval(
                "SELECT count(*) FROM priority_areas WHERE level = 'res9'"
            )
        finally:
            await conn.close()
        print(
            f"stream backfill (topic -> tables -> PostgreSQL, one worker): {rate:,.0f} events/s "
            f"({elapsed:.1f} s incl. start-up; {rate / raw:.1%} of raw; {rate / naive:.1f}x naive;"
            f" no lag after s: {caught_up}; GC s, count: {out['backfill_gc']}; CPU s:"
            f" {out['backfill_cpu_s']}, {out['backfill_cpu_us_per_event']} us/event in all,"
            f" at most {bound:,.0f} events/s on {cores} cores ({bound / raw:.1%} of raw);"
            f" peak RSS MB: {out['backfill_peak_rss_mb']};"
            f" records per event: {out['backfill_records_per_event']})",
            flush=True,
        )
        if args.live_seconds > 0:
            before = await stage_delays(settings)
            profiler = _profile(worker, args.profile_live)
            dump_dir = Path(args.dump_stalls) if args.dump_stalls else None
            if dump_dir is not None:
                dump_dir.mkdir(parents=True, exist_ok=True)
            live = await live_latency(
                settings, worker, points, args.rate, args.live_seconds, dump_dir
            )
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(30)
            live["stage_mean_ms"] = _mean_delays(before, await stage_delays(settings))
            out["live"] = live
            print(
                f"live at {args.rate} events/s: produce -> scorer output p50 {live['p50_ms']} ms, "
                f"p99 {live['p99_ms']} ms ({live['probes_announced']}/{live['probes']} probes); "
                f"mean wait and work per stage batch (ms): {live['stage_mean_ms']}",
                flush=True,
            )
    finally:
        if worker is not None:
            worker.stop()
        await drop_database(settings)
        await drop_topics(settings, prefix)
        if not args.home:  # the worker's RocksDB state: hundreds of MB per run
            shutil.rmtree(home, ignore_errors=True)
    out["targets"] = {"per_worker_per_s": 20_000, "vs_raw": 0.40, "live_p99_ms": 500}
    return out


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--naive-seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--live-seconds", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument(
        "--in-time-order",
        action="store_true",
        help="publish the backlog in event-time order (an import) instead of at random times",
    )
    parser.add_argument("--home", default=None, help="worker state directory")
    parser.add_argument(
        "--profile", default=None, help="py-spy raw profile of the worker's backfill to this file"
    )
    parser.add_argument(
        "--profile-live",
        default=None,
        help="py-spy raw profile of the live phase to this file",
    )
    parser.add_argument(
        "--dump-stalls",
        default=None,
        help="directory for py-spy stack dumps of the worker's processes when a live probe"
        " waits over STALL_MS (at most 3)",
    )
    args = parser.parse_args()
    result = asyncio.run(main(args))
    result["measured_at"] = datetime.now(UTC).isoformat()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    cli()
