"""Loading the reference files into PostgreSQL (``lpt reference load``, and ``lpt up``).

Why all-or-nothing: every file is parsed and validated first, then one transaction replaces all
reference tables with binary COPY. A malformed file therefore leaves the previous data intact,
and readers never see postcodes from one load with wards from another. A hash of the source
files is kept in ``ref_loads`` so an unchanged file set is not reloaded unless forced.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from pathlib import Path

import asyncpg
from tqdm import tqdm

from lpt.logs import get_logger
from lpt.settings import Settings, get_settings
from reference.sources import (
    Parsed,
    ReferenceDataError,
    all_source_files,
    read_census_age,
    read_census_ethnic,
    read_local_authorities,
    read_lsoa_imd,
    read_postcodes,
)

log = get_logger(__name__)

#: Every dataset a complete load writes, in ``ref_loads``.
DATASETS = (
    "postcodes",
    "local_authorities",
    "lsoa_imd",
    "wards",
    "census_age",
    "census_ethnic",
)
_TABLES = (
    "ref_postcodes",
    "ref_local_authorities",
    "ref_lsoa_imd",
    "ref_wards",
    "ref_census_age",
    "ref_census_ethnic",
)
_LOCK_ID = 0x4C505452  # "LPTR": one loader at a time per database

# Wards are derived, not read: Code-Point's ward code per postcode, its authority (the most
# common one, in case a ward straddles a boundary change) and the mean of its located points.
_DERIVE_WARDS = """
INSERT INTO ref_wards (ward_code, local_authority_code, postcodes, located_postcodes, lat, lng)
SELECT ward_code,
       mode() WITHIN GROUP (ORDER BY local_authority_code),
       count(*), count(lat), avg(lat), avg(lng)
FROM ref_postcodes
WHERE ward_code IS NOT NULL
GROUP BY ward_code
"""


def _source_list(files: list[Path], data_dir: Path) -> str:
    names = []
    for f in dict.fromkeys(files):
        try:
            names.append(str(f.relative_to(data_dir)))
        except ValueError:
            names.append(str(f))
    return ", ".join(names)


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(set(files)):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _check_dir(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise ReferenceDataError(
            data_dir, "data directory not found (set LPT_DATA_DIR or pass --data-dir)"
        )


def read_all(data_dir: Path, *, progress: bool = True) -> list[Parsed]:
    """Parse and validate every file (no database access); ReferenceDataError on a bad file."""
    _check_dir(data_dir)
    steps = ["local authorities", "postcodes", "Census age", "IMD", "Census ethnic group"]
    with tqdm(total=len(steps), desc="reading", unit="file set", disable=not progress) as bar:
        bar.set_postfix_str(steps[0])
        authorities = read_local_authorities(data_dir)
        bar.update()
        bar.set_postfix_str(steps[1])
        postcodes = read_postcodes(data_dir)
        bar.update()
        bar.set_postfix_str(steps[2])
        age = read_census_age(data_dir)
        bar.update()
        bar.set_postfix_str(steps[3])
        imd = read_lsoa_imd(data_dir, authorities, age)
        bar.update()
        bar.set_postfix_str(steps[4])
        ethnic = read_census_ethnic(data_dir)
        bar.update()
    return [postcodes, authorities, imd, age, ethnic]


async def loaded_counts(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT dataset, rows FROM ref_loads")
    return {r["dataset"]: r["rows"] for r in rows}


async def _already_loaded(conn: asyncpg.Connection, fingerprint: str) -> bool:
    rows = await conn.fetch("SELECT dataset, source_sha256 FROM ref_loads")
    have = {r["dataset"]: r["source_sha256"] for r in rows}
    return all(have.get(d) == fingerprint for d in DATASETS)


async def load_reference(
    settings: Settings,
    data_dir: Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Load every reference dataset; returns rows per dataset.

    Without ``force`` nothing is written when the same files were loaded before (the counts of
    that load are returned). Raises :class:`ReferenceDataError` naming file and column when a
    file is missing or malformed; the database then keeps what it had.
    """
    counts, _ = await _load(settings, data_dir, force=force, progress=progress)
    return counts


