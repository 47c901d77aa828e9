"""Rotating the master key: re-wrap every per-person key under a new master key.

Why it is cheap and safe: the master key only wraps the per-person keys in ``identity_keys``
(DESIGN §6); sealed fields in Kafka and elsewhere are encrypted with the per-person keys, which
do not change, so nothing in the immutable log needs rewriting.

Procedure (``lpt rotate-master-key``):

1. The new key is written next to the current one as ``<file>.new`` (mode 0600, fsync'd).
2. In ONE transaction, with ``identity_keys`` locked against writes, every wrapped key is
   unwrapped with the old master and wrapped with the new one. Any row that does not unwrap
   aborts the whole rotation: nothing changes.
3. After the commit, the old file is kept as ``<file>.retired-<UTC time>`` and ``<file>.new``
   replaces ``<file>`` (an atomic rename).

A crash between 2 and 3 leaves ``<file>.new`` beside the old file; the next run notices, checks
which key opens the stored rows and finishes (or discards a stale ``.new``).

Processes that hold the master key in memory (the web service, the notification workers) must
be stopped during the rotation and started afterwards: a key they wrap with the old master
after the rotation would be unreadable. The public pages' CSRF key is derived from the master
and changes with it (a form open during the rotation must be reloaded). Unsubscribe links are
signed with the link key (:mod:`identity.linkkey`), a secret of its own: the rotation makes
sure it exists (seeded from the current master key, which links mailed before it existed were
signed with) before the master key changes, so links already mailed keep working.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from tqdm import tqdm

from identity.crypto import KEY_BYTES, SealError, new_key, unwrap_key, wrap_key
from identity.linkkey import load_link_key
from lpt.db import connect
from lpt.logs import get_logger
from lpt.settings import Settings, get_settings

log = get_logger(__name__)


class RotationError(RuntimeError):
    """The rotation could not be done; nothing was changed."""


@dataclass(frozen=True)
class RotationResult:
    rewrapped: int
    retired_file: Path | None
    recovered: bool = False


def _read_key(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) != KEY_BYTES:
        raise RotationError(f"{path} must hold exactly {KEY_BYTES} bytes")
    return data


def _write_key(path: Path, key: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())


def _pending(path: Path) -> Path:
    return path.with_name(path.name + ".new")


def _retire(path: Path, pending: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    retired = path.with_name(f"{path.name}.retired-{stamp}")
    n = 1
    while retired.exists():
        n += 1
        retired = path.with_name(f"{path.name}.retired-{stamp}-{n}")
    os.link(path, retired)  # the old key stays readable until the new one is in place
    os.replace(pending, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return retired


async def _opens(conn: asyncpg.Connection, key: bytes) -> bool | None:
    """Does ``key`` unwrap a stored person key? None when there are none."""
    row = await conn.fetchrow("SELECT key_id, wrapped_key FROM identity_keys LIMIT 1")
    if row is None:
        return None
    try:
        unwrap_key(key, bytes(row["wrapped_key"]), row["key_id"])
        return True
    except SealError:
        return False


async def rotate_master_key(
    settings: Settings, new_key_bytes: bytes | None = None, progress: bool = True
) -> RotationResult:
    path = settings.master_key_file
    if not path.exists():
        raise RotationError(f"no master key at {path}: nothing to rotate")
    old = _read_key(path)
    load_link_key(settings)  # before the master changes: mailed unsubscribe links stay valid
    pending = _pending(path)
    conn = await connect(settings)
    try:
        if pending.exists():  # an earlier run stopped between commit and rename
            if await _opens(conn, _read_key(pending)) and not await _opens(conn, old):
                retired = _retire(path, pending)
                log.warning("identity.rotation_recovered", retired=str(retired))
                return RotationResult(0, retired, recovered=True)
            pending.unlink()  # stale: its transaction never committed
        new = new_key_bytes if new_key_bytes is not None else new_key()
        if len(new) != KEY_BYTES or new == old:
            raise RotationError(f"the new master key must be {KEY_BYTES} bytes and differ")
        _write_key(pending, new)
        try:
            count = await _rewrap(conn, old, new, progress)
        except BaseException:
            pending.unlink(missing_ok=True)
            raise
    finally:
        await conn.close()
    retired = _retire(path, pending)
    log.info("identity.master_key_rotated", rewrapped=count, retired=str(retired))
    return RotationResult(count, retired)


async def _rewrap(conn: asyncpg.Connection, old: bytes, new: bytes, progress: bool) -> int:
    async with conn.transaction():
        # Readers go on; writers (new registrations, erasures) wait for the commit.
        await conn.execute("LOCK TABLE identity_keys IN EXCLUSIVE MODE")
        rows = await conn.fetch("SELECT resident_id, key_id, wrapped_key FROM identity_keys")
        out: list[tuple[str, bytes]] = []
        for row in tqdm(
            rows, desc="re-wrapping person keys", unit="key", disable=not progress, file=sys.stderr
        ):
            try:
                key = unwrap_key(old, bytes(row["wrapped_key"]), row["key_id"])
            except SealError:
                raise RotationError(
                    "a stored person key does not open with the current master key "
                    f"(resident {row['resident_id']}); nothing was changed"
                ) from None
            out.append((row["resident_id"], wrap_key(new, key, row["key_id"])))
        await conn.execute(
            "CREATE TEMP TABLE rotated (resident_id text PRIMARY KEY, wrapped_key bytea) "
            "ON COMMIT DROP"
        )
        await conn.copy_records_to_table("rotated", records=out)
        updated = await conn.execute(
            "UPDATE identity_keys k SET wrapped_key = r.wrapped_key "
            "FROM rotated r WHERE k.resident_id = r.resident_id"
        )
        if int(updated.split()[-1]) != len(out):
            raise RotationError("identity_keys changed during the rotation; nothing was changed")
        return len(out)


def cli(args: argparse.Namespace) -> int:
    """``lpt rotate-master-key [--new-key FILE] [--yes]``."""
    settings = get_settings()
    if not args.yes:
        print(
            "Stop the web service and the notification workers first (they hold the master key\n"
            "in memory), and read docs/operations.md 'Rotating keys and secrets'. Then run\n"
            "again with --yes.",
            file=sys.stderr,
        )
        return 2
    new = _read_key(args.new_key) if args.new_key else None
    try:
        result = asyncio.run(
            rotate_master_key(settings, new, progress=not getattr(args, "no_progress", False))
        )
    except RotationError as exc:
        print(f"rotation refused: {exc}", file=sys.stderr)
        return 1
    if result.recovered:
        print(f"finished an interrupted rotation; old key kept as {result.retired_file}")
    else:
        print(
            f"re-wrapped {result.rewrapped} person keys; new master key in "
            f"{settings.master_key_file}, old one kept as {result.retired_file} "
            "(destroy it once backups made with it have expired)"
        )
    return 0
