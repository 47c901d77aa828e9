"""Helpers for the stream worker tests: run ``lpt worker`` as a real process against the test
Kafka and PostgreSQL, wait for it, read what it wrote."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from lpt.scratch import create_database
from lpt.settings import Settings
from streams.cli import fetch_cells, stream_groups, wait_until_idle

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
    raise AssertionError("stream worker not idle in time:\n" + "\n".join(w.tail() for w in workers))


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
