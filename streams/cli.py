"""``lpt cells`` (the priority table, for analysts and checks) and ``lpt wait-idle``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError

from lpt.logs import get_logger
from lpt.settings import Settings, get_settings
from streams.lag import LagProbe, group_lag

log = get_logger(__name__)

LEVEL_OF_RES = {9: "res9", 8: "res8", 7: "res7"}


async def fetch_cells(settings: Settings, level: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(settings.dsn)
    try:
        rows = await conn.fetch(
            "SELECT area_id, score, rank, areas_ranked, in_top, components, reasons, actions,"
            " streets, counts, survey, engagement, ward_code, local_authority_code, as_of,"
            " weights_version FROM priority_areas WHERE level = $1 ORDER BY rank",
            level,
        )
    finally:
        await conn.close()
    out = []
    for r in rows:
        components = json.loads(r["components"])
        out.append(
            {
                "cell": r["area_id"],
                "score": r["score"],
                "rank": r["rank"],
                "cells_ranked": r["areas_ranked"],
                "in_top": r["in_top"],
                "components": {k: v["raw"] for k, v in components.items()},
                "percentiles": {k: v["percentile"] for k, v in components.items()},
                "reasons": json.loads(r["reasons"]),
                "actions": json.loads(r["actions"]),
                "streets": json.loads(r["streets"]),
                "counts": json.loads(r["counts"]),
                "survey": json.loads(r["survey"]) if r["survey"] else None,
                "engagement": json.loads(r["engagement"]),
                "ward_code": r["ward_code"],
                "local_authority_code": r["local_authority_code"],
                "as_of": r["as_of"].isoformat().replace("+00:00", "Z"),
                "weights_version": r["weights_version"],
            }
        )
    return out


def cells(args: argparse.Namespace) -> int:
    """``lpt cells --res 9 [--json]``: every cell with score, rank, raw components, reasons."""
    level = LEVEL_OF_RES.get(args.res)
    if level is None:
        print(f"--res must be one of {sorted(LEVEL_OF_RES)}", file=sys.stderr)
        return 2
    rows = asyncio.run(fetch_cells(get_settings(), level))
    if args.json:
        json.dump(rows, sys.stdout, indent=None, separators=(",", ":"))
        sys.stdout.write("\n")
        return 0
    print(f"{'rank':>5} {'cell':16} {'score':>6}  top reason")
    for r in rows:
        reason = r["reasons"][0]["text"] if r["reasons"] else ""
        print(f"{r['rank']:>5} {r['cell']:16} {r['score']:6.3f}  {reason[:90]}")
    print(f"{len(rows)} cells, as of {rows[0]['as_of'] if rows else '-'}")
    return 0


# --------------------------------------------------------------------------- wait-idle


async def scorer_settled(settings: Settings, conn: asyncpg.Connection | None = None) -> bool:
    """True unless the scorer still has deferred rows to write (or has not reported yet while
    cells exist)."""
    own = conn is None
    if conn is None:
        conn = await asyncpg.connect(settings.dsn)
    try:
        row = await conn.fetchrow("SELECT settled FROM priority_status WHERE id = 'scorer'")
    except asyncpg.UndefinedTableError:
        return True
    finally:
        if own:
            await conn.close()
    return row is None or bool(row["settled"])


#: Seconds between "cannot reach Kafka or PostgreSQL" warnings while waiting.
UNREACHABLE_EVERY = 10.0


async def wait_until_idle(
    settings: Settings, timeout: float, poll: float = 0.5, only: Sequence[str] | None = None
) -> bool:
    """True once two checks in a row found no lag and the scorer settled; False at ``timeout``.
    A broker or database restart is not a reason to give up waiting (clients are reopened)."""
    deadline = time.monotonic() + timeout
    quiet_checks = 0
    told = -UNREACHABLE_EVERY
    while time.monotonic() < deadline:
        server = "postgresql"
        try:
            conn = await asyncpg.connect(settings.dsn)
            try:
                server = "kafka"
                async with LagProbe(settings) as probe:
                    while time.monotonic() < deadline:
                        lags = await probe.lags(only)
                        idle = all(v == 0 for v in lags.values())
                        if idle and await scorer_settled(settings, conn):
                            quiet_checks += 1
                            if quiet_checks >= 2:
                                return True
                        else:
                            quiet_checks = 0
                        await asyncio.sleep(poll)
            finally:
                await conn.close()
        except (
            KafkaError,
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
        ) as exc:
            quiet_checks = 0
            if time.monotonic() - told >= UNREACHABLE_EVERY:
                told = time.monotonic()
                log.warning(
                    "streams.wait_idle_unreachable",
                    server=server,
                    kafka=settings.bootstrap_servers,
                    error=type(exc).__name__,
                )
            await asyncio.sleep(poll)
    return False


def wait_idle(args: argparse.Namespace) -> int:
    """``lpt wait-idle [--timeout S]``: 0 once every consumer group has caught up, 1 on timeout."""
    settings = get_settings()
    if asyncio.run(wait_until_idle(settings, args.timeout)):
        print("idle")
        return 0
    lags = asyncio.run(group_lag(settings))  # Kafka unreachable: lpt.cli says so
    print("not idle after timeout: " + json.dumps(lags), file=sys.stderr)
    return 1
