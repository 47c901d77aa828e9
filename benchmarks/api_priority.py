"""Latency of the officer priority endpoints under 100 concurrent clients, idle and during a
backfill.

What it does, all on loopback and bounded in time:

1. a fresh database and topic prefix (removed afterwards); reference postcodes for the HU area
   (NSPL points, Code-Point wards) and a priority table shaped like the stream processors'
   (every res-9 cell of those postcodes with reasons, streets and 26 days of history; res 8/7,
   ward, authority and force roll-ups);
2. the web service as its own ``lpt serve`` process (as in production), with 100 logged-in
   sessions of a supervisor scoped to Hull;
3. phase ``idle``: 100 clients loop over the priority endpoints for ``--seconds``;
4. phase ``backfill``: the same while ``lpt generate`` publishes synthetic residents, surveys
   and door knocks into Kafka, which the web service's projection consumer is busy applying;
5. ``/healthz`` under the same concurrency as the floor (what aiohttp itself costs here).

Prints p50/p99 per endpoint and phase, and writes ``benchmarks/results/api_priority.json``::

    LPT_HOME=.lpt/test LPT_KAFKA_PORT=29092 LPT_PG_PORT=25432 \\
        .venv/bin/python benchmarks/api_priority.py --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import h3  # noqa: E402

from benchmarks.gateway_rate import _free_port, _wait_healthy, settings_env  # noqa: E402
from lpt.settings import Settings, get_settings  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "api_priority.json"
HULL = "E06000010"
PASSWORD = "benchmark-password-" + uuid.uuid4().hex[:8]
TEXTS = {
    "harm": "Crime harm of {v:,.0f} harm-days (recent crimes count most), mostly burglary; "
    "higher than 90% of the force's areas",
    "near_repeat": "Burglary within about 400 m in the last 8 weeks (near-repeat risk {v:.2f})",
    "concern": "Anti-social behaviour reports and residents name speeding as a priority",
    "deprivation": "Income deprivation higher than {v:.0%} of England's areas",
}


def hu_postcodes(data_dir: Path) -> list[tuple[str, float, float, str, str | None, str | None]]:
    wards: dict[str, tuple[str, str]] = {}
    with (data_dir / "postcodes" / "codepoint_open_2014_hu.csv").open() as f:
        for row in csv.reader(f):
            pc = row[0].replace(" ", "")
            wards[pc] = (row[9], row[8])
    out = []
    with (data_dir / "postcodes" / "nspl_may2025_latlon_HU.csv").open() as f:
        reader = csv.reader(f)
        next(reader)
        for pc, lat, lng in reader:
            if not lat:
                continue
            compact = pc.replace(" ", "")
            norm = compact[:-3] + " " + compact[-3:]
            ward, la = wards.get(compact, (None, None))
            cell = h3.latlng_to_cell(float(lat), float(lng), 10)
            out.append((norm, float(lat), float(lng), cell, ward, la))
    return out


def _row(
    level: str,
    area: str,
    rank: int,
    ranked: int,
    ward: str | None,
    la: str | None,
    rng: random.Random,
) -> tuple[Any, ...]:
    comps = {
        c: {
            "raw": rng.random() * 1000,
            "percentile": rng.random(),
            "weight": 0.1,
            "data_date": "2026-03-15",
        }
        for c in ("harm", "near_repeat", "concern", "deprivation", "engagement_gap")
    }
    reasons = [
        {
            "component": c,
            "raw_value": comps[c]["raw"],
            "data_date": "2026-03-15",
            "text": TEXTS[c].format(v=comps[c]["raw"] if c != "deprivation" else rng.random()),
        }
        for c in ("harm", "near_repeat", "concern")
    ]
    streets = [
        {"street": f"On or near Street {rng.randrange(500)}", "harm": 10 - i} for i in range(5)
    ]
    actions = [
        "Short visible patrols and crime-prevention visits within 400 m of the burglary "
        "within two weeks (start with Street 1)"
    ]
    res = int(level[3:]) if level.startswith("res") else None
    score = 1.0 - rank / (ranked + 1)
    return (
        level,
        area,
        res,
        score,
        rank,
        ranked,
        rank <= ranked // 10,
        ward,
        la,
        json.dumps(comps),
        json.dumps(reasons),
        json.dumps(actions),
        json.dumps(streets),
        json.dumps({"crimes_30d": rng.randrange(40)}),
        None,
        json.dumps({"households": 300}),
        "bench",
    )


async def prepare(settings: Settings, data_dir: Path) -> list[str]:
    """Reference postcodes and priority rows; returns the res-9 cells in Hull."""
    rng = random.Random(7)
    postcodes = hu_postcodes(data_dir)
    conn = await asyncpg.connect(settings.dsn)
    try:
        await conn.copy_records_to_table(
            "ref_postcodes",
            records=[
                (pc, lat, lng, cell, False, ward, la) for pc, lat, lng, cell, ward, la in postcodes
            ],
            columns=[
                "postcode",
                "lat",
                "lng",
                "cell",
                "unlocated",
                "ward_code",
                "local_authority_code",
            ],
        )
        areas: dict[str, dict[str, tuple[str | None, str | None]]] = defaultdict(dict)
        for _, _, _, cell, ward, la in postcodes:
            for res in (9, 8, 7):
                areas[f"res{res}"].setdefault(h3.cell_to_parent(cell, res), (ward, la))
            if ward:
                areas["ward"].setdefault(ward, (ward, la))
            if la:
                areas["local_authority"].setdefault(la, (None, la))
        areas["force"]["force"] = (None, None)
        rows = []
        history = []
        today = date.today()
        for level, ids in areas.items():
            order = list(ids)
            rng.shuffle(order)
            for rank, area in enumerate(order, 1):
                ward, la = ids[area]
                rows.append(_row(level, area, rank, len(order), ward, la, rng))
                if level == "res9":
                    for d in range(26):
                        history.append(
                            (
                                level,
                                area,
                                today - timedelta(days=7 * d),
                                rng.random(),
                                rng.randrange(1, len(order) + 1),
                                len(order),
                                False,
                                "{}",
                                "[]",
                                "bench",
                            )
                        )
        await conn.executemany(
            """INSERT INTO priority_areas (level, area_id, resolution, score, rank, areas_ranked,
                   in_top, ward_code, local_authority_code, components, reasons, actions,
                   streets, counts, survey, engagement, as_of, weights_version)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                       now(), $17)""",
            rows,
        )
        await conn.executemany(
            """INSERT INTO priority_history (level, area_id, day, score, rank, areas_ranked,
                   in_top, components, reasons, as_of, weights_version)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, now(), $10)""",
            history,
        )
        from api.officer.accounts import hash_password

        await conn.execute(
            """INSERT INTO officer_accounts (account_id, username, display_name, role,
                   local_authority_codes, password_hash)
               VALUES ('o-benchmark-supervisor', 'bench.supervisor', 'Bench', 'supervisor',
                       $1, $2)""",
            [HULL],
            hash_password(PASSWORD),
        )
        print(
            f"prepared {len(postcodes):,} postcodes, {len(rows):,} priority rows, "
            f"{len(history):,} history rows",
            file=sys.stderr,
        )
        return [a for a, (_, la) in areas["res9"].items() if la == HULL]
    finally:
        await conn.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(
    base: str,
    cookies: list[aiohttp.CookieJar],
    cells: list[str],
    seconds: float,
    paths: list[str] | None = None,
) -> dict[str, Any]:
    """``len(cookies)`` concurrent clients loop over the endpoints for ``seconds``."""
    endpoints = paths or ["list", "detail", "geojson8", "ward"]
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    deadline = time.monotonic() + seconds

    def url(kind: str, rng: random.Random) -> str:
        return {
            "list": "/api/v1/priority?level=9",
            "detail": f"/api/v1/priority/9/{rng.choice(cells)}",
            "geojson8": "/api/v1/priority/geojson?level=8",
            "ward": "/api/v1/priority?level=ward",
            "healthz": "/healthz",
        }[kind]

    async def client(jar: aiohttp.CookieJar, n: int) -> None:
        rng = random.Random(n)
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(
            base_url=base, cookie_jar=jar, connector=connector
        ) as http:
            i = n
            while time.monotonic() < deadline:
                kind = endpoints[i % len(endpoints)]
                i += 1
                started = time.perf_counter()
                try:
                    async with http.get(url(kind, rng)) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok = False
                elapsed = time.perf_counter() - started
                if ok:
                    latencies[kind].append(elapsed)
                else:
                    errors[kind] += 1

    started = time.monotonic()
    await asyncio.gather(*(client(jar, n) for n, jar in enumerate(cookies)))
    wall = time.monotonic() - started
    out: dict[str, Any] = {"seconds": round(wall, 1), "endpoints": {}}
    total = 0
    for kind in endpoints:
        values = latencies[kind]
        total += len(values)
        out["endpoints"][kind] = {
            "requests": len(values),
            "errors": errors[kind],
            "p50_ms": round(percentile(values, 0.50) * 1000, 1),
            "p99_ms": round(percentile(values, 0.99) * 1000, 1),
            "mean_ms": round(statistics.fmean(values) * 1000, 1) if values else None,
        }
    out["requests_per_s"] = round(total / wall, 1)
    allv = [v for k in endpoints for v in latencies[k]]
    out["p50_ms"] = round(percentile(allv, 0.5) * 1000, 1)
    out["p99_ms"] = round(percentile(allv, 0.99) * 1000, 1)
    return out


async def login_all(base: str, clients: int) -> list[aiohttp.CookieJar]:
    jars = []
    for _ in range(clients):
        jar = aiohttp.CookieJar(unsafe=True)
        async with (
            aiohttp.ClientSession(base_url=base, cookie_jar=jar) as http,
            http.post(
                "/api/v1/auth/login", json={"username": "bench.supervisor", "password": PASSWORD}
            ) as resp,
        ):
            if resp.status != 200:
                raise RuntimeError(f"login failed: {resp.status} {await resp.text()}")
        jars.append(jar)
    return jars


async def published(settings: Settings) -> int:
    """Messages on the input topics the generator writes (end minus beginning offsets)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from lpt.kafka import topic_name
    from schemas.topics import DOORKNOCKS, RESIDENTS, SETUPS, SURVEYS

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic_name(spec, settings), p)
            for spec in (RESIDENTS, SURVEYS, DOORKNOCKS, SETUPS)
            for p in range(spec.partitions or settings.topic_partitions)
        ]
        end = await consumer.end_offsets(tps)
        begin = await consumer.beginning_offsets(tps)
        return int(sum(end.values()) - sum(begin.values()))
    finally:
        await consumer.stop()


