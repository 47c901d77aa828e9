"""Worker health from the registry the workers keep (``ops_workers``, lpt/metrics_server.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from lpt.metrics_server import FORGET_AFTER_SECONDS, STALE_AFTER_SECONDS

Health = Literal["up", "not responding", "stopped"]


@dataclass(frozen=True)
class WorkerRow:
    name: str
    kind: str
    url: str
    host: str
    pid: int
    started_at: datetime
    last_seen: datetime
    stopped_at: datetime | None
    heartbeat_age_s: float

    @property
    def health(self) -> Health:
        if self.stopped_at is not None:
            return "stopped"
        return "up" if self.heartbeat_age_s <= STALE_AFTER_SECONDS else "not responding"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "stopped_at": self.stopped_at.isoformat() if self.stopped_at else None,
            "heartbeat_age_s": round(self.heartbeat_age_s, 1),
            "health": self.health,
        }


async def list_workers(pool: asyncpg.Pool) -> list[WorkerRow]:
    """Workers seen in the last day, live ones first (ages by the database clock)."""
    rows = await pool.fetch(
        """SELECT name, kind, url, host, pid, started_at, last_seen, stopped_at,
                  extract(epoch FROM now() - last_seen)::float8 AS age
           FROM ops_workers
           WHERE last_seen > now() - make_interval(secs => $1)
           ORDER BY stopped_at IS NOT NULL, kind, name""",
        float(FORGET_AFTER_SECONDS),
    )
    return [
        WorkerRow(
            r["name"],
            r["kind"],
            r["url"],
            r["host"],
            r["pid"],
            r["started_at"],
            r["last_seen"],
            r["stopped_at"],
            max(0.0, r["age"]),
        )
        for r in rows
    ]
