"""Typed read access to the reference tables, for producers, stream workers and the web service.

Why a module of its own: callers should not repeat SQL against ``ref_*`` tables or re-implement
the LSOA vintage fallback; if the tables change, only this module and the migration move.
``db`` is anything with asyncpg's ``fetch``/``fetchrow`` (a connection or a pool).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from schemas.common import Location, normalise_postcode

LsoaVintage = int  # 2011 or 2021


@dataclass(frozen=True)
class PostcodeInfo:
    """A real postcode. ``unlocated`` ones have no point or cell and must be flagged, not
    dropped (DESIGN §4). Ward and authority codes are Code-Point Open 2014 codes (2014 wards)."""

    postcode: str
    lat: float | None
    lng: float | None
    cell: str | None
    unlocated: bool
    ward_code: str | None
    local_authority_code: str | None
    local_authority_name: str | None

    @property
    def location(self) -> Location | None:
        if self.lat is None or self.lng is None:
            return None
        return Location(lat=self.lat, lng=self.lng, cell=self.cell or "")


@dataclass(frozen=True)
class IncomeDeprivation:
    """IMD Income domain of an LSOA (the deprivation component, DESIGN §5).

    ``vintage`` is the IMD edition used (2011 codes: IMD 2019; 2021 codes: IMD 2025);
    ``fallback`` is true when the code was not found in the requested vintage and the same code
    in the other vintage answered. Compare across vintages with ``income_decile`` or
    ``income_rank_fraction`` (rank / LSOAs in England), not raw ranks. ``income_score`` is only
    in IMD 2025.
    """

    lsoa_code: str
    requested_vintage: int
    vintage: int
    fallback: bool
    lsoa_name: str | None
    local_authority_code: str | None
    imd_decile: int
    income_rank: int
    income_decile: int
    income_score: float | None
    income_rank_fraction: float


async def postcode_info(db: Any, postcode: str) -> PostcodeInfo | None:
    """The reference row of a postcode in any spelling (``hu11aa``); None if it is not a known
    postcode. Raises ValueError when the text is not shaped like a UK postcode at all."""
    row = await db.fetchrow(
        """SELECT p.postcode, p.lat, p.lng, p.cell, p.unlocated, p.ward_code,
                  p.local_authority_code, la.name AS local_authority_name
           FROM ref_postcodes p
           LEFT JOIN ref_local_authorities la ON la.code = p.local_authority_code
           WHERE p.postcode = $1""",
        normalise_postcode(postcode),
    )
    return None if row is None else PostcodeInfo(**dict(row))


_IMD_COLUMNS = """lsoa_code, requested_vintage, vintage, fallback, lsoa_name,
    local_authority_code, imd_decile, income_rank, income_decile, income_score,
    income_rank_fraction"""


def _income(row: Any) -> IncomeDeprivation:
    return IncomeDeprivation(**{k: row[k] for k in IncomeDeprivation.__dataclass_fields__})


def _check_vintage(vintage: int) -> None:
    if vintage not in (2011, 2021):
        raise ValueError(f"LSOA vintage must be 2011 or 2021, got {vintage!r}")


async def imd_income(db: Any, lsoa_code: str, vintage: LsoaVintage) -> IncomeDeprivation | None:
    """Income deprivation of an LSOA code of the given vintage, with the fallback of
    ``ref_imd`` (same code, other vintage); None when neither vintage has the code."""
    _check_vintage(vintage)
    row = await db.fetchrow(f"SELECT {_IMD_COLUMNS} FROM ref_imd($1, $2)", lsoa_code, vintage)
    return None if row is None else _income(row)


async def imd_income_many(
    db: Any, keys: Iterable[tuple[str, LsoaVintage]]
) -> dict[tuple[str, int], IncomeDeprivation]:
    """Batch form of :func:`imd_income` (one round trip); keys without an answer are absent."""
    pairs = list(dict.fromkeys(keys))
    for _, vintage in pairs:
        _check_vintage(vintage)
    rows = await db.fetch(
        f"""SELECT k.code AS key_code, k.vintage AS key_vintage, r.*
            FROM unnest($1::text[], $2::int[]) AS k(code, vintage),
                 LATERAL (SELECT {_IMD_COLUMNS} FROM ref_imd(k.code, k.vintage)) r""",
        [c for c, _ in pairs],
        [v for _, v in pairs],
    )
    return {(r["key_code"], r["key_vintage"]): _income(r) for r in rows}


async def census_age(db: Any, lsoa21_code: str) -> dict[str, int]:
    """Usual residents per AgeBand value in a 2021 LSOA (empty if the extract lacks it)."""
    rows = await db.fetch(
        "SELECT age_band, residents FROM ref_census_age WHERE lsoa21_code = $1", lsoa21_code
    )
    return {r["age_band"]: r["residents"] for r in rows}


async def census_ethnic(db: Any, msoa21_code: str) -> dict[str, int]:
    """Usual residents per EthnicGroup value in a 2021 MSOA. Area-level use only (DESIGN §6)."""
    rows = await db.fetch(
        "SELECT ethnic_group, residents FROM ref_census_ethnic WHERE msoa21_code = $1",
        msoa21_code,
    )
    return {r["ethnic_group"]: r["residents"] for r in rows}
