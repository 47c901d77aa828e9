"""Sustained rate of the HTTP ingest gateway: accepted crime events per second over batched POSTs.

:func:`measure_gateway_rate` is what ``benchmarks/ingest_rates.py`` calls: it starts the web
service on a free loopback port (by default as its own ``lpt serve`` process, as in production,
so the load generator does not share its event loop), posts the given crime events in batches
from a few concurrent connections, and returns the figures. The request bodies are encoded
before the clock starts, so the figure is the gateway's: HTTP parsing, auth, validation, force
area, ledger, encoding, publishing with acks.

Run alone for a quick figure next to raw aiokafka on the same messages (fresh topics and
database, removed afterwards)::

    LPT_HOME=.lpt/test LPT_KAFKA_PORT=29092 LPT_PG_PORT=25432 \
        .venv/bin/python benchmarks/gateway_rate.py --events 50000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from lpt.settings import Settings  # noqa: E402

BENCH_SYSTEM = "gateway-benchmark"
BENCH_KEY = "gateway-benchmark-" + uuid.uuid4().hex


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``LPT_*`` environment that reproduces ``settings`` in a child process."""
    env: dict[str, str] = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.name == "ingest_api_keys":
            text = ",".join(f"{system}:{key}" for key, system in value.items())
        elif isinstance(value, bool):
            text = "1" if value else "0"
        else:
            text = str(value)
        env[f.metadata["env"]] = text
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_healthy(url: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"lpt serve exited with {proc.returncode}")
            try:
                async with session.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not become healthy in {timeout:.0f}s")
            await asyncio.sleep(0.2)


async def _post_all(
    url: str, bodies: list[bytes], concurrency: int
) -> tuple[int, int, list[float], float]:
    """POST every body; (accepted, duplicates, per-request seconds, wall seconds)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = duplicates = 0
    latencies: list[float] = []
    headers = {"X-API-Key": BENCH_KEY, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal accepted, duplicates
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    reply = await resp.json()
                    if resp.status != 202:
                        raise RuntimeError(f"gateway answered {resp.status}: {reply}")
                latencies.append(time.perf_counter() - started)
                accepted += reply["accepted"]
                duplicates += reply["duplicates"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return accepted, duplicates, latencies, wall


async def measure_gateway_rate(
    settings: Settings,
    events: Sequence[dict[str, Any]],
    *,
    batch_size: int = 500,
    concurrency: int = 4,
    separate_process: bool = True,
    startup_timeout: float = 60.0,
) -> dict[str, Any]:
    """Post ``events`` (crime event dicts, distinct incident id/version) through the gateway.

    ``settings`` names the Kafka cluster, database (migrated) and topic prefix (topics created)
    to use; a benchmark API key is added. Returns accepted events/s over the wall time of all
    POSTs and per-request latency percentiles.
    """
    port = _free_port()
    run_settings = dataclasses.replace(
        settings,
        http_host="127.0.0.1",
        http_port=port,
        ingest_api_keys={**settings.ingest_api_keys, BENCH_KEY: BENCH_SYSTEM},
        max_batch_events=max(settings.max_batch_events, batch_size),
        log_level="warning",
    )
    bodies = [
        json.dumps({"events": list(events[i : i + batch_size])}).encode()
        for i in range(0, len(events), batch_size)
    ]
    if max(len(b) for b in bodies) > run_settings.max_request_bytes:
        run_settings = dataclasses.replace(
            run_settings, max_request_bytes=max(len(b) for b in bodies) + 1024
        )
    base = f"http://127.0.0.1:{port}"
    proc: subprocess.Popen[bytes] | None = None
    runner: web.AppRunner | None = None
    try:
        if separate_process:
            env = {**os.environ, **settings_env(run_settings)}
            proc = subprocess.Popen(
                [sys.executable, "-m", "lpt.cli", "serve"],
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        else:
            from api.app import create_app

            runner = web.AppRunner(create_app(run_settings), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        await _wait_healthy(base, proc, startup_timeout)
        accepted, duplicates, latencies, wall = await _post_all(
            base + "/api/v1/ingest/events", bodies, concurrency
        )
    finally:
        if runner is not None:
            await runner.cleanup()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    latencies.sort()
    return {
        "events": len(events),
        "accepted": accepted,
        "duplicates": duplicates,
        "requests": len(bodies),
        "batch_size": batch_size,
        "concurrency": concurrency,
        "separate_process": separate_process,
        "bytes_per_event": round(sum(map(len, bodies)) / max(1, len(events)), 1),
        "seconds": round(wall, 3),
        "events_per_s": round(accepted / wall, 1) if wall > 0 else 0.0,
        "requests_per_s": round(len(bodies) / wall, 1) if wall > 0 else 0.0,
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 1),
        "latency_ms_p95": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000, 1),
    }


# --------------------------------------------------------------------------- standalone run


def synthetic_crimes(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Distinct crime.reported dicts on points around Hull (for the standalone run only)."""
    import random

    rng = random.Random(seed)
    types = ["Burglary", "Vehicle crime", "Criminal damage and arson", "Shoplifting"]
    return [
        {
            "type": "crime.reported",
            "incident_id": f"BENCH-{seed}-{i}",
            "version": 1,
            "crime_type": rng.choice(types),
            "reported_by": "Humberside Police",
            "falls_within": "Humberside Police",
            "occurred_at": "2026-03-15T00:00:00Z",
            "location": {
                "lat": round(53.70 + rng.random() * 0.12, 6),
                "lng": round(-0.45 + rng.random() * 0.2, 6),
            },
            "location_text": "On or near Example Street",
        }
        for i in range(n)
    ]


async def _raw_rate(settings: Settings, events: Sequence[dict[str, Any]]) -> float:
    """Raw aiokafka create_batch/send_batch of the same JSON bodies to a scratch topic."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from lpt.kafka import make_producer

    topic = f"{settings.topic_prefix}raw-gateway-baseline"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, settings.topic_partitions, 1)])
    finally:
        await admin.close()
    messages = [(e["incident_id"].encode(), json.dumps(e).encode()) for e in events]
    producer = make_producer(settings)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        started = time.perf_counter()
        batches: dict[int, Any] = {}
        futures = []
        for key, value in messages:
            part = producer._partitioner(key, partitions, partitions)
            batch = batches.setdefault(part, producer.create_batch())
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=part))
                batch = batches[part] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for part, batch in batches.items():
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=part))
        await asyncio.gather(*futures)
        return len(messages) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def _standalone(args: argparse.Namespace) -> dict[str, Any]:
    from lpt.scratch import create_scratch, drop_scratch
    from lpt.settings import get_settings

    settings = await create_scratch(get_settings(), "gwbench")
    try:
        events = synthetic_crimes(args.events)
        gateway = await measure_gateway_rate(
            settings,
            events,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            separate_process=not args.in_process,
        )
        raw = await _raw_rate(settings, events)
        gateway["raw_aiokafka_send_batch_per_s"] = round(raw, 1)
        gateway["ratio_to_raw"] = round(gateway["events_per_s"] / raw, 4)
        return gateway
    finally:
        await drop_scratch(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--in-process", action="store_true", help="serve from this process")
    args = parser.parse_args()
    figures = asyncio.run(_standalone(args))
    for name, value in figures.items():
        print(f"{name:32} {value}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gateway_rate.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
