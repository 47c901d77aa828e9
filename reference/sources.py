"""Reading the reference files: where they are under the data directory and what they mean.

Why separate from the database loader: the file formats (ONS/OS column names, Census labels)
change on their own schedule, independently of how rows reach PostgreSQL. Everything here is
pure parsing and validation into row tuples in the table column order; a malformed file raises
:class:`ReferenceDataError` naming the file, the line and the column, before anything is written.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h3

from schemas.common import INDEX_RESOLUTION, AgeBand, EthnicGroup, normalise_postcode

Record = tuple[Any, ...]

NSPL_GLOB = "postcodes/nspl_*_latlon_*.csv"
CODEPOINT_GLOB = "postcodes/codepoint_open_*.csv"
CODEPOINT_HEADERS_GLOB = "postcodes/codepoint_open_*_column_headers.csv"
IMD2019_FILE = "deprivation/imd2019_lsoa11_domains_rank_decile_england.csv"
IMD2025_FILE = "deprivation/imd2025_lsoa21_scores_ranks_deciles_england.csv"
LTLA_FILE = "deprivation/imd2025_ltla24_summary_england.csv"
CENSUS_AGE_FILE = "census2021/census2021_age6_lsoa21_humberside.csv"
CENSUS_ETHNIC_FILE = "census2021/census2021_ts021_ethnic_group_msoa21_england_wales.csv"

#: NSPL's "no grid reference" latitude: the postcode is real but has no point.
_NSPL_NO_POINT_LAT = 99.999999

#: Census 2021 six-band labels (TS007A-style) -> the AgeBand values residents choose from.
CENSUS_AGE_BANDS: dict[str, str] = {
    "Aged 15 years and under": "0-15",
    "Aged 16 to 24 years": "16-24",
    "Aged 25 to 34 years": "25-34",
    "Aged 35 to 49 years": "35-49",
    "Aged 50 to 64 years": "50-64",
    "Aged 65 years and over": "65+",
}
#: TS021 high-level column -> EthnicGroup value. Sub-groups are not loaded (area figures only).
CENSUS_ETHNIC_GROUPS: dict[str, str] = {
    "Ethnic group: Asian, Asian British or Asian Welsh": "asian",
    "Ethnic group: Black, Black British, Black Welsh, Caribbean or African": "black",
    "Ethnic group: Mixed or Multiple ethnic groups": "mixed",
    "Ethnic group: White": "white",
    "Ethnic group: Other ethnic group": "other",
}
CENSUS_ETHNIC_TOTAL = "Ethnic group: Total: All usual residents"

# The mappings must cover the shared vocabularies exactly (bar the explicit refusal), or the
# representation figures would silently miss a band.
_AGE_VALUES = set(AgeBand.__args__) - {"prefer_not_to_say"}  # type: ignore[attr-defined]
_ETHNIC_VALUES = set(EthnicGroup.__args__) - {"prefer_not_to_say"}  # type: ignore[attr-defined]
assert set(CENSUS_AGE_BANDS.values()) == _AGE_VALUES, "AgeBand and Census bands disagree"
assert set(CENSUS_ETHNIC_GROUPS.values()) == _ETHNIC_VALUES, "EthnicGroup and TS021 disagree"


class ReferenceDataError(Exception):
    """A reference file is missing or malformed; the message names file, line and column."""

    def __init__(
        self, path: Path | str, problem: str, *, column: str | None = None, line: int | None = None
    ) -> None:
        self.path = Path(path)
        self.column = column
        self.line = line
        self.problem = problem
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {problem}")


@dataclass
class Parsed:
    """Rows for one table plus where they came from."""

    dataset: str
    table: str
    columns: tuple[str, ...]
    files: list[Path]
    records: list[Record] = field(default_factory=list)


# -- low-level helpers ----------------------------------------------------------------------


def required_file(data_dir: Path, relative: str) -> Path:
    path = data_dir / relative
    if not path.is_file():
        raise ReferenceDataError(
            path, "file not found (set LPT_DATA_DIR or pass --data-dir to the data folder)"
        )
    return path


def matching_files(data_dir: Path, pattern: str, exclude: str | None = None) -> list[Path]:
    files = sorted(p for p in data_dir.glob(pattern) if exclude is None or not p.match(exclude))
    if not files:
        raise ReferenceDataError(
            data_dir / pattern,
            "no file matches (set LPT_DATA_DIR or pass --data-dir to the data folder)",
        )
    return files


def _dict_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for a CSV with a header, after checking the header has ``required``."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for column in required:
            if column not in header:
                raise ReferenceDataError(path, "missing from the header", column=column, line=1)
        for row in reader:
            if None in row or any(row[c] is None for c in required):
                raise ReferenceDataError(
                    path, f"expected {len(header)} fields", line=reader.line_num
                )
            yield reader.line_num, row


def _convert(
    path: Path, line: int, column: str, raw: str, kind: Callable[[str], Any], what: str
) -> Any:
    try:
        return kind(raw.strip())
    except ValueError:
        raise ReferenceDataError(
            path, f"{what} expected, got {raw!r}", column=column, line=line
        ) from None


def _int(path: Path, line: int, row: dict[str, str], column: str) -> int:
    value: int = _convert(path, line, column, row[column], int, "an integer")
    return value


def _float(path: Path, line: int, row: dict[str, str], column: str) -> float:
    value: float = _convert(path, line, column, row[column], float, "a number")
    return value


def _optional_float(path: Path, line: int, row: dict[str, str], column: str) -> float | None:
    return None if row[column].strip() == "" else _float(path, line, row, column)


def _decile(path: Path, line: int, row: dict[str, str], column: str) -> int:
    value = _int(path, line, row, column)
    if not 1 <= value <= 10:
        raise ReferenceDataError(
            path, f"decile 1-10 expected, got {value}", column=column, line=line
        )
    return value


def _text(path: Path, line: int, row: dict[str, str], column: str) -> str:
    value = row[column].strip()
    if not value:
        raise ReferenceDataError(path, "empty", column=column, line=line)
    return value


def _postcode(path: Path, line: int, column: str, raw: str) -> str:
    try:
        return normalise_postcode(raw)
    except ValueError:
        raise ReferenceDataError(
            path, f"not a UK postcode: {raw!r}", column=column, line=line
        ) from None


def all_source_files(data_dir: Path) -> list[Path]:
    """Every file a load reads (for the fingerprint), without parsing; raises if one is missing."""
    return [
        *matching_files(data_dir, NSPL_GLOB),
        *matching_files(data_dir, CODEPOINT_GLOB),  # includes the column_headers file
        *(
            required_file(data_dir, f)
            for f in (IMD2019_FILE, IMD2025_FILE, LTLA_FILE, CENSUS_AGE_FILE, CENSUS_ETHNIC_FILE)
        ),
    ]


# -- postcodes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodePointEntry:
    local_authority_code: str | None
    ward_code: str | None


def read_codepoint(data_dir: Path) -> tuple[dict[str, CodePointEntry], list[Path]]:
    """Code-Point Open: postcode -> (local authority, ward). Its files have no header row; the
    separate column_headers file names the columns (first line: PC, ..., DC, WC)."""
    header_file = matching_files(data_dir, CODEPOINT_HEADERS_GLOB)[0]
    with header_file.open(newline="", encoding="utf-8-sig") as fh:
        names = [c.strip() for c in next(csv.reader(fh), [])]
    index: dict[str, int] = {}
    for column in ("PC", "DC", "WC"):
        if column not in names:
            raise ReferenceDataError(header_file, "missing from the header", column=column, line=1)
        index[column] = names.index(column)
    files = matching_files(data_dir, CODEPOINT_GLOB, exclude="*_column_headers.csv")
    entries: dict[str, CodePointEntry] = {}
    for path in files:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for row in reader:
                if not row:
                    continue
                if len(row) != len(names):
                    raise ReferenceDataError(
                        path,
                        f"expected {len(names)} fields ({header_file.name}), got {len(row)}",
                        line=reader.line_num,
                    )
                pc = _postcode(path, reader.line_num, "PC", row[index["PC"]])
                if pc in entries:
                    raise ReferenceDataError(
                        path, f"duplicate postcode {pc}", column="PC", line=reader.line_num
                    )
                entries[pc] = CodePointEntry(
                    row[index["DC"]].strip() or None, row[index["WC"]].strip() or None
                )
    return entries, [header_file, *files]


def read_postcodes(data_dir: Path) -> Parsed:
    """NSPL points joined with Code-Point codes. A postcode NSPL gives no point (empty lat,
    long 0, or the 99.999999 marker) and a postcode only Code-Point knows are both kept as
    ``unlocated``: they are real addresses, and dropping them would reject real residents."""
    codepoint, cp_files = read_codepoint(data_dir)
    nspl_files = matching_files(data_dir, NSPL_GLOB)
    out = Parsed(
        "postcodes",
        "ref_postcodes",
        ("postcode", "lat", "lng", "cell", "unlocated", "ward_code", "local_authority_code"),
        [*nspl_files, *cp_files],
    )
    seen: set[str] = set()
    for path in nspl_files:
        for line, row in _dict_rows(path, ("Postcode", "lat", "long")):
            pc = _postcode(path, line, "Postcode", row["Postcode"])
            if pc in seen:
                raise ReferenceDataError(
                    path, f"duplicate postcode {pc}", column="Postcode", line=line
                )
            seen.add(pc)
            lat = _optional_float(path, line, row, "lat")
            lng = _optional_float(path, line, row, "long")
            cell: str | None = None
            if lat is None or lat == _NSPL_NO_POINT_LAT:
                lat = lng = None
            else:
                if lng is None:
                    raise ReferenceDataError(
                        path, "empty while lat is given", column="long", line=line
                    )
                if not (-90 <= lat <= 90):
                    raise ReferenceDataError(
                        path, f"latitude {lat} out of range", column="lat", line=line
                    )
                if not (-180 <= lng <= 180):
                    raise ReferenceDataError(
                        path, f"longitude {lng} out of range", column="long", line=line
                    )
                cell = h3.latlng_to_cell(lat, lng, INDEX_RESOLUTION)
            cp = codepoint.get(pc)
            out.records.append(
                (
                    pc,
                    lat,
                    lng,
                    cell,
                    cell is None,
                    cp.ward_code if cp else None,
                    cp.local_authority_code if cp else None,
                )
            )
    # Code-Point knows postcodes NSPL does not: real, but without a point we trust (converting
    # 2014 eastings/northings would add a projection library for rows the current data lacks).
    for pc, cp in codepoint.items():
        if pc not in seen:
            out.records.append((pc, None, None, None, True, cp.ward_code, cp.local_authority_code))
    return out


# -- local authorities and IMD --------------------------------------------------------------


def _la_key(name: str) -> str:
    """'Kingston upon Hull, City of' and the LSOA name prefix 'Kingston upon Hull' match."""
    return re.sub(r",\s*(City|County) of$", "", name.strip()).casefold()


def read_local_authorities(data_dir: Path) -> Parsed:
    ltla = required_file(data_dir, LTLA_FILE)
    imd19 = required_file(data_dir, IMD2019_FILE)
    out = Parsed(
        "local_authorities",
        "ref_local_authorities",
        (
            "code",
            "name",
            "current",
            "imd_rank_of_average_score",
            "income_average_score",
            "income_rank_of_average_score",
            "income_share_most_deprived_10pct",
        ),
        [ltla, imd19],
    )
    share = "income_proportion_of_lso_as_in_most_deprived_10_percent_nationally"
    cols = (
        "ltla24_code",
        "ltla24_name",
        "imd_rank_of_average_score",
        "income_average_score",
        "income_rank_of_average_score",
        share,
    )
    seen: set[str] = set()
    for line, row in _dict_rows(ltla, cols):
        code = _text(ltla, line, row, "ltla24_code")
        if code in seen:
            raise ReferenceDataError(
                ltla, f"duplicate code {code}", column="ltla24_code", line=line
            )
        seen.add(code)
        out.records.append(
            (
                code,
                _text(ltla, line, row, "ltla24_name"),
                True,
                _int(ltla, line, row, "imd_rank_of_average_score"),
                _float(ltla, line, row, "income_average_score"),
                _int(ltla, line, row, "income_rank_of_average_score"),
                _float(ltla, line, row, share),
            )
        )
    # Districts abolished since 2019 still appear in Code-Point 2014 and IMD 2019: name them.
    for line, row in _dict_rows(imd19, ("lad19", "lad_name")):
        code = _text(imd19, line, row, "lad19")
        if code not in seen:
            seen.add(code)
            out.records.append(
                (code, _text(imd19, line, row, "lad_name"), False, None, None, None, None)
            )
    return out


def read_census_age(data_dir: Path) -> Parsed:
    path = required_file(data_dir, CENSUS_AGE_FILE)
    out = Parsed(
        "census_age",
        "ref_census_age",
        ("lsoa21_code", "lsoa21_name", "age_band", "residents"),
        [path],
    )
    seen: set[tuple[str, str]] = set()
    for line, row in _dict_rows(
        path, ("lsoa21_code", "lsoa21_name", "age_group", "usual_residents")
    ):
        label = row["age_group"].strip()
        band = CENSUS_AGE_BANDS.get(label)
        if band is None:
            raise ReferenceDataError(
                path,
                f"unknown age band {label!r} (known: {', '.join(CENSUS_AGE_BANDS)})",
                column="age_group",
                line=line,
            )
        code = _text(path, line, row, "lsoa21_code")
        if (code, band) in seen:
            raise ReferenceDataError(
                path, f"duplicate {code} {label}", column="age_group", line=line
            )
        seen.add((code, band))
        residents = _int(path, line, row, "usual_residents")
        if residents < 0:
            raise ReferenceDataError(path, "negative", column="usual_residents", line=line)
        out.records.append((code, _text(path, line, row, "lsoa21_name"), band, residents))
    return out


def read_census_ethnic(data_dir: Path) -> Parsed:
    """All of England and Wales (36k rows, cheap), so another force's area works unchanged."""
    path = required_file(data_dir, CENSUS_ETHNIC_FILE)
    out = Parsed(
        "census_ethnic",
        "ref_census_ethnic",
        ("msoa21_code", "msoa21_name", "ethnic_group", "residents"),
        [path],
    )
    cols = ("geography code", "geography", CENSUS_ETHNIC_TOTAL, *CENSUS_ETHNIC_GROUPS)
    seen: set[str] = set()
    for line, row in _dict_rows(path, cols):
        code = _text(path, line, row, "geography code")
        if code in seen:
            raise ReferenceDataError(path, f"duplicate {code}", column="geography code", line=line)
        seen.add(code)
        name = _text(path, line, row, "geography")
        counts = {g: _int(path, line, row, c) for c, g in CENSUS_ETHNIC_GROUPS.items()}
        total = _int(path, line, row, CENSUS_ETHNIC_TOTAL)
        if sum(counts.values()) != total:
            raise ReferenceDataError(
                path,
                f"high-level groups sum to {sum(counts.values())}, not the total {total}",
                column=CENSUS_ETHNIC_TOTAL,
                line=line,
            )
        out.records.extend((code, name, group, n) for group, n in counts.items())
    return out


