"""The identity vault: per-person keys and identity rows in PostgreSQL (DESIGN §6).

Why a vault object and not loose SQL: every place that touches personal data goes through the
same few calls, so "erasure destroys the key and the identity row" is true by construction.
Keys are stored wrapped by the master key (``settings.master_key_file``); they are unwrapped
per call and never cached, so a key shredded by one process cannot be used from another
process's memory afterwards.

Nothing here logs personal values: only pseudonymous resident ids and key ids.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

import asyncpg

from identity.crypto import (
    SealError,
    load_master_key,
    new_key,
    new_key_id,
    seal,
    unseal,
    unwrap_key,
    wrap_key,
)
from lpt.logs import get_logger
from lpt.settings import Settings
from schemas.common import EncryptedField

log = get_logger(__name__)

#: Where a query may run: the pool, or a connection inside a caller's transaction.
Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


class KeyShredded(SealError):
    """The person's key no longer exists (erased, or never created): the value is unreadable."""


class EmailAlreadyRegistered(ValueError):
    """Another identity row holds this e-mail address (the store keeps e-mails unique)."""


def new_resident_id() -> str:
    """Pseudonymous resident id: random, so it carries nothing about the person."""
    return "r-" + secrets.token_urlsafe(16)


@dataclass(frozen=True)
class PersonDetails:
    """What the identity store holds about one resident. Personal fields stay in PostgreSQL."""

    postcode: str
    channels: Sequence[str]
    consent_version: str
    email: str | None = None
    phone: str | None = None
    name: str | None = None
    address: str | None = None
    cell: str | None = None
    unlocated: bool = False
    ward_code: str | None = None
    local_authority_code: str | None = None
    community_groups: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class PersonKey:
    resident_id: str
    key_id: str
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class PersonRecord:
    """An identity row (read back for the person themselves or an audited officer view)."""

    resident_id: str
    details: PersonDetails
    registered_at: datetime
    opted_out_at: datetime | None


@dataclass(frozen=True)
class Erasure:
    """Outcome of :meth:`IdentityVault.shred`.

    ``cell`` is the street cell the person was registered at (read before the row went), so the
    erasure event can land on the same partition as the registration; None on a repeated call.
    """

    resident_id: str
    erased_now: bool
    requested_at: datetime
    cell: str | None


