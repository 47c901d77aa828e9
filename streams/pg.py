"""Write-through of the priority tables to PostgreSQL: set-based idempotent upserts.

One statement per batch (``unnest`` of column arrays), so writing thousands of rows is one
round trip; ``ON CONFLICT ... WHERE as_of <= EXCLUDED.as_of`` makes a re-sent batch (after a
crash or rebalance) a no-op and keeps a late, older write from a previous owner out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

_AREA_COLUMNS = (
    "level", "area_id", "resolution", "score", "rank", "areas_ranked", "in_top", "ward_code",
    "local_authority_code", "components", "reasons", "actions", "streets", "counts", "survey",
    "engagement", "extra", "as_of", "weights_version",
)  # fmt: skip
_CASTS = {
    "resolution": "(d->>'resolution')::smallint",
    "score": "(d->>'score')::float8",
    "rank": "(d->>'rank')::int",
    "areas_ranked": "(d->>'areas_ranked')::int",
    "in_top": "(d->>'in_top')::bool",
    "survey": "NULLIF(d->'survey', 'null'::jsonb)",
    "extra": "COALESCE(d->'extra', '{}'::jsonb)",
    "as_of": "to_timestamp((d->>'as_of')::float8)",
}
_JSON = {"components", "reasons", "actions", "streets", "counts", "engagement"}
_EXTRA_KEYS = ("parents", "context", "name")


def _expr(column: str) -> str:
    if column in _CASTS:
        return _CASTS[column]
    return f"d->'{column}'" if column in _JSON else f"d->>'{column}'"


_HISTORY_COLUMNS = (
    "level", "area_id", "score", "rank", "areas_ranked", "in_top", "components", "reasons",
    "as_of", "weights_version",
)  # fmt: skip

# One JSON document per row (one encode call per row instead of one per column), sent once
# for both tables: the current row and the day's snapshot are one statement (two would send
# and parse every document twice; measured as the scorer's largest socket write).
UPSERT_ROWS = f"""
WITH docs AS (SELECT d FROM unnest($1::jsonb[]) AS d),
current AS (
    INSERT INTO priority_areas ({", ".join(_AREA_COLUMNS)}, updated_at)
    SELECT {", ".join(_expr(c) for c in _AREA_COLUMNS)}, now() FROM docs
    ON CONFLICT (level, area_id) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in _AREA_COLUMNS[2:])}, updated_at = now()
    WHERE priority_areas.as_of <= EXCLUDED.as_of
)
INSERT INTO priority_history ({", ".join(_HISTORY_COLUMNS)}, day)
SELECT {", ".join(_expr(c) for c in _HISTORY_COLUMNS)},
       (to_timestamp((d->>'as_of')::float8) AT TIME ZONE 'UTC')::date
FROM docs
ON CONFLICT (level, area_id, day) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _HISTORY_COLUMNS[2:])}
WHERE priority_history.as_of <= EXCLUDED.as_of
"""

UPSERT_ANNOUNCED = """
INSERT INTO priority_announced (level, area_id, score, in_top, as_of)
SELECT u.level, u.area_id, u.score, u.in_top, to_timestamp(u.as_of)
FROM unnest($1::text[], $2::text[], $3::float8[], $4::bool[], $5::float8[])
     AS u(level, area_id, score, in_top, as_of)
ON CONFLICT (level, area_id) DO UPDATE SET
    score = EXCLUDED.score, in_top = EXCLUDED.in_top, as_of = EXCLUDED.as_of
WHERE priority_announced.as_of <= EXCLUDED.as_of
"""

UPSERT_STATUS = """
INSERT INTO priority_status (id, as_of, settled, cells, updated_at)
VALUES ('scorer', to_timestamp($1), $2, $3, now())
ON CONFLICT (id) DO UPDATE SET as_of = EXCLUDED.as_of, settled = EXCLUDED.settled,
    cells = EXCLUDED.cells, updated_at = now()
"""


def _document(row: dict[str, Any]) -> str:
    doc = {c: row.get(c) for c in _AREA_COLUMNS if c != "extra"}
    doc["extra"] = {k: row[k] for k in _EXTRA_KEYS if k in row}
    return orjson.dumps(doc).decode()


async def write_rows(conn: asyncpg.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Upsert current rows and their snapshot for the day of their ``as_of``."""
    if not rows:
        return
    await conn.execute(UPSERT_ROWS, [_document(r) for r in rows])


async def write_announced(
    conn: asyncpg.Connection, announced: Sequence[tuple[str, str, float, bool, float]]
) -> None:
    if announced:
        await conn.execute(UPSERT_ANNOUNCED, *[list(col) for col in zip(*announced, strict=True)])


async def write_status(conn: asyncpg.Connection, as_of: float, settled: bool, cells: int) -> None:
    await conn.execute(UPSERT_STATUS, as_of, settled, cells)


async def load_written(
    conn: asyncpg.Connection,
) -> dict[tuple[str, str], tuple[float, int, bool, float]]:
    """(level, area) -> (score, rank, in_top, as_of epoch) of the rows already in the table."""
    rows = await conn.fetch(
        "SELECT level, area_id, score, rank, in_top, extract(epoch FROM as_of) AS t"
        " FROM priority_areas"
    )
    return {
        (r["level"], r["area_id"]): (r["score"], r["rank"], r["in_top"], float(r["t"]))
        for r in rows
    }


async def load_announced(conn: asyncpg.Connection) -> dict[tuple[str, str], tuple[float, bool]]:
    rows = await conn.fetch("SELECT level, area_id, score, in_top FROM priority_announced")
    return {(r["level"], r["area_id"]): (r["score"], r["in_top"]) for r in rows}


def epoch_to_iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
