"""Synthetic generator rates: generation alone, to a JSON-lines file, to Kafka, and raw aiokafka.

Usage (Kafka from the environment, started locally if not running):

    .venv/bin/python benchmarks/synthetic_rates.py [--residents 100000] [--seed 7] [--keep]
    # against the test servers:
    LPT_HOME=.lpt/test LPT_KAFKA_PORT=29092 .venv/bin/python benchmarks/synthetic_rates.py

In one run, so the figures are comparable:
1. ``generate only``: every event built, encoded and keyed, sent nowhere (the generator's cost);
2. ``lpt generate --out``: :func:`producers.synthetic.write_jsonl` to a temporary file;
3. ``lpt generate`` (Kafka): :func:`producers.synthetic.publish_synthetic` to a fresh topic
   prefix (topics created like ``ensure_topics`` does for a deployment);
4. ``raw aiokafka``: the *same encoded messages*, held in memory, sent with
   ``create_batch``/``send_batch`` per partition to another fresh prefix, with the project's
   producer options (``lpt.kafka.make_producer``). The ratio to it shows what generating costs
   on top of the client.

Prints a table and writes ``benchmarks/results/synthetic_rates.json``. The topics it created
are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from lpt.kafka import ensure_topics, make_producer, wait_for_kafka  # noqa: E402
from lpt.scratch import delete_topics  # noqa: E402
from lpt.settings import Settings, get_settings  # noqa: E402
from producers.synthetic import (  # noqa: E402
    SyntheticConfig,
    encoded,
    publish_synthetic,
    write_jsonl,
)
from producers.synthetic_geo import load_geography  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "synthetic_rates.json"


@dataclass
class Measurement:
    name: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def measure_generate_only(config: SyntheticConfig) -> Measurement:
    started = time.perf_counter()
    n = sum(1 for _ in encoded(config))
    return Measurement("generate only (build, encode, key)", n, time.perf_counter() - started)


def measure_file(config: SyntheticConfig) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="lpt-syn-bench-") as tmp:
        summary = write_jsonl(config, Path(tmp) / "run.jsonl")
    return Measurement("lpt generate --out FILE.jsonl", summary.events, summary.seconds)


async def measure_kafka(config: SyntheticConfig, settings: Settings) -> Measurement:
    summary = await publish_synthetic(config, settings)
    return Measurement("lpt generate (Kafka, publish_raw)", summary.events, summary.seconds)


async def measure_raw(config: SyntheticConfig, settings: Settings) -> Measurement:
    messages: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)
    for name, key, value, _ in encoded(config):
        messages[settings.topic_prefix + name].append((key, value))
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = []
        for topic, msgs in messages.items():
            partitions = sorted(await producer.partitions_for(topic))
            batches: dict[int, Any] = {}
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
        seconds = time.perf_counter() - started
    finally:
        await producer.stop()
    total = sum(len(m) for m in messages.values())
    return Measurement("raw aiokafka create_batch/send_batch", total, seconds)


def render(results: list[Measurement], baseline: Measurement) -> str:
    lines = [f"{'measurement':40} {'events':>9} {'seconds':>8} {'events/s':>10} {'vs raw':>8}"]
    for m in results:
        ratio = f"{m.rate / baseline.rate:.3f}x" if baseline.rate else "-"
        lines.append(f"{m.name:40} {m.events:>9,} {m.seconds:>8.2f} {m.rate:>10,.0f} {ratio:>8}")
    return "\n".join(lines)


async def run(config: SyntheticConfig, keep: bool) -> dict[str, Any]:
    base = get_settings()
    if base.local_kafka:  # only Kafka: the generator never touches PostgreSQL
        from lpt.services import run_script

        base.home.mkdir(parents=True, exist_ok=True)
        run_script("kafka.sh", "start", settings=base)
        run_script("kafka.sh", "wait", settings=base)
    await wait_for_kafka(base)
    load_geography(config.data_dir or base.data_dir)  # read the files once, outside the timings
    tag = uuid.uuid4().hex[:8]
    prefix = f"{base.topic_prefix}bench-syn-{tag}."
    kafka_settings = dataclasses.replace(base, topic_prefix=prefix + "gen.")
    raw_settings = dataclasses.replace(base, topic_prefix=prefix + "raw.")
    try:
        results = [measure_generate_only(config), measure_file(config)]
        results.append(await measure_kafka(config, kafka_settings))
        raw = await measure_raw(config, raw_settings)
        results.append(raw)
    finally:
        if not keep:
            await delete_topics(base, prefix)
    print(render(results, raw))
    report = {
        "benchmark": "synthetic_rates",
        "residents": config.residents,
        "seed": config.seed,
        "waves": config.waves,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "bootstrap": base.bootstrap_servers,
        "measurements": [
            {**dataclasses.asdict(m), "rate": round(m.rate), "vs_raw": m.rate / raw.rate}
            for m in results
        ],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--residents", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--waves", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark topics")
    args = parser.parse_args()
    config = SyntheticConfig(residents=args.residents, seed=args.seed, waves=args.waves)
    asyncio.run(run(config, args.keep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
