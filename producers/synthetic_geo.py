"""Where synthetic residents live: real Humberside postcodes with Census and IMD attached.

Why read the files and not the reference tables in PostgreSQL: the generator must run before
anything is loaded (demos, benchmarks, CI), so it depends only on ``settings.data_dir``.

What is real and what is estimated:

- Postcodes, coordinates (NSPL May 2025), local authority and ward (Code-Point Open 2014) are
  real. Humberside = the four unitary authorities of the force area.
- The NSPL extract has no LSOA column, so each postcode's 2021 LSOA is *estimated* as the LSOA
  that police.uk gives most often to the street points nearest to it (same local authority,
  searched outward ring by ring on H3 resolution-9 cells). That is what lets age structure and
  deprivation vary street by street inside a city instead of per authority. Without police.uk
  files, or with no point nearby, a postcode falls back to its authority's figures.
- Postcodes that NSPL lists without coordinates become the "unlocated" pool when their postcode
  district lies mostly in Humberside (by Code-Point); their authority is the district's majority.

Population weights: a postcode gets an equal share of its (estimated) LSOA's Census population,
so residents are spread like people, not like postcodes (rural postcodes hold fewer people).
"""

from __future__ import annotations

import bisect
import csv
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from statistics import median
from typing import get_args

import h3

from schemas.common import AgeBand, EthnicGroup, Location, normalise_postcode

#: The four local authorities of the Humberside force area, and how Census LSOA names start.
HUMBERSIDE_LAS: dict[str, str] = {
    "E06000010": "Kingston upon Hull",
    "E06000011": "East Riding of Yorkshire",
    "E06000012": "North East Lincolnshire",
    "E06000013": "North Lincolnshire",
}

#: Registration requires the resident's own consent, so under-16s are not in the frame.
MIN_REGISTRATION_BAND_INDEX = 1
#: H3 resolution and the furthest ring searched when estimating a postcode's LSOA (~3 km).
_LSOA_RES = 9
_LSOA_MAX_RING = 8


class GeographyError(RuntimeError):
    """The data directory lacks a file (or a column) the generator needs."""


@dataclass(frozen=True, slots=True)
class Place:
    """One real postcode and what the generator knows about it."""

    postcode: str
    location: Location | None
    la_code: str
    ward_code: str | None
    #: Estimated 2021 LSOA (see module docstring); None when unlocated or nothing nearby.
    lsoa_code: str | None
    #: IMD 2025 income decile, 1 = most deprived 10% of England.
    income_decile: int
    #: Census population this postcode stands for (before registration propensity).
    population: float


@dataclass(frozen=True)
class Distribution:
    """Categorical distribution ready for ``random.choices(values, cum_weights=...)``."""

    values: tuple[str, ...]
    cum_weights: tuple[float, ...]

    @classmethod
    def of(cls, counts: dict[str, float]) -> Distribution:
        values = tuple(counts)
        cum: list[float] = []
        total = 0.0
        for v in values:
            total += counts[v]
            cum.append(total)
        return cls(values, tuple(cum))

    def draw(self, u: float) -> str:
        """The value at quantile ``u`` in [0, 1) (cheaper than ``random.choices``)."""
        cum = self.cum_weights
        return self.values[min(bisect.bisect_right(cum, u * cum[-1]), len(cum) - 1)]

    def shares(self) -> dict[str, float]:
        total = self.cum_weights[-1] if self.cum_weights else 0.0
        out: dict[str, float] = {}
        prev = 0.0
        for v, c in zip(self.values, self.cum_weights, strict=True):
            out[v] = (c - prev) / total if total else 0.0
            prev = c
        return out


@dataclass
class Geography:
    """Postcodes plus the Census and IMD figures the generator samples from."""

    located: list[Place]
    unlocated: list[Place]
    #: Census 2021 usual residents aged 16+ per age band (AgeBand labels), by LSOA and by LA.
    age_by_lsoa: dict[str, Distribution]
    age_by_la: dict[str, Distribution]
    #: Census 2021 TS021 high-level ethnic group (EthnicGroup labels), by LSOA (via its MSOA)
    #: and by LA.
    ethnic_by_lsoa: dict[str, Distribution]
    ethnic_by_la: dict[str, Distribution]
    #: Postcode indices into ``located`` per ward, for door-knock campaigns.
    ward_places: dict[str, list[int]] = field(default_factory=dict)
    #: Sources of each figure, for the summary (e.g. how many postcodes got an LSOA).
    notes: dict[str, int] = field(default_factory=dict)

    def age_distribution(self, place: Place) -> Distribution:
        if place.lsoa_code and place.lsoa_code in self.age_by_lsoa:
            return self.age_by_lsoa[place.lsoa_code]
        return self.age_by_la[place.la_code]

    def ethnic_distribution(self, place: Place) -> Distribution | None:
        if place.lsoa_code and place.lsoa_code in self.ethnic_by_lsoa:
            return self.ethnic_by_lsoa[place.lsoa_code]
        return self.ethnic_by_la.get(place.la_code)

    def census_adult_age_shares(self) -> dict[str, float]:
        """Force-wide Census 2021 shares of the 16+ age bands (the registration frame)."""
        totals: dict[str, float] = defaultdict(float)
        for dist in self.age_by_la.values():
            whole_la = dist.cum_weights[-1]
            for band, share in dist.shares().items():
                totals[band] += share * whole_la
        whole = sum(totals.values())
        return {band: totals[band] / whole for band in totals}