async def projected(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.dsn)
    try:
        n = await conn.fetchval(
            "SELECT (SELECT count(*) FROM officer_area_activity) + "
            "(SELECT count(*) FROM officer_doorknocks)"
        )
        return int(n)
    finally:
        await conn.close()


async def wait_for_backfill(settings: Settings, proc: subprocess.Popen[bytes]) -> float:
    """Seconds until the generator's events are flowing (it loads its geography first)."""
    started = time.monotonic()
    while await published(settings) < 1000:
        if proc.poll() is not None:
            raise RuntimeError(f"lpt generate exited early with {proc.returncode}")
        if time.monotonic() - started > 180:
            raise RuntimeError("the backfill did not start publishing within 180 s")
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from lpt.scratch import create_scratch, drop_scratch

    base_settings = get_settings()
    settings = await create_scratch(
        base_settings,
        "apibench",
        http_host="127.0.0.1",
        http_port=_free_port(),
        cookie_secure=False,
        demo_mode=False,
        master_key_file=base_settings.home / "secrets" / "bench-master.key",
    )
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, **settings_env(settings), "LPT_LOG_LEVEL": "warning"}
    try:
        cells = await prepare(settings, settings.data_dir)
        web = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "lpt"), "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(web)
        url = settings.base_url
        await _wait_healthy(url, web, 60)
        jars = await login_all(url, args.clients)
        # Warm-up: first queries of each kind (area index, prepared statements).
        await load(url, jars[:4], cells, 2.0)
        result: dict[str, Any] = {
            "clients": args.clients,
            "seconds_per_phase": args.seconds,
            "cells_in_scope": len(cells),
            "floor_healthz": await load(url, jars, cells, min(args.seconds, 10), ["healthz"]),
            "idle": await load(url, jars, cells, args.seconds),
        }
        backfill = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "lpt"),
                "generate",
                "--residents",
                str(args.residents),
                "--no-progress",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        procs.append(backfill)
        waited = await wait_for_backfill(settings, backfill)
        events_before = await published(settings)
        projected_before = await projected(settings)
        result["backfill"] = await load(url, jars, cells, args.seconds)
        events_after = await published(settings)
        projected_after = await projected(settings)
        seconds = result["backfill"]["seconds"]
        result["backfill"]["backfill_started_after_s"] = round(waited, 1)
        result["backfill"]["events_published_per_s"] = round(
            (events_after - events_before) / seconds, 1
        )
        result["backfill"]["events_projected_per_s"] = round(
            (projected_after - projected_before) / seconds, 1
        )
        result["backfill_running_at_end"] = backfill.poll() is None
        result["backfill_command"] = f"lpt generate --residents {args.residents}"
        return result
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        await drop_scratch(settings)


def render(result: dict[str, Any]) -> str:
    lines = [
        f"{'phase':9} {'endpoint':9} {'requests':>9} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8}"
    ]
    for phase in ("floor_healthz", "idle", "backfill"):
        block = result[phase]
        for kind, f in block["endpoints"].items():
            lines.append(
                f"{phase[:9]:9} {kind:9} {f['requests']:>9} {f['errors']:>6} "
                f"{f['p50_ms']:>8} {f['p99_ms']:>8}"
            )
        lines.append(
            f"{phase[:9]:9} {'all':9} {block['requests_per_s']:>8}/s {'':>6} "
            f"{block['p50_ms']:>8} {block['p99_ms']:>8}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--residents",
        type=int,
        default=200_000,
        help="size of the synthetic backfill (it is stopped when the run ends)",
    )
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(render(result))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