class IdentityVault:
    """Async access to ``identity_keys``, ``identity_people`` and ``identity_erasures``."""

    def __init__(self, pool: asyncpg.Pool, master_key: bytes) -> None:
        self._pool = pool
        self._master = master_key

    @classmethod
    def from_settings(cls, pool: asyncpg.Pool, settings: Settings) -> IdentityVault:
        return cls(pool, load_master_key(settings.master_key_file))

    # -- creation ---------------------------------------------------------------------------

    async def create_person(
        self,
        details: PersonDetails,
        resident_id: str | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> PersonKey:
        """Create the person's key and identity row together (one transaction).

        Pass ``conn`` to take part in a caller's transaction (e.g. so a failed publish rolls the
        registration back); otherwise a connection and transaction of our own are used.
        """
        if conn is None:
            async with self._pool.acquire() as own, own.transaction():
                return await self._create(own, details, resident_id)
        async with conn.transaction():  # a savepoint when the caller already has a transaction
            return await self._create(conn, details, resident_id)

    async def _create(
        self, conn: asyncpg.Connection, d: PersonDetails, resident_id: str | None
    ) -> PersonKey:
        rid = resident_id or new_resident_id()
        key, key_id = new_key(), new_key_id()
        await conn.execute(
            "INSERT INTO identity_keys (resident_id, key_id, wrapped_key) VALUES ($1, $2, $3)",
            rid,
            key_id,
            wrap_key(self._master, key, key_id),
        )
        try:
            await conn.execute(
                """INSERT INTO identity_people (resident_id, email, phone, name, postcode,
                       address, cell, unlocated, ward_code, local_authority_code, channels,
                       community_groups, consent_version)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
                rid,
                d.email,
                d.phone,
                d.name,
                d.postcode,
                d.address,
                d.cell,
                d.unlocated,
                d.ward_code,
                d.local_authority_code,
                list(d.channels),
                list(d.community_groups),
                d.consent_version,
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "identity_people_email":
                raise EmailAlreadyRegistered("e-mail address already registered") from None
            raise
        log.info("identity.created", resident_id=rid, key_id=key_id)
        return PersonKey(rid, key_id, key)

    # -- keys and sealing -------------------------------------------------------------------

    async def key_for(self, resident_id: str, conn: Executor | None = None) -> PersonKey:
        """The person's key; :class:`KeyShredded` when it does not exist (erased)."""
        row = await (conn or self._pool).fetchrow(
            "SELECT key_id, wrapped_key FROM identity_keys WHERE resident_id = $1", resident_id
        )
        if row is None:
            raise KeyShredded(f"no key for resident {resident_id}")
        key = unwrap_key(self._master, bytes(row["wrapped_key"]), row["key_id"])
        return PersonKey(resident_id, row["key_id"], key)

    async def seal_for(
        self, resident_id: str, plaintext: str, conn: Executor | None = None
    ) -> EncryptedField:
        """Seal a personal value with the resident's key, for an event or another store."""
        pk = await self.key_for(resident_id, conn)
        return seal(pk.key, pk.key_id, plaintext)

    async def unseal(self, sealed: EncryptedField, conn: Executor | None = None) -> str:
        """Open a sealed value; :class:`KeyShredded` once its owner has been erased."""
        row = await (conn or self._pool).fetchrow(
            "SELECT wrapped_key FROM identity_keys WHERE key_id = $1", sealed.key_id
        )
        if row is None:
            raise KeyShredded(f"key {sealed.key_id} does not exist (erased)")
        return unseal(unwrap_key(self._master, bytes(row["wrapped_key"]), sealed.key_id), sealed)

    # -- identity rows ----------------------------------------------------------------------

    async def get_person(
        self, resident_id: str, conn: Executor | None = None
    ) -> PersonRecord | None:
        row = await (conn or self._pool).fetchrow(
            "SELECT * FROM identity_people WHERE resident_id = $1", resident_id
        )
        if row is None:
            return None
        details = PersonDetails(
            postcode=row["postcode"],
            channels=tuple(row["channels"]),
            consent_version=row["consent_version"],
            email=row["email"],
            phone=row["phone"],
            name=row["name"],
            address=row["address"],
            cell=row["cell"],
            unlocated=row["unlocated"],
            ward_code=row["ward_code"],
            local_authority_code=row["local_authority_code"],
            community_groups=tuple(row["community_groups"]),
        )
        return PersonRecord(resident_id, details, row["registered_at"], row["opted_out_at"])

    async def mark_opted_out(self, resident_id: str) -> tuple[datetime, str | None] | None:
        """Set ``opted_out_at`` now (or keep the first opt-out's time); None if no such person.

        Returns (opted-out time, street cell). Committed before anything else happens, so
        every sender that checks the identity store stops at once, even if Kafka is down.
        """
        row = await self._pool.fetchrow(
            """UPDATE identity_people SET opted_out_at = COALESCE(opted_out_at, now())
               WHERE resident_id = $1 RETURNING opted_out_at, cell""",
            resident_id,
        )
        if row is None:
            return None
        log.info("identity.opted_out", resident_id=resident_id)
        return row["opted_out_at"], row["cell"]

    async def is_erased(self, resident_id: str) -> bool:
        return bool(
            await self._pool.fetchval(
                "SELECT 1 FROM identity_erasures WHERE resident_id = $1", resident_id
            )
        )

    # -- erasure ----------------------------------------------------------------------------

    async def shred(self, resident_id: str) -> Erasure | None:
        """Crypto-shred a resident: delete key and identity row, record the erasure.

        Idempotent: a second call reports the first erasure. None when the resident never
        existed here (nothing to erase, nothing recorded).
        """
        async with self._pool.acquire() as conn, conn.transaction():
            person = await conn.fetchrow(
                "SELECT cell FROM identity_people WHERE resident_id = $1 FOR UPDATE", resident_id
            )
            deleted_key = await conn.fetchval(
                "DELETE FROM identity_keys WHERE resident_id = $1 RETURNING key_id", resident_id
            )
            # identity_people goes with the key (ON DELETE CASCADE); delete explicitly anyway so
            # the erasure does not depend on the constraint staying in place.
            await conn.execute("DELETE FROM identity_people WHERE resident_id = $1", resident_id)
            if deleted_key is None and person is None:
                earlier = await conn.fetchval(
                    "SELECT requested_at FROM identity_erasures WHERE resident_id = $1",
                    resident_id,
                )
                if earlier is None:
                    return None
                return Erasure(resident_id, False, earlier, None)
            requested_at = await conn.fetchval(
                """INSERT INTO identity_erasures (resident_id, requested_at, completed_at)
                   VALUES ($1, now(), now())
                   ON CONFLICT (resident_id) DO UPDATE SET completed_at = now()
                   RETURNING requested_at""",
                resident_id,
            )
        log.info("identity.shredded", resident_id=resident_id, key_id=deleted_key)
        return Erasure(resident_id, True, requested_at, person["cell"] if person else None)
