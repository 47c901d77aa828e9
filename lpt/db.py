"""PostgreSQL access: connection pools and versioned migrations.

Migrations are plain SQL files ``lpt/migrations/NNN_name.sql`` applied in order, each in its
own transaction, recorded in ``schema_migrations``. An advisory lock makes concurrent start-ups
(several workers at once) apply each file exactly once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from lpt.settings import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_LOCK_ID = 0x4C5054  # "LPT"


async def connect(settings: Settings | None = None) -> asyncpg.Connection:
    return await asyncpg.connect((settings or get_settings()).dsn)


async def create_pool(
    settings: Settings | None = None, min_size: int = 1, max_size: int = 10
) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        (settings or get_settings()).dsn, min_size=min_size, max_size=max_size
    )
    assert pool is not None
    return pool


async def wait_for_postgres(settings: Settings | None = None, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            conn = await connect(settings)
            await conn.close()
            return
        except (OSError, asyncpg.PostgresError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9]_*.sql"))


async def migrate(settings: Settings | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied."""
    conn = await connect(settings)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in migration_files():
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations(name) VALUES ($1)", path.name)
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
        await conn.close()
    return applied