# --------------------------------------------------------------------------- labels


def _last_int(label: str) -> int:
    numbers = re.findall(r"\d+", label)
    if not numbers:
        raise ValueError(label)
    return int(numbers[-1])


def census_age_band_map(census_labels: Iterable[str]) -> dict[str, str]:
    """Census 2021 six-band labels -> the ``AgeBand`` literal's values, matched by order.

    Matching by the last number in each label works whatever spelling the literal uses
    ("0-15", "Aged 15 years and under", "under_16"...): it only has to keep six ordered bands.
    """
    bands = sorted((b for b in get_args(AgeBand) if re.search(r"\d", b)), key=_last_int)
    census = sorted(set(census_labels), key=_last_int)
    if len(bands) != len(census):
        raise GeographyError(
            f"AgeBand has {len(bands)} age bands but the Census file has {len(census)}: {census}"
        )
    return dict(zip(census, bands, strict=True))


def registration_age_bands() -> tuple[str, ...]:
    """The AgeBand values a registering resident can have (16 and over), youngest first."""
    bands = sorted((b for b in get_args(AgeBand) if re.search(r"\d", b)), key=_last_int)
    return tuple(bands[MIN_REGISTRATION_BAND_INDEX:])


def _ethnic_column_map(header: list[str]) -> dict[int, str]:
    """TS021 top-level columns ("Ethnic group: White") -> EthnicGroup literal values."""
    groups = [g for g in get_args(EthnicGroup) if g != "prefer_not_to_say"]
    mapping: dict[int, str] = {}
    for idx, name in enumerate(header):
        parts = name.split(": ")
        if len(parts) != 2 or parts[0] != "Ethnic group" or parts[1].startswith("Total"):
            continue
        first_word = parts[1].split(",")[0].split(" ")[0].lower()
        match = [g for g in groups if g == first_word]
        if match:
            mapping[idx] = match[0]
    return mapping


# --------------------------------------------------------------------------- loading


def _need(path: Path) -> Path:
    if not path.exists():
        raise GeographyError(f"missing data file {path} (set LPT_DATA_DIR)")
    return path


def _read_codepoint(data_dir: Path) -> dict[str, tuple[str, str]]:
    """postcode -> (LA code, ward code) for every Code-Point Open 2014 postcode."""
    out: dict[str, tuple[str, str]] = {}
    files = sorted((data_dir / "postcodes").glob("codepoint_open_2014_*.csv"))
    files = [f for f in files if "header" not in f.name]
    if not files:
        raise GeographyError(f"no Code-Point Open files under {data_dir / 'postcodes'}")
    for path in files:
        with path.open(newline="") as fh:
            for row in csv.reader(fh):
                if len(row) < 10:
                    continue
                try:
                    pc = normalise_postcode(row[0])
                except ValueError:
                    continue
                out[pc] = (row[8], row[9])
    return out


def _read_nspl(data_dir: Path) -> dict[str, tuple[float, float] | None]:
    """postcode -> (lat, lng), or None when NSPL gives it no coordinates."""
    out: dict[str, tuple[float, float] | None] = {}
    files = sorted((data_dir / "postcodes").glob("nspl_*_latlon_*.csv"))
    if not files:
        raise GeographyError(f"no NSPL lat/long files under {data_dir / 'postcodes'}")
    for path in files:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            next(reader, None)
            for row in reader:
                if len(row) < 3:
                    continue
                try:
                    pc = normalise_postcode(row[0])
                except ValueError:
                    continue
                if row[1].strip() and row[2].strip():
                    lat, lng = float(row[1]), float(row[2])
                    out[pc] = None if (lat == 0.0 and lng == 0.0) or lat > 90 else (lat, lng)
                else:
                    out[pc] = None
    return out


