"""Soak: the whole system under a steady mix for a bounded time; lag, latency, memory drift.

Issue 6 asks that producers, stream workers, the notification worker and the API run together
for a while without falling behind or growing. On a scratch topic prefix and database of its
own (``lpt.scratch``; removed at the end, also on Ctrl-C or failure) this starts, each as its own
process as in production:

- ``lpt serve`` (the web service: officer API, projections, ops, aggregated /metrics);
- ``--workers`` ``lpt worker`` stream workers (default 2, sharing the input partitions);
- ``lpt notify`` (the notification worker) and a counting SMTP server (aiosmtpd) it sends to;
- a producer (this script, ``produce`` role) publishing ``--rate`` events/s of a steady mix:
  crimes now at the police.uk sample's points, and the synthetic generator's registrations,
  survey answers, set-ups and door knocks (``producers.synthetic``), ``--crime-share`` crime;

and, from this process, officer HTTP clients (a supervisor scoped to Hull) calling the priority
endpoints at ``--http-rate`` requests/s in all; every ``--notify-every`` s, by turns, a "you
said, we did" update (``POST /api/v1/feedback``: the message budget and quiet hours apply, so
it is often held) or an urgent safety alert on ``notifications.requested`` (sent at once), both
to a ward of ``--residents`` residents with confirmed e-mail; and one probe crime every ``--probe-every`` s (a burglary in a cell no
event used), timed from sending to the first scorer output about its cell
(``priority.changed`` or its near-repeat ``officer.alert``): produce -> priority latency.

Every ``--sample-every`` s it samples the lag of every consumer group of the deployment
(committed offsets against end offsets; see :func:`partition_lags`), the input topics' end offsets (throughput) and the resident memory
(RSS from /proc, the process and its children) of every process. After ``--warm-up`` s (the
default: a minute, or 30% of a shorter run) the memory is taken as the start figure; the end
figure is the last sample before the producer stops. Then the producer stops and the time for
every group to drain to zero lag is measured.

**Memory bound (the verdict)**: no process's RSS may grow from start to end by more than
``max(25% of its start RSS, 50 MB)``; the least-squares slope over the samples after warm-up
is printed beside it (MB/min), which tells drift from a one-off step. The run also fails its
verdict if the lag is not back to zero within ``--drain-timeout`` s after the producer stops,
or if any process exits early.

Prints the figures and writes ``benchmarks/results/soak.json``::

    LPT_HOME=.lpt/test LPT_KAFKA_PORT=29092 LPT_PG_PORT=25432 \\
        .venv/bin/python benchmarks/soak.py --minutes 10

(``--minutes 1`` for a quick check: its memory verdict then says little.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import h3  # noqa: E402
from tqdm import tqdm  # noqa: E402

from lpt.settings import Settings, get_settings  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "soak.json"
#: Each process's log of the last run (JSON lines, warnings and errors only).
LOGS = ROOT / "benchmarks" / "results" / "soak-logs"
LPT = [sys.executable, "-m", "lpt.cli"]
HULL = "E06000010"
SUPERVISOR = "soak.supervisor"
#: Growth allowed from start (after warm-up) to end: the larger of a share and a floor.
MEMORY_GROWTH_SHARE = 0.25
MEMORY_GROWTH_FLOOR_MB = 50.0
CRIME_TYPES = [
    ("Violence and sexual offences", 30), ("Anti-social behaviour", 25),
    ("Criminal damage and arson", 10), ("Shoplifting", 8), ("Other theft", 7),
    ("Vehicle crime", 6), ("Burglary", 5), ("Public order", 5), ("Drugs", 2),
    ("Other crime", 1), ("Robbery", 1),
]  # fmt: skip


# --------------------------------------------------------------------------- processes


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as fh:
                out.extend(int(c) for c in fh.read().split())
    return out


def rss_mb(pid: int, children: bool = True) -> float | None:
    """Resident memory of ``pid`` (and its descendants) in MB (VmRSS), None once it is gone."""
    total_kb = 0
    todo = [pid]
    found = False
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    found = True
                    break
        if children:
            todo.extend(_children(p))
    return round(total_kb / 1024, 1) if found else None


@dataclass
class Child:
    """One process of the soak, its output kept in a log file for failure messages."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def producer_counts(producer: Child) -> dict[str, int]:
    """The producer's last words: events published per topic (a JSON line on its stdout)."""
    for line in reversed(producer.tail(200).splitlines()):
        if line.startswith('{"published"'):
            counts: dict[str, int] = json.loads(line)["published"]
            return counts
    return {}