def read_lsoa_imd(data_dir: Path, authorities: Parsed, census_age: Parsed) -> Parsed:
    """Both IMD editions, one row per (code, vintage).

    The 2025 file carries neither LSOA names nor authorities: the name comes from Census 2021
    (which covers only its extract's area), the authority from the name's prefix, or else from
    the 2019 row of the same code when that authority still exists (codes are stable areas).
    """
    f19 = required_file(data_dir, IMD2019_FILE)
    f25 = required_file(data_dir, IMD2025_FILE)
    out = Parsed(
        "lsoa_imd",
        "ref_lsoa_imd",
        (
            "lsoa_code",
            "vintage",
            "lsoa_name",
            "local_authority_code",
            "imd_rank",
            "imd_decile",
            "income_rank",
            "income_decile",
            "income_score",
            "income_rank_fraction",
        ),
        [f19, f25, *census_age.files],
    )
    current = {r[0] for r in authorities.records if r[2]}
    by_name = {_la_key(r[1]): r[0] for r in authorities.records if r[2]}

    rows19: list[Record] = []
    lad19: dict[str, str] = {}
    cols19 = (
        "lsoa11",
        "lsoa_name",
        "lad19",
        "imd_rank",
        "imd_decile",
        "income_rank",
        "income_decile",
    )
    for line, row in _dict_rows(f19, cols19):
        code = _text(f19, line, row, "lsoa11")
        if code in lad19:
            raise ReferenceDataError(f19, f"duplicate {code}", column="lsoa11", line=line)
        lad19[code] = _text(f19, line, row, "lad19")
        rows19.append(
            (
                code,
                2011,
                _text(f19, line, row, "lsoa_name"),
                lad19[code],
                _int(f19, line, row, "imd_rank"),
                _decile(f19, line, row, "imd_decile"),
                _int(f19, line, row, "income_rank"),
                _decile(f19, line, row, "income_decile"),
                None,
            )
        )

    names21 = {r[0]: r[1] for r in census_age.records}
    rows25: list[Record] = []
    seen: set[str] = set()
    cols25 = (
        "lsoa21_code",
        "IMD_rank",
        "IMD_decile",
        "Income_rank",
        "Income_decile",
        "Income_score",
    )
    for line, row in _dict_rows(f25, cols25):
        code = _text(f25, line, row, "lsoa21_code")
        if code in seen:
            raise ReferenceDataError(f25, f"duplicate {code}", column="lsoa21_code", line=line)
        seen.add(code)
        name = names21.get(code)
        la = by_name.get(_la_key(name.rsplit(" ", 1)[0])) if name else None
        if la is None and lad19.get(code) in current:
            la = lad19[code]
        rows25.append(
            (
                code,
                2021,
                name,
                la,
                _int(f25, line, row, "IMD_rank"),
                _decile(f25, line, row, "IMD_decile"),
                _int(f25, line, row, "Income_rank"),
                _decile(f25, line, row, "Income_decile"),
                _optional_float(f25, line, row, "Income_score"),
            )
        )
    for rows, path, column in ((rows19, f19, "income_rank"), (rows25, f25, "Income_rank")):
        n = len(rows)
        for r in rows:
            if not 1 <= r[6] <= n:
                raise ReferenceDataError(
                    path, f"rank {r[6]} outside 1..{n} for {r[0]}", column=column
                )
            out.records.append((*r, r[6] / n))
    return out