def _read_census_age(
    data_dir: Path,
) -> tuple[dict[str, Counter[str]], dict[str, str], dict[str, str]]:
    """LSOA -> Counter(AgeBand -> residents), LSOA -> LA code (from the name), LSOA -> name."""
    path = _need(data_dir / "census2021" / "census2021_age6_lsoa21_humberside.csv")
    rows: list[tuple[str, str, str, int]] = []
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            rows.append(
                (
                    rec["lsoa21_code"],
                    rec["lsoa21_name"],
                    rec["age_group"],
                    int(rec["usual_residents"]),
                )
            )
    band_of = census_age_band_map(r[2] for r in rows)
    prefix_to_la = {name: code for code, name in HUMBERSIDE_LAS.items()}
    ages: dict[str, Counter[str]] = defaultdict(Counter)
    lsoa_la: dict[str, str] = {}
    lsoa_name: dict[str, str] = {}
    for code, name, label, count in rows:
        la = prefix_to_la.get(name.rsplit(" ", 1)[0])
        if la is None:
            continue
        ages[code][band_of[label]] += count
        lsoa_la[code] = la
        lsoa_name[code] = name
    return dict(ages), lsoa_la, lsoa_name


def _read_ethnic(data_dir: Path, msoa_names: set[str]) -> dict[str, Counter[str]]:
    """MSOA name -> Counter(EthnicGroup -> residents), for the Humberside MSOAs only."""
    path = data_dir / "census2021" / "census2021_ts021_ethnic_group_msoa21_england_wales.csv"
    if not path.exists():
        return {}
    out: dict[str, Counter[str]] = {}
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        columns = _ethnic_column_map(header)
        geo = header.index("geography")
        for row in reader:
            if row[geo] not in msoa_names:
                continue
            counts: Counter[str] = Counter()
            for idx, group in columns.items():
                counts[group] += int(row[idx])
            out[row[geo]] = counts
    return out


def _read_income_deciles(data_dir: Path, lsoas: set[str]) -> dict[str, int]:
    path = _need(data_dir / "deprivation" / "imd2025_lsoa21_scores_ranks_deciles_england.csv")
    out: dict[str, int] = {}
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            if rec["lsoa21_code"] in lsoas:
                out[rec["lsoa21_code"]] = int(rec["Income_decile"])
    return out


def _police_points(data_dir: Path, lsoas: set[str]) -> dict[str, Counter[str]]:
    """Res-9 cell -> Counter(LSOA) of police.uk street points with a 2021 Humberside LSOA."""
    cells: dict[str, Counter[str]] = defaultdict(Counter)
    seen: set[tuple[str, str, str]] = set()
    for path in sorted((data_dir / "police_uk").glob("*-street.csv")):
        with path.open(newline="") as fh:
            for rec in csv.DictReader(fh):
                code = rec.get("LSOA code") or ""
                lat, lng = rec.get("Latitude") or "", rec.get("Longitude") or ""
                if code not in lsoas or not lat or not lng:
                    continue
                point = (lat, lng, code)
                if point in seen:  # snap points repeat; count each point-LSOA pair once
                    continue
                seen.add(point)
                cells[h3.latlng_to_cell(float(lat), float(lng), _LSOA_RES)][code] += 1
    return dict(cells)