def spawn(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Child:
    log_path = logs / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only this script, which stops them in order
        )
    return Child(name, proc, log_path)


# --------------------------------------------------------------------------- producer role


def sample_points(data_dir: Path) -> list[tuple[float, float, str]]:
    points: dict[tuple[float, float], str] = {}
    with open(
        data_dir / "police_uk" / "2019-02-humberside-street.csv", newline="", encoding="utf-8-sig"
    ) as fh:
        for r in csv.DictReader(fh):
            if r["Latitude"] and r["Longitude"]:
                points[(float(r["Latitude"]), float(r["Longitude"]))] = r["Location"]
    return [(la, ln, street) for (la, ln), street in sorted(points.items())]


def crime_event(i: int, point: tuple[float, float, str], crime_type: str, tag: str) -> Any:
    from schemas.common import Location
    from schemas.crime import CrimeReported
    from schemas.envelope import utcnow

    lat, lng, street = point
    return CrimeReported(
        occurred_at=utcnow(),
        source="soak",
        incident_id=f"{tag}{i}",
        crime_type=crime_type,
        reported_by="Humberside Police",
        falls_within="Humberside Police",
        location=Location(lat=lat, lng=lng),
        location_text=street,
    )


#: The non-crime part of the mix: synthetic events per topic group, relative weights.
SYNTHETIC_MIX = {"residents": 2, "surveys": 2, "doorknocks": 1}
_SYNTHETIC_TOPICS = {
    "residents": ("residents.lifecycle",),
    "surveys": ("surveys.answers",),
    "doorknocks": ("doorknocks.visits", "setups.lifecycle"),  # knocks name their set-ups
}


def synthetic_streams(data_dir: Path, seed: int) -> dict[str, Any]:
    """One endless iterator of (topic, key, value) per part of :data:`SYNTHETIC_MIX`.

    The generator is chronological: registrations fill its first weeks, survey waves open
    later. Each part therefore reads its own generator (same seed, one shared geography) and
    keeps only its topics, so the mix is steady from the first second."""
    from producers.synthetic import SyntheticConfig, encoded
    from producers.synthetic_geo import load_geography

    geography = load_geography(data_dir)

    def part(topics: tuple[str, ...]) -> Any:
        run = seed
        while True:  # a fresh seed (new residents, new ids) whenever a run is used up
            config = SyntheticConfig(residents=50_000, seed=run, waves=2, start=date(2026, 1, 1))
            for name, key, value, _ in encoded(config, geography):
                if name in topics:
                    yield name, key, value
            run += 1000

    return {k: part(_SYNTHETIC_TOPICS[k]) for k in SYNTHETIC_MIX}


async def produce(args: argparse.Namespace) -> int:
    """The ``produce`` role: ``--rate`` events/s until SIGTERM; counts per topic at the end."""
    from lpt.kafka import make_producer, publish_raw
    from schemas.registry import encode
    from schemas.topics import event_key, topic_for

    settings = get_settings()
    rng = random.Random(args.seed)
    points = sample_points(settings.data_dir)
    names = [t for t, _ in CRIME_TYPES]
    weights = [w for _, w in CRIME_TYPES]
    streams = synthetic_streams(settings.data_dir, args.seed)
    parts = list(SYNTHETIC_MIX)
    part_weights = [SYNTHETIC_MIX[k] for k in parts]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    producer = make_producer(settings)
    await producer.start()
    counts: Counter[str] = Counter()
    tick = 0.1
    credit = 0.0
    i = 0
    next_at = time.perf_counter()
    try:
        while not stop.is_set():
            credit += args.rate * tick
            n, credit = int(credit), credit - int(credit)
            chunk: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
            for _ in range(n):
                if rng.random() < args.crime_share:
                    ev = crime_event(
                        i, points[rng.randrange(len(points))], rng.choices(names, weights)[0], "S"
                    )
                    chunk[topic_for(ev).name].append((event_key(ev), encode(ev)))
                    i += 1
                else:
                    name, key, value = next(streams[rng.choices(parts, part_weights)[0]])
                    chunk[name].append((key, value))
            await asyncio.gather(
                *(publish_raw(producer, settings.topic_prefix + t, m) for t, m in chunk.items())
            )
            for t, m in chunk.items():
                counts[t] += len(m)
            next_at += tick
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.perf_counter()))
    finally:
        await producer.stop()
    print(json.dumps({"published": dict(counts)}), flush=True)
    return 0


# --------------------------------------------------------------------------- set-up


