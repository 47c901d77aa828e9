"""Officer accounts: who someone is, their role and their area scope.

Why a module of its own: the access rules (``access.py``), the login backends (``auth.py``)
and the demo seeding all need the same account shape, and only this module writes SQL against
``officer_accounts``. An account's ``account_id`` is a pseudonym: it is what events carry as
``officer_id`` or ``created_by``, so Kafka never holds an officer's name.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from lpt.logs import get_logger

log = get_logger(__name__)

Role = Literal["officer", "supervisor", "analyst", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)

#: argon2id with the library's defaults (RFC 9106 low-memory profile): ~50 ms per hash here.
_HASHER = PasswordHasher()
#: Verified against when the username is unknown, so a miss costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def new_account_id() -> str:
    return "o-" + secrets.token_urlsafe(12)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Constant-effort check (a missing hash is checked against a dummy one)."""
    try:
        return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Scope:
    """The areas an account may see: wards and/or local authorities; admins see the force."""

    ward_codes: frozenset[str]
    local_authority_codes: frozenset[str]
    force_wide: bool = False

    def covers(self, ward_code: str | None, local_authority_code: str | None = None) -> bool:
        if self.force_wide:
            return True
        return (ward_code is not None and ward_code in self.ward_codes) or (
            local_authority_code is not None and local_authority_code in self.local_authority_codes
        )

    def covers_any(self, wards: Iterable[str], las: Iterable[str] = ()) -> bool:
        if self.force_wide:
            return True
        return bool(self.ward_codes.intersection(wards)) or bool(
            self.local_authority_codes.intersection(las)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "force_wide": self.force_wide,
            "ward_codes": sorted(self.ward_codes),
            "local_authority_codes": sorted(self.local_authority_codes),
        }


@dataclass(frozen=True)
class Account:
    account_id: str
    username: str
    display_name: str
    role: Role
    team: str | None
    scope: Scope
    auth_backend: str = "password"

    def as_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "username": self.username,
            "display_name": self.display_name,
            "role": self.role,
            "team": self.team,
            "scope": self.scope.as_json(),
        }


_COLUMNS = """account_id, username, display_name, role, team, ward_codes,
    local_authority_codes, auth_backend"""


def account_from_row(row: asyncpg.Record) -> Account:
    role: Role = row["role"]
    return Account(
        account_id=row["account_id"],
        username=row["username"],
        display_name=row["display_name"],
        role=role,
        team=row["team"],
        scope=Scope(
            frozenset(row["ward_codes"]),
            frozenset(row["local_authority_codes"]),
            force_wide=role == "admin",
        ),
        auth_backend=row["auth_backend"],
    )


class AccountStore:
    """Reads and writes of ``officer_accounts`` (disabled accounts are never returned)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def by_id(self, account_id: str) -> Account | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM officer_accounts WHERE account_id = $1 "
            "AND disabled_at IS NULL",
            account_id,
        )
        return None if row is None else account_from_row(row)

    async def credentials(self, username: str) -> tuple[Account | None, str | None]:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS}, password_hash FROM officer_accounts "
            "WHERE lower(username) = lower($1) AND disabled_at IS NULL",
            username,
        )
        if row is None:
            return None, None
        return account_from_row(row), row["password_hash"]

    async def by_subject(self, backend: str, subject: str) -> Account | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM officer_accounts WHERE auth_backend = $1 "
            "AND external_subject = $2 AND disabled_at IS NULL",
            backend,
            subject,
        )
        return None if row is None else account_from_row(row)

    async def create(
        self,
        username: str,
        display_name: str,
        role: Role,
        *,
        password: str | None,
        ward_codes: Sequence[str] = (),
        local_authority_codes: Sequence[str] = (),
        team: str | None = None,
        demo: bool = False,
        auth_backend: str = "password",
        external_subject: str | None = None,
    ) -> Account:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        row = await self.pool.fetchrow(
            f"""INSERT INTO officer_accounts (account_id, username, display_name, role, team,
                    ward_codes, local_authority_codes, auth_backend, external_subject,
                    password_hash, demo)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                RETURNING {_COLUMNS}""",
            new_account_id(),
            username,
            display_name,
            role,
            team,
            list(ward_codes),
            list(local_authority_codes),
            auth_backend,
            external_subject,
            hash_password(password) if password is not None else None,
            demo,
        )
        assert row is not None
        account = account_from_row(row)
        log.info("officer.account_created", account_id=account.account_id, role=role)
        return account

    async def set_password(self, account_id: str, password: str) -> None:
        await self.pool.execute(
            "UPDATE officer_accounts SET password_hash = $2 WHERE account_id = $1",
            account_id,
            hash_password(password),
        )

    async def disable(self, account_id: str) -> bool:
        """Disable an account and end its sessions at once."""
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(
                "UPDATE officer_accounts SET disabled_at = now() WHERE account_id = $1 "
                "AND disabled_at IS NULL RETURNING true",
                account_id,
            )
            await conn.execute("DELETE FROM officer_sessions WHERE account_id = $1", account_id)
        return bool(done)

    async def list_all(self) -> list[Account]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM officer_accounts WHERE disabled_at IS NULL ORDER BY username"
        )
        return [account_from_row(r) for r in rows]

    async def team_of(self, account_ids: Iterable[str]) -> dict[str, tuple[str | None, str]]:
        rows = await self.pool.fetch(
            "SELECT account_id, team, display_name FROM officer_accounts "
            "WHERE account_id = ANY($1::text[])",
            list(set(account_ids)),
        )
        return {r["account_id"]: (r["team"], r["display_name"]) for r in rows}
