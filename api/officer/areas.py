"""Which wards and local authorities an H3 cell touches, from the reference postcodes.

Why: access is granted by ward and local authority (the areas officers are posted to), while
priority is kept per H3 cell. A cell is inside an account's scope when any located postcode in
it lies in one of the account's wards or authorities. The map is built in memory from
``ref_postcodes`` (res-10 cell of each postcode, parents by ``cell_to_parent`` as DESIGN §4
asks) and rebuilt when the reference table changes.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field

import asyncpg
import h3

from api.officer.accounts import Scope

#: Resolutions the app shows cells at (street score, neighbourhood, rural district).
CELL_RESOLUTIONS = (9, 8, 7)
#: How often the reference table is checked for changes.
REFRESH_SECONDS = 60.0


@dataclass
class AreaIndex:
    wards_of_cell: dict[str, frozenset[str]] = field(default_factory=dict)
    las_of_cell: dict[str, frozenset[str]] = field(default_factory=dict)
    la_of_ward: dict[str, str] = field(default_factory=dict)
    signature: tuple[int, int] = (0, 0)

    def cell_in_scope(self, cell: str, scope: Scope) -> bool:
        if scope.force_wide:
            return True
        return scope.covers_any(
            self.wards_of_cell.get(cell, frozenset()), self.las_of_cell.get(cell, frozenset())
        )

    def ward_in_scope(self, ward: str, scope: Scope) -> bool:
        return scope.covers(ward, self.la_of_ward.get(ward))

    def wards_in_scope(self, scope: Scope) -> set[str]:
        return {w for w in self.la_of_ward if self.ward_in_scope(w, scope)} | set(scope.ward_codes)

    def wards_for(self, cells: list[str]) -> set[str]:
        out: set[str] = set()
        for cell in cells:
            out |= self.wards_of_cell.get(cell, frozenset())
        return out

    def ward_of_cell(self, cell: str | None) -> str | None:
        """The ward most of a cell lies in (first by code when a cell straddles wards)."""
        if not cell:
            return None
        wards = self.wards_of_cell.get(cell)
        return min(wards) if wards else None


async def build_index(pool: asyncpg.Pool) -> AreaIndex:
    rows = await pool.fetch(
        """SELECT cell, ward_code, local_authority_code FROM ref_postcodes
           WHERE cell IS NOT NULL AND (ward_code IS NOT NULL OR local_authority_code IS NOT NULL)"""
    )
    wards: dict[str, set[str]] = defaultdict(set)
    las: dict[str, set[str]] = defaultdict(set)
    la_of_ward: dict[str, str] = {}
    for r in rows:
        for res in CELL_RESOLUTIONS:
            parent = h3.cell_to_parent(r["cell"], res)
            if r["ward_code"]:
                wards[parent].add(r["ward_code"])
            if r["local_authority_code"]:
                las[parent].add(r["local_authority_code"])
        if r["ward_code"] and r["local_authority_code"]:
            la_of_ward[r["ward_code"]] = r["local_authority_code"]
    return AreaIndex(
        {c: frozenset(v) for c, v in wards.items()},
        {c: frozenset(v) for c, v in las.items()},
        la_of_ward,
        (len(rows), 0),
    )


class AreaCache:
    """The current :class:`AreaIndex`, rebuilt when ``ref_postcodes`` changes size."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._index: AreaIndex | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> AreaIndex:
        now = time.monotonic()
        if self._index is not None and now - self._checked < REFRESH_SECONDS:
            return self._index
        async with self._lock:
            if self._index is not None and time.monotonic() - self._checked < REFRESH_SECONDS:
                return self._index
            count = await self.pool.fetchval(
                "SELECT count(*) FROM ref_postcodes WHERE cell IS NOT NULL"
            )
            if self._index is None or self._index.signature[0] != count:
                index = await build_index(self.pool)
                index.signature = (int(count), 0)
                self._index = index
            self._checked = time.monotonic()
            return self._index

    def invalidate(self) -> None:
        self._checked = 0.0