async def prepare(settings: Settings, residents: int, password: str) -> None:
    """Reference data, residents with confirmed e-mail in one Hull ward, a supervisor."""
    from api.officer.accounts import AccountStore
    from benchmarks.notify_60k import insert_residents
    from reference.loaders import load_reference

    await load_reference(settings, settings.data_dir, progress=False)
    await insert_residents(settings, residents, progress=False)
    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=2)
    try:
        await AccountStore(pool).create(
            SUPERVISOR, "Soak Supervisor", "supervisor", password=password,
            local_authority_codes=(HULL,),
        )  # fmt: skip
    finally:
        await pool.close()


async def wait_ready(
    settings: Settings, children: list[Child], workers: int, timeout: float
) -> None:
    """The web service answers and every worker has registered (metrics up, groups joining)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            for c in children:
                if not c.alive():
                    raise RuntimeError(f"{c.name} exited ({c.proc.returncode}):\n{c.tail()}")
            ready = False
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(settings.base_url + "/readyz") as resp:
                    ready = resp.status == 200
            if ready:
                conn = await asyncpg.connect(settings.dsn)
                try:
                    kinds = Counter(
                        r["kind"]
                        for r in await conn.fetch(
                            "SELECT kind FROM ops_workers WHERE stopped_at IS NULL"
                        )
                    )
                finally:
                    await conn.close()
                if kinds["streams"] >= workers and kinds["notifications"] >= 1:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes not ready in {timeout:.0f} s")
            await asyncio.sleep(0.5)


# --------------------------------------------------------------------------- load


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


@dataclass
class HttpStats:
    latencies: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    errors: Counter[str] = field(default_factory=Counter)
    feedback_sent: int = 0
    alerts_sent: int = 0

    def record(self, kind: str, at: float, seconds: float, ok: bool) -> None:
        if ok:
            self.latencies[kind].append((at, seconds))
        else:
            self.errors[kind] += 1

    def summary(self, since: float) -> dict[str, Any]:
        out: dict[str, Any] = {"endpoints": {}}
        everything: list[float] = []
        for kind, values in sorted(self.latencies.items()):
            v = [s for at, s in values if at >= since]
            if kind != "feedback":
                everything.extend(v)
            out["endpoints"][kind] = {
                "requests": len(v),
                "errors": self.errors[kind],
                "p50_ms": ms(percentile(v, 0.5)),
                "p99_ms": ms(percentile(v, 0.99)),
                "max_ms": ms(max(v)) if v else None,
            }
        out["requests"] = len(everything)
        out["p50_ms"] = ms(percentile(everything, 0.5))
        out["p99_ms"] = ms(percentile(everything, 0.99))
        out["errors"] = sum(self.errors.values())
        return out


async def login(base: str, password: str) -> tuple[aiohttp.CookieJar, str]:
    jar = aiohttp.CookieJar(unsafe=True)
    async with (
        aiohttp.ClientSession(base_url=base, cookie_jar=jar) as http,
        http.post("/api/v1/auth/login", json={"username": SUPERVISOR, "password": password}) as r,
    ):
        if r.status != 200:
            raise RuntimeError(f"login failed: {r.status} {await r.text()}")
        return jar, str((await r.json())["csrf_token"])


async def http_clients(
    settings: Settings,
    base: str,
    password: str,
    args: argparse.Namespace,
    stats: HttpStats,
    stop: asyncio.Event,
) -> None:
    """``--clients`` officers on the priority endpoints, ``--http-rate`` requests/s in all."""
    from benchmarks.notify_60k import WARD

    cells: list[str] = []
    interval = args.clients / args.http_rate

    async def client(n: int) -> None:
        jar, _ = await login(base, password)
        rng = random.Random(n)
        kinds = ["list", "geojson8", "ward", "detail"]
        async with aiohttp.ClientSession(base_url=base, cookie_jar=jar) as http:
            i = n
            next_at = time.monotonic() + rng.random() * interval
            while not stop.is_set():
                kind = kinds[i % len(kinds)]
                i += 1
                if kind == "detail" and not cells:
                    continue
                path = {
                    "list": "/api/v1/priority?level=9",
                    "geojson8": "/api/v1/priority/geojson?level=8",
                    "ward": "/api/v1/priority?level=ward",
                    "detail": f"/api/v1/priority/9/{rng.choice(cells) if cells else ''}",
                }[kind]
                started = time.perf_counter()
                ok = False
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(path) as resp:
                        body = await resp.read()
                        ok = resp.status == 200
                        if ok and kind == "list" and n == 0:
                            cells[:] = [it["id"] for it in json.loads(body)["items"]][:500]
                stats.record(kind, time.monotonic(), time.perf_counter() - started, ok)
                next_at += interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))

    async def feedback() -> None:
        """Every ``--notify-every`` s, by turns: an officer's update through the API (ordinary:
        the budget and quiet hours apply, so it may be held) and an urgent safety alert
        published as a force system would (sent at once, whatever the hour)."""
        from lpt.kafka import make_producer, publish
        from schemas.envelope import utcnow
        from schemas.notifications import Audience, NotificationRequested

        jar, csrf = await login(base, password)
        producer = make_producer(settings)
        await producer.start()
        try:
            async with aiohttp.ClientSession(base_url=base, cookie_jar=jar) as http:
                n = 0
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), args.notify_every)
                    if stop.is_set():
                        return
                    n += 1
                    if n % 2 == 0:
                        alert = NotificationRequested(
                            occurred_at=utcnow(),
                            source="soak",
                            notification_id=f"soak-alert-{n}-{os.getpid()}",
                            kind="safety_alert",
                            urgent=True,
                            audience=Audience(ward_codes=[WARD]),
                            subject="Safety alert: burglaries in your street tonight",
                            body="Please lock doors and windows. Call 101 with information.",
                            sender="soak-force-system",
                            allow_reply=False,
                        )
                        await publish(producer, [alert], settings)
                        stats.alerts_sent += 1
                        continue
                    started = time.perf_counter()
                    ok = False
                    body = {
                        "subject": "You said, we did: speeding on the ring road",
                        "body": "Thank you for telling us. We have run speed checks every week.",
                        "ward_codes": [WARD],
                    }
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with http.post(
                            "/api/v1/feedback", json=body, headers={"X-CSRF-Token": csrf}
                        ) as resp:
                            await resp.read()
                            ok = resp.status in (200, 201, 202)
                    stats.record("feedback", time.monotonic(), time.perf_counter() - started, ok)
                    stats.feedback_sent += ok
        finally:
            await producer.stop()

    await asyncio.gather(*(client(n) for n in range(args.clients)), feedback())


@dataclass
class Probes:
    sent: dict[str, float] = field(default_factory=dict)
    seen: dict[str, tuple[float, str]] = field(default_factory=dict)

    def summary(self, warm_up: float) -> dict[str, Any]:
        """Percentiles over the probes sent after ``warm_up`` s (as the HTTP figures: the
        first probes measure start-up, the workers' groups still forming); the slowest three
        and the warm-up's worst are reported beside them."""
        first = min(self.sent.values(), default=0.0)
        answered = [
            (self.seen[c][0] - t, t - first) for c, t in self.sent.items() if c in self.seen
        ]
        lat = [d for d, at in answered if at >= warm_up]
        early = [d for d, at in answered if at < warm_up]
        return {
            # (latency, when the probe was sent: s after the first probe)
            "slowest": [
                {"ms": ms(d), "at_s": round(at, 1)} for d, at in sorted(answered)[::-1][:3]
            ],
            "probes": len(self.sent),
            "answered": len(answered),
            "first_output": dict(Counter(kind for _, kind in self.seen.values())),
            "after_warm_up": len(lat),
            "p50_ms": ms(percentile(lat, 0.5)),
            "p99_ms": ms(percentile(lat, 0.99)),
            "max_ms": ms(max(lat)) if lat else None,
            "warm_up_max_ms": ms(max(early)) if early else None,
        }


async def probe_latency(
    settings: Settings, every: float, probes: Probes, stop: asyncio.Event
) -> None:
    """A burglary in an unused cell every ``every`` s; time to the scorer's first word on it."""
    from aiokafka import AIOKafkaConsumer

    from lpt.kafka import make_producer, publish, topic_name
    from schemas.topics import OFFICER_ALERTS, PRIORITY_CHANGED

    used = {
        h3.cell_to_parent(h3.latlng_to_cell(la, ln, 10), 9)
        for la, ln, _ in sample_points(settings.data_dir)
    }
    rng = random.Random(5)
    watch = AIOKafkaConsumer(
        topic_name(PRIORITY_CHANGED, settings),
        topic_name(OFFICER_ALERTS, settings),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await watch.start()
    await watch.seek_to_end()

    async def watcher() -> None:
        while True:
            batch = await watch.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batch.values():
                for r in records:
                    ev = json.loads(r.value)
                    if ev.get("cell") in probes.sent and ev["cell"] not in probes.seen:
                        probes.seen[ev["cell"]] = (now, ev["type"])

    task = asyncio.create_task(watcher())
    producer = make_producer(settings, linger_ms=0)
    await producer.start()
    try:
        n = 0
        while not stop.is_set():
            while True:
                la, ln = 53.70 + rng.random() * 0.1, -0.45 + rng.random() * 0.2  # Hull
                cell = h3.cell_to_parent(h3.latlng_to_cell(la, ln, 10), 9)
                if cell not in used:
                    used.add(cell)
                    break
            ev = crime_event(n, (la, ln, "On or near Probe Street"), "Burglary", "P")
            n += 1
            await publish(producer, [ev], settings)
            probes.sent[cell] = time.perf_counter()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
        await asyncio.sleep(min(10.0, every * 2))  # the last probes' answers
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await producer.stop()
        await watch.stop()


# --------------------------------------------------------------------------- sampling


async def input_end_offsets(settings: Settings, consumer: Any) -> int:
    from aiokafka import TopicPartition

    from lpt.kafka import topic_name
    from schemas.topics import INPUT_TOPICS

    tps = [
        TopicPartition(topic_name(spec, settings), p)
        for spec in INPUT_TOPICS
        for p in range(spec.partitions or settings.topic_partitions)
    ]
    return int(sum((await consumer.end_offsets(tps)).values()))


async def take_sample(
    settings: Settings, consumer: Any, children: list[Child], t0: float
) -> dict[str, Any]:
    lags = group_totals(await partition_lags(settings))
    return {
        "t": round(time.monotonic() - t0, 1),
        "input_end_offsets": await input_end_offsets(settings, consumer),
        "lag": {g.removeprefix(settings.topic_prefix): v for g, v in sorted(lags.items())},
        "rss_mb": {c.name: rss_mb(c.proc.pid) for c in children}
        | {"driver": rss_mb(os.getpid(), children=False)},
    }


async def partition_lags(settings: Settings) -> dict[str, dict[str, int]]:
    """group -> "topic:partition" -> messages behind (lagging partitions only), for every
    consumer group of the deployment.

    A group's partitions are those it has committed; the stream input group's are every
    partition of the topics it reads (``streams.source.INPUT_SPECS``), committed or not (an
    unread partition is all lag). Not ``streams.lag.group_lag``: that one counts the stream
    input group against ``schemas.topics.INPUT_TOPICS``, which also holds
    ``setups.lifecycle`` and ``notifications.requested`` (topics the group never reads), so
    one set-up or notification request is lag that never drains."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from lpt.kafka import partitions_of, topic_name
    from streams.app import app_id
    from streams.source import INPUT_SPECS, input_group

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    await consumer.start()
    stream_input = input_group(app_id(settings))
    prefix = settings.topic_prefix
    out: dict[str, dict[str, int]] = {}
    try:
        groups = {str(g[0]) for g in await admin.list_consumer_groups()} | {stream_input}
        for group in sorted(g for g in groups if g.startswith(prefix)):
            committed = {
                TopicPartition(tp.topic, tp.partition): om.offset
                for tp, om in (await admin.list_consumer_group_offsets(group)).items()
                if om.offset >= 0
            }
            tps = set(committed)
            if group == stream_input:
                names = [topic_name(spec, settings) for spec in INPUT_SPECS]
                for topic, parts in (await partitions_of(admin, names)).items():
                    tps.update(TopicPartition(topic, p) for p in parts)
            ends = await consumer.end_offsets(list(tps)) if tps else {}
            starts = await consumer.beginning_offsets(list(tps)) if tps else {}
            out[group.removeprefix(prefix)] = {
                f"{tp.topic.removeprefix(prefix)}:{tp.partition}": behind
                for tp in sorted(tps)
                if (behind := ends[tp] - committed.get(tp, starts[tp])) > 0
            }
    finally:
        await consumer.stop()
        await admin.close()
    return out


def group_totals(lags: dict[str, dict[str, int]]) -> dict[str, int]:
    return {g: sum(parts.values()) for g, parts in lags.items()}


async def wait_drained(settings: Settings, timeout: float) -> bool:
    """Until every group has no lag and the scorer has settled, twice in a row."""
    from streams.cli import scorer_settled

    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline:
        lags = await partition_lags(settings)
        if not any(lags.values()) and await scorer_settled(settings):
            quiet += 1
            if quiet >= 2:
                return True
        else:
            quiet = 0
        await asyncio.sleep(0.5)
    return False


def slope_mb_per_min(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    xs = [t / 60 for t, _ in points]
    ys = [v for _, v in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return (
        round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den, 2)
        if den
        else None
    )


def memory_report(samples: list[dict[str, Any]], warm_up: float) -> dict[str, Any]:
    steady = [s for s in samples if s["t"] >= warm_up] or samples[-1:]
    start, end = steady[0], steady[-1]
    out: dict[str, Any] = {}
    for name in end["rss_mb"]:
        a, b = start["rss_mb"].get(name), end["rss_mb"].get(name)
        if a is None or b is None:
            out[name] = {"start_mb": a, "end_mb": b, "within_bound": False}
            continue
        allowed = max(MEMORY_GROWTH_SHARE * a, MEMORY_GROWTH_FLOOR_MB)
        out[name] = {
            "start_mb": a,
            "end_mb": b,
            "max_mb": max(s["rss_mb"].get(name) or 0 for s in steady),
            "growth_mb": round(b - a, 1),
            "growth_pct": round((b - a) / a * 100, 1) if a else None,
            "allowed_growth_mb": round(allowed, 1),
            "slope_mb_per_min": slope_mb_per_min(
                [(s["t"], s["rss_mb"][name]) for s in steady if s["rss_mb"].get(name)]
            ),
            "within_bound": name == "driver" or b - a <= allowed,
        }
    return out


async def scrape_totals(base: str) -> dict[str, Any]:
    """Whole-system counters from the web service's aggregated /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
        text = await resp.text()
    notifications: Counter[str] = Counter()
    processed: Counter[str] = Counter()
    dead: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "lpt_notifications_total":
                notifications[f"{s.labels['channel']}:{s.labels['status']}"] += int(s.value)
            elif s.name == "lpt_events_processed_total":
                processed[s.labels["group"]] += int(s.value)
            elif s.name == "lpt_dead_letters_total":
                dead[s.labels["topic"]] += int(s.value)
    return {
        "notifications": dict(notifications),
        "events_processed_by_group": dict(processed),
        "dead_letters": dict(dead),
    }


# --------------------------------------------------------------------------- the run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    from benchmarks.gateway_rate import _free_port, settings_env
    from benchmarks.notify_60k import SmtpServerProcess
    from lpt.scratch import create_scratch, drop_scratch

    base = get_settings()
    tmp = Path(tempfile.mkdtemp(prefix="lpt-soak-"))
    password = "soak-" + os.urandom(8).hex()
    duration = args.minutes * 60
    warm_up = args.warm_up if args.warm_up is not None else min(60.0, 0.3 * duration)
    children: list[Child] = []
    smtp: SmtpServerProcess | None = None
    settings: Settings | None = None
    stop_load = asyncio.Event()
    load_tasks: list[asyncio.Task[None]] = []
    # Ctrl-C and SIGTERM cancel this coroutine, so the clean-up below runs; during the
    # clean-up they are ignored (a second Ctrl-C would otherwise leave processes behind).
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main_task.cancel)
    try:
        smtp = SmtpServerProcess()
        settings = await create_scratch(
            base,
            "soak",
            http_host="127.0.0.1",
            http_port=_free_port(),
            cookie_secure=False,
            demo_mode=False,
            master_key_file=tmp / "secrets" / "master.key",
            link_key_file=tmp / "secrets" / "link.key",
            smtp_url=f"smtp://127.0.0.1:{smtp.port}",
            metrics_host="127.0.0.1",
            metrics_port=0,
            survey_auto_waves=False,
            home=tmp / "home",
        )
        print(f"scratch prefix {settings.topic_prefix}; preparing ...", file=sys.stderr)
        await prepare(settings, args.residents, password)
        env = {**os.environ, **settings_env(settings), "LPT_LOG_LEVEL": "warning"}
        env["LPT_LOG_FORMAT"] = "json"
        children.append(spawn("web", [*LPT, "serve"], env, tmp))
        for n in range(args.workers):
            children.append(spawn(f"stream-worker-{n + 1}", [*LPT, "worker"], env, tmp))
        children.append(spawn("notify-worker", [*LPT, "notify"], env, tmp))
        await wait_ready(settings, children, args.workers, timeout=120)
        produce_argv = [
            sys.executable, str(Path(__file__).resolve()), "produce", "--rate", str(args.rate),
            "--crime-share", str(args.crime_share), "--seed", str(args.seed),
        ]  # fmt: skip
        producer = spawn("producer", produce_argv, env, tmp)
        children.append(producer)
        print(
            f"running {args.minutes:g} min: {args.rate} events/s, {args.workers} stream workers,"
            f" {args.clients} HTTP clients at {args.http_rate} req/s, warm-up {warm_up:.0f} s",
            file=sys.stderr,
        )

        http = HttpStats()
        probes = Probes()
        load_tasks = [
            asyncio.create_task(
                http_clients(settings, settings.base_url, password, args, http, stop_load)
            ),
            asyncio.create_task(probe_latency(settings, args.probe_every, probes, stop_load)),
        ]
        offsets = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
        await offsets.start()
        samples: list[dict[str, Any]] = []
        t0 = time.monotonic()
        bar = tqdm(
            total=int(duration), unit="s", desc="soak", file=sys.stderr, disable=args.no_progress
        )
        try:
            while time.monotonic() - t0 < duration:
                for c in children:
                    if not c.alive():
                        raise RuntimeError(f"{c.name} exited ({c.proc.returncode}):\n{c.tail()}")
                for t in load_tasks:
                    if t.done() and t.exception() is not None:
                        raise RuntimeError("load generator failed") from t.exception()
                sample = await take_sample(settings, offsets, children, t0)
                samples.append(sample)
                bar.n = min(int(duration), int(sample["t"]))
                bar.set_postfix(lag=sum(sample["lag"].values()), refresh=False)
                bar.refresh()
                await asyncio.sleep(
                    max(0.0, args.sample_every - (time.monotonic() - t0 - sample["t"]))
                )
            samples.append(await take_sample(settings, offsets, children, t0))
            bar.close()

            # Producer and load stop; how long until every group has drained?
            producer.stop()
            stop_load.set()
            await asyncio.gather(*load_tasks)
            drain_started = time.monotonic()
            drained = await wait_drained(settings, args.drain_timeout)
            drain_s = time.monotonic() - drain_started
            final = await take_sample(settings, offsets, children, t0)
            stuck = {} if drained else await partition_lags(settings)
        finally:
            await offsets.stop()
        totals = await scrape_totals(settings.base_url)
        published = producer_counts(producer)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: print("cleaning up, please wait", file=sys.stderr))
        stop_load.set()
        for t in load_tasks:
            t.cancel()
        for t in load_tasks:
            with contextlib.suppress(BaseException):
                await t
        for c in reversed(children):
            c.stop()
        if children:
            shutil.rmtree(LOGS, ignore_errors=True)
            LOGS.mkdir(parents=True)
            for c in children:
                with contextlib.suppress(OSError):
                    shutil.copy(c.log_path, LOGS / c.log_path.name)
        accepted = smtp.stop() if smtp is not None else 0
        if settings is not None:
            await drop_scratch(settings)
        shutil.rmtree(tmp, ignore_errors=True)

    steady = [s for s in samples if s["t"] >= warm_up] or samples
    window = steady[-1]["t"] - steady[0]["t"]
    produced = steady[-1]["input_end_offsets"] - steady[0]["input_end_offsets"]
    input_group = next((g for g in steady[-1]["lag"] if g.endswith("streams-input")), None)
    consumed = produced - (
        (steady[-1]["lag"].get(input_group, 0) - steady[0]["lag"].get(input_group, 0))
        if input_group
        else 0
    )
    groups = sorted({g for s in samples for g in s["lag"]})
    memory = memory_report(samples, warm_up)
    http_summary = http.summary(since=t0 + warm_up)
    verdict = {
        "memory_bound": (
            f"RSS growth from start (after {warm_up:.0f} s warm-up) to end <= "
            f"max({MEMORY_GROWTH_SHARE:.0%} of start, {MEMORY_GROWTH_FLOOR_MB:.0f} MB) per process"
        ),
        "memory_ok": all(m["within_bound"] for m in memory.values()),
        "lag_drained": drained,
        "processes_survived": True,
    }
    verdict["passed"] = verdict["memory_ok"] and drained
    return {
        "minutes": args.minutes,
        "warm_up_s": warm_up,
        "rate_events_per_s": args.rate,
        "crime_share": args.crime_share,
        "stream_workers": args.workers,
        "http": {"clients": args.clients, "target_requests_per_s": args.http_rate, **http_summary},
        "feedback_updates_sent": http.feedback_sent,
        "urgent_alerts_sent": http.alerts_sent,
        "residents_in_ward": args.residents,
        "smtp_accepted": accepted,
        "throughput": {
            "window_s": round(window, 1),
            "produced_per_s": round(produced / window, 1) if window else None,
            "stream_input_consumed_per_s": round(consumed / window, 1) if window else None,
            "published_by_topic": published,
        },
        "lag": {
            "max_by_group": {g: max(s["lag"].get(g, 0) for s in samples) for g in groups},
            "final_by_group_before_drain": samples[-1]["lag"],
            "drained_to_zero": drained,
            "drain_seconds": round(drain_s, 1),
            "after_drain": final["lag"],
            "lagging_partitions_after_drain": stuck,
        },
        "produce_to_priority": probes.summary(warm_up),
        "memory": memory,
        "totals_from_metrics": totals,
        "verdict": verdict,
        "samples": samples,
        "cpu_count": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def render(r: dict[str, Any]) -> str:
    h, t, lag, p = r["http"], r["throughput"], r["lag"], r["produce_to_priority"]
    lines = [
        f"soak {r['minutes']:g} min (warm-up {r['warm_up_s']:.0f} s), {r['stream_workers']} stream"
        f" workers, target {r['rate_events_per_s']} events/s",
        f"throughput: produced {t['produced_per_s']}/s, stream input consumed"
        f" {t['stream_input_consumed_per_s']}/s over {t['window_s']} s",
        "max lag by group: " + ", ".join(f"{g} {v:,}" for g, v in lag["max_by_group"].items()),
        "lag at end: "
        + ", ".join(f"{g} {v:,}" for g, v in lag["final_by_group_before_drain"].items()),
        f"drained to zero after the producer stopped: {lag['drained_to_zero']}"
        f" in {lag['drain_seconds']} s",
        *(
            [f"still lagging after the drain: {json.dumps(lag['lagging_partitions_after_drain'])}"]
            if not lag["drained_to_zero"]
            else []
        ),
        f"HTTP: {h['requests']} requests, p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms,"
        f" {h['errors']} errors; feedback updates {r['feedback_updates_sent']}, urgent alerts"
        f" {r['urgent_alerts_sent']},"
        f" e-mails accepted {r['smtp_accepted']}",
        f"notification statuses (from /metrics): {r['totals_from_metrics']['notifications']}",
        f"produce -> priority: {p['answered']}/{p['probes']} probes answered; after warm-up"
        f" ({p['after_warm_up']}) p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms;"
        f" during warm-up max {p['warm_up_max_ms']} ms",
        f"{'process':18} {'start MB':>9} {'end MB':>8} {'growth':>8} {'allowed':>8} {'MB/min':>7}",
    ]
    for name, m in r["memory"].items():
        lines.append(
            f"{name:18} {m['start_mb']!s:>9} {m['end_mb']!s:>8} {m.get('growth_mb')!s:>8}"
            f" {m.get('allowed_growth_mb', '-')!s:>8} {m.get('slope_mb_per_min')!s:>7}"
            + ("" if m["within_bound"] else "  OVER")
        )
    v = r["verdict"]
    lines.append(f"bound: {v['memory_bound']}")
    lines.append(f"verdict: {'PASS' if v['passed'] else 'FAIL'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    p = sub.add_parser("produce", help="(internal) the producer process")
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--crime-share", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=11)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run")
    parser.add_argument("--warm-up", type=float, default=None, help="s (default min(60, 30%%))")
    parser.add_argument("--rate", type=float, default=200, help="events/s produced")
    parser.add_argument("--crime-share", type=float, default=0.5, help="share of crime events")
    parser.add_argument("--workers", type=int, default=2, help="stream workers")
    parser.add_argument("--clients", type=int, default=4, help="concurrent officer clients")
    parser.add_argument("--http-rate", type=float, default=20, help="HTTP requests/s in all")
    parser.add_argument("--notify-every", type=float, default=30, help="s between updates")
    parser.add_argument("--residents", type=int, default=200, help="residents in the ward")
    parser.add_argument("--probe-every", type=float, default=5, help="s between probe crimes")
    parser.add_argument("--sample-every", type=float, default=10, help="s between samples")
    parser.add_argument("--drain-timeout", type=float, default=120, help="s to reach zero lag")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if args.role == "produce":
        sys.exit(asyncio.run(produce(args)))
    if args.minutes <= 0 or args.rate <= 0 or args.http_rate <= 0 or args.workers < 1:
        parser.error("--minutes, --rate, --http-rate must be positive and --workers at least 1")

    try:
        result = asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(
            "interrupted: processes stopped, scratch topics and database removed", file=sys.stderr
        )
        sys.exit(130)
    print(render(result))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {RESULTS.relative_to(ROOT)}")
    sys.exit(0 if result["verdict"]["passed"] else 1)


if __name__ == "__main__":
    main()
