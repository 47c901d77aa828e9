"""Helpers for the stream worker tests: run ``lpt worker`` as a real process against the test
Kafka and PostgreSQL, wait for it, read what it wrote."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import h3

from lpt.geo import ForceArea
from lpt.scratch import create_database
from lpt.settings import Settings
from streams.cli import fetch_cells, scorer_settled, wait_until_idle
from streams.lag import group_lag, stream_groups

ROOT = Path(__file__).resolve().parent.parent


def worker_env(settings: Settings, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LPT_HOME=str(home),
        LPT_KAFKA_BOOTSTRAP=settings.bootstrap_servers,
        LPT_DATABASE_URL=settings.dsn,
        LPT_TOPIC_PREFIX=settings.topic_prefix,
        LPT_TOPIC_PARTITIONS=str(settings.topic_partitions),
        LPT_STREAM_APP_ID=settings.stream_app_id,
        LPT_STREAM_INPUT_BATCH=str(settings.stream_input_batch),
        LPT_LOG_FORMAT="console",
        LPT_LOG_LEVEL="warning",
    )
    return env


class Worker:
    """One ``python -m lpt.cli worker`` process (its log kept for failure messages)."""

    def __init__(self, settings: Settings, home: Path, name: str = "worker") -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lpt.cli", "worker"],
            cwd=ROOT,
            env=worker_env(settings, home),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def tail(self, n: int = 40) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit, no flush."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (0: state, 11/12: user and
    system CPU ticks, 16: nice); None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None


def proc_children(pid: int) -> list[int]:
    """The pids of ``pid``'s children (any of its threads may have started them)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return []
    out: list[int] = []
    for task in tasks:
        with contextlib.suppress(FileNotFoundError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def child_roles(parent: int, exclude: Collection[int] = ()) -> dict[str, int]:
    """{role: pid} of ``parent``'s children started with ``--role`` (a child between fork and
    exec still shows the parent's command line: it is left out until it has its own)."""
    out: dict[str, int] = {}
    for pid in proc_children(parent):
        if pid in exclude:
            continue
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\x00")
        except FileNotFoundError:
            continue
        if b"--role" in args[:-1]:
            out[args[args.index(b"--role") + 1].decode()] = pid
    return out


async def new_database(settings: Settings) -> Settings:
    """Settings pointing at a fresh migrated database (same Kafka and topics)."""
    return await create_database(settings, f"t_{uuid.uuid4().hex[:10]}")


def with_app(settings: Settings, app_id: str) -> Settings:
    return dataclasses.replace(settings, stream_app_id=app_id)


async def wait_idle(settings: Settings, workers: list[Worker], timeout: float = 180) -> None:
    """Until the run's group has consumed everything and the scorer has settled."""
    deadline = time.monotonic() + timeout
    groups = stream_groups(settings)
    while time.monotonic() < deadline:
        for w in workers:
            if w.proc.poll() is not None:
                raise AssertionError(f"worker exited ({w.proc.returncode}):\n{w.tail()}")
        if await wait_until_idle(settings, 5, poll=0.3, only=groups):
            return
        await asyncio.sleep(0.2)
    lags = await group_lag(settings, groups)
    settled = await scorer_settled(settings)
    raise AssertionError(
        f"stream worker not idle in time (lag {lags}, scorer settled {settled}):\n"
        + "\n".join(w.tail() for w in workers)
    )


async def cells(settings: Settings, level: str = "res9") -> dict[str, dict[str, Any]]:
    return {r["cell"]: r for r in await fetch_cells(settings, level)}


async def force_row(settings: Settings) -> dict[str, Any]:
    conn = await asyncpg.connect(settings.dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM priority_areas WHERE level = 'force'")
    finally:
        await conn.close()
    assert row is not None
    return {
        k: (json.loads(v) if k in ("components", "extra", "counts") else v) for k, v in row.items()
    }


def comparable(table: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """What two runs must agree on, cell by cell."""
    return {
        cell: (
            r["rank"],
            r["score"],
            r["as_of"],
            tuple(
                sorted((k, None if v is None else round(v, 9)) for k, v in r["components"].items())
            ),
        )
        for cell, r in table.items()
    }


# --------------------------------------------------------------------------- crime oracle

ORACLE_DAY = 86400.0
ORACLE_HARM_HALF_LIFE = 90 * ORACLE_DAY
#: Crime types that never raise harm (DESIGN §5): police-generated, and ASB (concern only).
ORACLE_NO_HARM = ("Drugs", "Possession of weapons", "Anti-social behaviour")


def oracle_harm_weights(data_dir: Path) -> dict[str, float]:
    """CCHI days per police.uk crime type, straight from the shared file, exclusions at 0."""
    weights: dict[str, float] = {}
    path = data_dir / "harm_weights" / "cchi2026_days_by_policeuk_crime_type_national.csv"
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            weights[row["crime_type"]] = float(row["cchi_days"])
    for excluded in ORACLE_NO_HARM:
        weights[excluded] = 0.0
    return weights


@dataclasses.dataclass
class CrimeOracle:
    """What the stream's res-9 tables must show for a set of police.uk rows, computed in one
    batch pass with the csv module, the shared weights file and h3 (no code shared with
    ``streams/`` or ``producers/``). Every row is one crime: nothing lost, nothing twice."""

    #: res-9 cell -> [(harm weight, event time)] of its located, in-area, harm-bearing rows
    harm: dict[str, list[tuple[float, float]]]
    #: res-9 cell -> [(crime type, event time)] of every located, in-area row
    crimes: dict[str, list[tuple[str, float]]]
    #: located rows outside the force area (counted at force level only)
    outside: int
    #: the latest event time of the rows (the tables' ``as_of``)
    as_of: float

    def harm_at(self, cell: str, now: float) -> float:
        return sum(
            w * 2 ** (-(now - t) / ORACLE_HARM_HALF_LIFE) for w, t in self.harm.get(cell, [])
        )

    def counts_at(self, cell: str, now: float, days: int) -> dict[str, int]:
        """Crimes per type whose event day lies within the last ``days`` days of ``now``."""
        today = int(now // ORACLE_DAY)
        out: Counter[str] = Counter()
        for crime_type, t in self.crimes.get(cell, []):
            if 0 <= today - int(t // ORACLE_DAY) < days:
                out[crime_type] += 1
        return dict(out)


def crime_oracle(files: Sequence[Path], data_dir: Path, boundary: Path) -> CrimeOracle:
    """The :class:`CrimeOracle` of police.uk street-level CSV ``files``."""
    weights = oracle_harm_weights(data_dir)
    rows: list[dict[str, str]] = []
    for path in files:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows.extend(r for r in csv.DictReader(fh) if r["Latitude"] and r["Longitude"])
    inside = (
        ForceArea.load(boundary)
        .contains([float(r["Latitude"]) for r in rows], [float(r["Longitude"]) for r in rows])
        .tolist()
    )
    harm: dict[str, list[tuple[float, float]]] = defaultdict(list)
    crimes: dict[str, list[tuple[str, float]]] = defaultdict(list)
    outside = 0
    latest = float("-inf")
    for r, ok in zip(rows, inside, strict=True):
        y, m = (int(x) for x in r["Month"].split("-"))
        t = datetime(y, m, 15, tzinfo=UTC).timestamp()
        latest = max(latest, t)
        if not ok:
            outside += 1
            continue
        cell = h3.cell_to_parent(
            h3.latlng_to_cell(float(r["Latitude"]), float(r["Longitude"]), 10), 9
        )
        crimes[cell].append((r["Crime type"], t))
        w = weights[r["Crime type"]]
        if w:
            harm[cell].append((w, t))
    return CrimeOracle(dict(harm), dict(crimes), outside, latest)


def oracle_differences(
    streamed: dict[str, dict[str, Any]], oracle: CrimeOracle, rel: float = 1e-6
) -> list[str]:
    """Every way the streamed res-9 table (``cells()``) differs from the oracle: event time,
    harm per cell, the set of cells with harm, and crimes per type in the 90-day window (this
    one covers every crime type, the harmless ones too). Empty when they agree."""
    out: list[str] = []
    as_of = {r["as_of"] for r in streamed.values()}
    want_as_of = datetime.fromtimestamp(oracle.as_of, UTC).isoformat().replace("+00:00", "Z")
    if as_of != {want_as_of}:
        out.append(f"as_of {sorted(as_of)[:3]} != {want_as_of}")
    for cell in sorted(oracle.harm):
        row = streamed.get(cell)
        if row is None:
            out.append(f"{cell}: cell with harm missing")
            continue
        want = oracle.harm_at(cell, oracle.as_of)
        got = row["components"]["harm"] or 0.0
        if abs(got - want) > rel * max(abs(want), 1e-9):
            out.append(f"{cell}: harm {got!r} != oracle {want!r}")
    with_harm = {c for c, r in streamed.items() if (r["components"]["harm"] or 0) > 0}
    for cell in sorted(with_harm - set(oracle.harm)):
        out.append(f"{cell}: harm {streamed[cell]['components']['harm']!r} not in the oracle")
    for cell in sorted(set(oracle.crimes) | set(streamed)):
        want_counts = oracle.counts_at(cell, oracle.as_of, 90)
        row = streamed.get(cell)
        got_counts = {
            k: v["90d"] for k, v in ((row or {}).get("counts") or {}).items() if v.get("90d")
        }
        if got_counts != want_counts:
            out.append(f"{cell}: 90-day crimes {got_counts} != oracle {want_counts}")
    return out
