"""Master key rotation on real PostgreSQL: every person key re-wrapped, sealed data still opens."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import asyncpg
import pytest

from identity.crypto import SealError, new_key, unwrap_key
from identity.rotation import RotationError, _pending, cli, rotate_master_key
from identity.vault import IdentityVault, KeyShredded, PersonDetails
from lpt.settings import Settings


def details(n: int) -> PersonDetails:
    return PersonDetails(
        postcode="HU1 1AA",
        channels=["email"],
        consent_version="v1",
        email=f"person{n}@example.org",
    )


async def _people(settings: Settings, n: int) -> tuple[list[tuple[str, object]], bytes]:
    master = new_key()
    settings.master_key_file.parent.mkdir(parents=True, exist_ok=True)
    settings.master_key_file.write_bytes(master)
    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=2)
    try:
        vault = IdentityVault(pool, master)
        sealed = []
        for i in range(n):
            person = await vault.create_person(details(i))
            sealed.append(
                (person.resident_id, await vault.seal_for(person.resident_id, f"07700 90{i:04d}"))
            )
        await vault.shred(sealed[0][0])  # an erased person has no key to rotate
        return sealed, master
    finally:
        await pool.close()


async def test_rotation_rewraps_every_key_and_keeps_sealed_values_readable(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(isolated_settings, master_key_file=tmp_path / "master.key")
    sealed, old = await _people(settings, 5)

    result = await rotate_master_key(settings, progress=False)
    assert result.rewrapped == 4 and result.retired_file is not None
    assert result.retired_file.read_bytes() == old  # kept for backups made with it
    new = settings.master_key_file.read_bytes()
    assert new != old and len(new) == 32
    assert oct(settings.master_key_file.stat().st_mode & 0o777) == "0o600"
    assert not _pending(settings.master_key_file).exists()

    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=2)
    try:
        vault = IdentityVault.from_settings(pool, settings)  # reads the new key file
        for i, (_rid, value) in enumerate(sealed[1:], start=1):
            assert await vault.unseal(value) == f"07700 90{i:04d}"  # type: ignore[arg-type]
        with pytest.raises(KeyShredded):
            await vault.unseal(sealed[0][1])  # type: ignore[arg-type]
        row = await pool.fetchrow("SELECT key_id, wrapped_key FROM identity_keys LIMIT 1")
        assert row is not None
        with pytest.raises(SealError):
            unwrap_key(old, bytes(row["wrapped_key"]), row["key_id"])  # old master is useless
    finally:
        await pool.close()


async def test_rotation_refuses_when_a_key_does_not_open_and_changes_nothing(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(isolated_settings, master_key_file=tmp_path / "master.key")
    await _people(settings, 3)
    wrong = new_key()
    settings.master_key_file.write_bytes(wrong)  # as if the wrong key file were deployed
    conn = await asyncpg.connect(settings.dsn)
    try:
        before = await conn.fetch("SELECT resident_id, wrapped_key FROM identity_keys ORDER BY 1")
        with pytest.raises(RotationError):
            await rotate_master_key(settings, progress=False)
        after = await conn.fetch("SELECT resident_id, wrapped_key FROM identity_keys ORDER BY 1")
    finally:
        await conn.close()
    assert before == after
    assert settings.master_key_file.read_bytes() == wrong
    assert not _pending(settings.master_key_file).exists()
    assert not list(tmp_path.glob("master.key.retired-*"))


async def test_interrupted_rotation_is_finished_by_the_next_run(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    """Committed in the database, crashed before the file rename: the next run completes it."""
    settings = dataclasses.replace(isolated_settings, master_key_file=tmp_path / "master.key")
    sealed, old = await _people(settings, 2)
    await rotate_master_key(settings, progress=False)
    new = settings.master_key_file.read_bytes()
    # Put the files back as they were between the commit and the rename.
    settings.master_key_file.write_bytes(old)
    _pending(settings.master_key_file).write_bytes(new)
    result = await rotate_master_key(settings, progress=False)
    assert result.recovered and result.rewrapped == 0
    assert settings.master_key_file.read_bytes() == new
    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=2)
    try:
        vault = IdentityVault.from_settings(pool, settings)
        assert await vault.unseal(sealed[1][1]) == "07700 900001"  # type: ignore[arg-type]
    finally:
        await pool.close()


def test_cli_needs_confirmation(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(yes=False, new_key=None, no_progress=True)
    assert cli(args) == 2  # refuses before touching anything
    assert "--yes" in capsys.readouterr().err