async def _load(
    settings: Settings, data_dir: Path | None, *, force: bool, progress: bool
) -> tuple[dict[str, int], bool]:
    """(rows per dataset, whether anything was written)."""
    data_dir = Path(data_dir or settings.data_dir)
    started = time.monotonic()
    _check_dir(data_dir)
    fingerprint = _fingerprint(all_source_files(data_dir))
    conn = await asyncpg.connect(settings.dsn)
    try:
        if not force and await _already_loaded(conn, fingerprint):
            log.info("reference.unchanged", data_dir=str(data_dir))
            return await loaded_counts(conn), False
        parsed = read_all(data_dir, progress=progress)
        async with conn.transaction():
            # One loader at a time; a concurrent one that got here first makes this one moot.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
            if not force and await _already_loaded(conn, fingerprint):
                return await loaded_counts(conn), False
            counts = await _write(conn, parsed, data_dir, fingerprint, progress=progress)
    finally:
        await conn.close()
    log.info("reference.loaded", seconds=round(time.monotonic() - started, 2), **counts)
    return counts, True


async def _write(
    conn: asyncpg.Connection,
    parsed: list[Parsed],
    data_dir: Path,
    fingerprint: str,
    *,
    progress: bool,
) -> dict[str, int]:
    counts: dict[str, int] = {}
    sources: dict[str, str] = {}
    await conn.execute(f"TRUNCATE {', '.join(_TABLES)}")
    with tqdm(total=len(parsed) + 1, desc="writing", unit="table", disable=not progress) as bar:
        for p in parsed:
            bar.set_postfix_str(p.table)
            await conn.copy_records_to_table(p.table, records=p.records, columns=p.columns)
            counts[p.dataset] = len(p.records)
            sources[p.dataset] = _source_list(p.files, data_dir)
            bar.update()
        bar.set_postfix_str("ref_wards")
        status = await conn.execute(_DERIVE_WARDS)
        counts["wards"] = int(status.split()[-1])
        sources["wards"] = "derived from ref_postcodes (Code-Point ward codes, NSPL points)"
        bar.update()
    await conn.executemany(
        """INSERT INTO ref_loads (dataset, source_file, rows, loaded_at, source_sha256)
           VALUES ($1, $2, $3, now(), $4)
           ON CONFLICT (dataset) DO UPDATE SET source_file = EXCLUDED.source_file,
               rows = EXCLUDED.rows, loaded_at = EXCLUDED.loaded_at,
               source_sha256 = EXCLUDED.source_sha256""",
        [(d, sources[d], counts[d], fingerprint) for d in DATASETS],
    )
    await conn.execute("ANALYZE " + ", ".join(_TABLES))
    return {d: counts[d] for d in DATASETS}


async def load_reference_if_empty(settings: Settings) -> dict[str, int]:
    """For ``lpt up`` / ``lpt init``: load when any dataset is missing, else do nothing.

    A machine without the data files still comes up (the rest of the system runs without
    reference data); the reason is printed, not hidden.
    """
    conn = await asyncpg.connect(settings.dsn)
    try:
        have = await loaded_counts(conn)
    finally:
        await conn.close()
    if all(d in have for d in DATASETS):
        return {}
    try:
        counts = await load_reference(settings, progress=sys.stderr.isatty())
    except ReferenceDataError as exc:
        log.warning("reference.not_loaded", reason=str(exc))
        print(f"reference data not loaded: {exc}", file=sys.stderr)
        return {}
    print("reference data loaded: " + ", ".join(f"{d} {n:,}" for d, n in counts.items()))
    return counts


async def _summary(settings: Settings) -> list[str]:
    conn = await asyncpg.connect(settings.dsn)
    try:
        loads = await conn.fetch("SELECT * FROM ref_loads ORDER BY dataset")
        unlocated = await conn.fetchval("SELECT count(*) FROM ref_postcodes WHERE unlocated")
    finally:
        await conn.close()
    width = max((len(r["dataset"]) for r in loads), default=8)
    lines = [f"{r['dataset']:<{width}}  {r['rows']:>8,}  {r['source_file']}" for r in loads]
    lines.append(f"postcodes without coordinates (kept, flagged unlocated): {unlocated:,}")
    if loads:
        lines.append(f"loaded at {max(r['loaded_at'] for r in loads):%Y-%m-%d %H:%M:%S %Z}")
    return lines


async def _cli(args: argparse.Namespace) -> int:
    from lpt.db import migrate

    settings = get_settings()
    await migrate(settings)
    data_dir = args.data_dir or settings.data_dir
    started = time.monotonic()
    try:
        counts, written = await _load(
            settings, data_dir, force=args.force, progress=not getattr(args, "no_progress", False)
        )
    except ReferenceDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.monotonic() - started
    for line in await _summary(settings):
        print(line)
    total = sum(counts.values())
    if written:
        print(f"loaded {total:,} rows from {data_dir} in {elapsed:.1f}s")
    else:
        print(f"already loaded from identical files ({total:,} rows); --force reloads")
    return 0


def cli(args: argparse.Namespace) -> int:
    """``lpt reference load [--data-dir DIR] [--force]``."""
    return asyncio.run(_cli(args))
