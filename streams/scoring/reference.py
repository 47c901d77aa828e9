"""Reference data the scorer needs, as plain in-memory maps (filled from PostgreSQL by
``streams.refdata``; tests build it by hand). Missing data degrades gracefully: with nothing
loaded, deprivation and representation are unknown (rank lowest) and households are estimated
from postcodes with a national mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LsoaInfo:
    """IMD Income domain of one LSOA: ``fraction`` = income rank / LSOAs in England
    (near 0 = most deprived), comparable across the 2011 and 2021 vintages."""

    fraction: float
    decile: int
    name: str | None
    local_authority: str | None


def lsoa_key(code: str, vintage: int | None) -> str:
    """How cells count the LSOAs their events fall in: ``E01012345:2011``."""
    return f"{code}:{vintage or 2021}"


@dataclass
class Reference:
    force_name: str = "force"
    lsoa: dict[tuple[str, int], LsoaInfo] = field(default_factory=dict)
    #: res-9 cell -> located postcodes in it (cells in the force area only)
    cell_postcodes: dict[str, int] = field(default_factory=dict)
    cell_ward: dict[str, str] = field(default_factory=dict)
    cell_local_authority: dict[str, str] = field(default_factory=dict)
    local_authority_names: dict[str, str] = field(default_factory=dict)
    #: Census residents / located postcodes, per local authority
    residents_per_postcode: dict[str, float] = field(default_factory=dict)
    population_age: dict[str, dict[str, int]] = field(default_factory=dict)
    population_ethnic: dict[str, dict[str, int]] = field(default_factory=dict)

    def imd(self, key: str) -> LsoaInfo | None:
        """IMD of an ``lsoa_key``; falls back to the same code in the other vintage (most codes
        were unchanged in 2021), as ``ref_imd`` does."""
        code, _, vintage_s = key.partition(":")
        vintage = int(vintage_s or 2021)
        hit = self.lsoa.get((code, vintage))
        if hit is None:
            hit = self.lsoa.get((code, 2021 if vintage == 2011 else 2011))
        return hit

    def local_authority_of(self, cell: str, lsoa_counts: dict[str, int] | None) -> str | None:
        """The cell's authority from its postcodes, else from the LSOA most of its events are in."""
        la = self.cell_local_authority.get(cell)
        if la or not lsoa_counts:
            return la
        for key, _ in sorted(lsoa_counts.items(), key=lambda kv: (-kv[1], kv[0])):
            info = self.imd(key)
            if info and info.local_authority:
                return info.local_authority
        return None