def _nearest_lsoa(
    lat: float, lng: float, la: str, cells: dict[str, Counter[str]], lsoa_la: dict[str, str]
) -> str | None:
    origin = h3.latlng_to_cell(lat, lng, _LSOA_RES)
    for k in range(_LSOA_MAX_RING + 1):
        votes: Counter[str] = Counter()
        for cell in h3.grid_ring(origin, k) if k else [origin]:
            for code, n in cells.get(cell, {}).items():
                if lsoa_la[code] == la:
                    votes[code] += n
        if votes:
            # Most points wins; ties broken by code so the result never depends on dict order.
            return min(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return None


def _distributions(
    counts: dict[str, Counter[str]], keep: tuple[str, ...]
) -> dict[str, Distribution]:
    out: dict[str, Distribution] = {}
    for key, counter in counts.items():
        weights = {v: float(counter.get(v, 0)) for v in keep}
        if sum(weights.values()) > 0:
            out[key] = Distribution.of(weights)
    return out


@lru_cache(maxsize=4)
def load_geography(data_dir: Path) -> Geography:
    """Read and join the reference files once per data directory (about a second)."""
    codepoint = _read_codepoint(data_dir)
    nspl = _read_nspl(data_dir)
    age_counts, lsoa_la, lsoa_names = _read_census_age(data_dir)
    lsoas = set(lsoa_la)
    deciles = _read_income_deciles(data_dir, lsoas)
    cells = _police_points(data_dir, lsoas)

    adult = registration_age_bands()
    age_by_lsoa = _distributions(age_counts, adult)
    la_age: dict[str, Counter[str]] = defaultdict(Counter)
    la_pop: Counter[str] = Counter()
    for code, counter in age_counts.items():
        la_age[lsoa_la[code]].update(counter)
        la_pop[lsoa_la[code]] += sum(counter.values())
    age_by_la = _distributions(la_age, adult)

    # Ethnic group: an LSOA21 name is its MSOA21 name plus one letter ("Hull 025A" -> "Hull 025").
    lsoa_msoa = {code: name[:-1] for code, name in lsoa_names.items()}
    ethnic_msoa = _read_ethnic(data_dir, set(lsoa_msoa.values()))
    groups = tuple(g for g in get_args(EthnicGroup) if g != "prefer_not_to_say")
    ethnic_by_lsoa = _distributions(
        {code: ethnic_msoa[m] for code, m in lsoa_msoa.items() if m in ethnic_msoa}, groups
    )
    la_ethnic: dict[str, Counter[str]] = defaultdict(Counter)
    for code, m in lsoa_msoa.items():
        if m in ethnic_msoa:
            la_ethnic[lsoa_la[code]].update(ethnic_msoa[m])
    ethnic_by_la = _distributions(la_ethnic, groups)

    la_decile = {
        la: round(median(deciles[c] for c in lsoa_la if lsoa_la[c] == la and c in deciles))
        for la in HUMBERSIDE_LAS
        if any(lsoa_la[c] == la and c in deciles for c in lsoa_la)
    }

    # Located Humberside postcodes with their estimated LSOA.
    pending: list[tuple[str, tuple[float, float], str, str, str | None]] = []
    for pc in sorted(codepoint):
        la, ward = codepoint[pc]
        if la not in HUMBERSIDE_LAS or pc not in nspl:
            continue
        coords = nspl[pc]
        if coords is None:
            continue
        lsoa = _nearest_lsoa(coords[0], coords[1], la, cells, lsoa_la) if cells else None
        pending.append((pc, coords, la, ward, lsoa))
    per_lsoa = Counter(p[4] for p in pending if p[4])
    per_la_unassigned = Counter(p[2] for p in pending if not p[4])
    per_la_postcodes = Counter(p[2] for p in pending)

    located: list[Place] = []
    ward_places: dict[str, list[int]] = defaultdict(list)
    for pc, (lat, lng), la, ward, lsoa in pending:
        if lsoa:
            population = sum(age_counts[lsoa].values()) / per_lsoa[lsoa]
            decile = deciles.get(lsoa, la_decile.get(la, 5))
        else:
            population = la_pop[la] / per_la_postcodes[la]
            decile = la_decile.get(la, 5)
        ward_places[ward].append(len(located))
        located.append(
            Place(pc, Location(lat=lat, lng=lng), la, ward or None, lsoa, decile, population)
        )

    # Unlocated pool: NSPL postcodes without coordinates in mostly-Humberside districts.
    district_las: dict[str, Counter[str]] = defaultdict(Counter)
    for pc, (la, _) in codepoint.items():
        district_las[pc.split(" ")[0]][la] += 1
    unlocated: list[Place] = []
    for pc in sorted(p for p, c in nspl.items() if c is None):
        votes = district_las.get(pc.split(" ")[0])
        if not votes:
            continue
        la, n = max(votes.items(), key=lambda kv: (kv[1], kv[0]))
        if la in HUMBERSIDE_LAS and n * 2 > sum(votes.values()):
            unlocated.append(Place(pc, None, la, None, None, la_decile.get(la, 5), 1.0))

    if not located:
        raise GeographyError(f"no located Humberside postcodes found under {data_dir}")
    notes = {
        "located_postcodes": len(located),
        "unlocated_postcodes": len(unlocated),
        "postcodes_with_estimated_lsoa": sum(per_lsoa.values()),
        "postcodes_on_la_figures": sum(per_la_unassigned.values()),
    }
    return Geography(
        located=located,
        unlocated=unlocated,
        age_by_lsoa=age_by_lsoa,
        age_by_la=age_by_la,
        ethnic_by_lsoa=ethnic_by_lsoa,
        ethnic_by_la=ethnic_by_la,
        ward_places=dict(ward_places),
        notes=notes,
    )


def cumulative(weights: Iterable[float]) -> list[float]:
    """Running totals, for ``bisect`` sampling over many postcodes."""
    out: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def pick(cum: list[float], u: float) -> int:
    """Index drawn from running totals ``cum`` with a uniform ``u`` in [0, 1)."""
    return min(bisect.bisect_right(cum, u * cum[-1]), len(cum) - 1)
