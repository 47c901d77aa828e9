"""Reference data loaded from the real files into a real PostgreSQL database.

Expected figures are counted here straight from the files with the csv module, independently of
the loader's parsing, so a loader that dropped or duplicated rows would fail.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import h3
import pytest

from lpt.settings import Settings
from reference.loaders import cli, load_reference, load_reference_if_empty, read_all
from reference.lookup import imd_income, imd_income_many, postcode_info
from reference.sources import ReferenceDataError

IMD19 = "deprivation/imd2019_lsoa11_domains_rank_decile_england.csv"
IMD25 = "deprivation/imd2025_lsoa21_scores_ranks_deciles_england.csv"
LTLA = "deprivation/imd2025_ltla24_summary_england.csv"
AGE = "census2021/census2021_age6_lsoa21_humberside.csv"
ETHNIC = "census2021/census2021_ts021_ethnic_group_msoa21_england_wales.csv"


def _dicts(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="") as fh:
        yield from csv.DictReader(fh)


def _compact(pc: str) -> str:
    return pc.replace(" ", "").upper()


def expected_counts(data: Path) -> dict[str, int]:
    nspl = {_compact(r["Postcode"]) for f in data.glob("postcodes/nspl_*.csv") for r in _dicts(f)}
    codepoint: dict[str, str] = {}
    for f in data.glob("postcodes/codepoint_open_2014_*.csv"):
        if "column_headers" in f.name:
            continue
        with f.open(newline="") as fh:
            for row in csv.reader(fh):
                codepoint[_compact(row[0])] = row[9]  # WC, the 10th column
    ltla = {r["ltla24_code"] for r in _dicts(data / LTLA)}
    lad19 = {r["lad19"] for r in _dicts(data / IMD19)}
    return {
        "postcodes": len(nspl | set(codepoint)),
        "local_authorities": len(ltla | lad19),
        "lsoa_imd": sum(1 for _ in _dicts(data / IMD19)) + sum(1 for _ in _dicts(data / IMD25)),
        "wards": len({w for w in codepoint.values() if w}),
        "census_age": sum(1 for _ in _dicts(data / AGE)),
        "census_ethnic": 5 * sum(1 for _ in _dicts(data / ETHNIC)),
    }


async def table_counts(settings: Settings) -> dict[str, int]:
    conn = await asyncpg.connect(settings.dsn)
    try:
        return {
            d: await conn.fetchval(f"SELECT count(*) FROM ref_{d}")
            for d in (
                "postcodes",
                "local_authorities",
                "lsoa_imd",
                "wards",
                "census_age",
                "census_ethnic",
            )
        }
    finally:
        await conn.close()


async def test_load_real_files(isolated_settings: Settings, data_dir: Path) -> None:
    settings = isolated_settings
    expected = expected_counts(data_dir)
    counts = await load_reference(settings, data_dir, progress=False)
    assert counts == expected
    assert await table_counts(settings) == expected

    conn = await asyncpg.connect(settings.dsn)
    try:
        await _check_postcodes(conn, data_dir)
        await _check_imd_vintages(conn, data_dir)
        await _check_census_and_wards(conn, data_dir)
        loaded_at = await conn.fetchval("SELECT max(loaded_at) FROM ref_loads")
    finally:
        await conn.close()

    # Unchanged files: nothing rewritten, same counts returned.
    assert await load_reference(settings, data_dir, progress=False) == expected
    assert await load_reference_if_empty(settings) == {}
    conn = await asyncpg.connect(settings.dsn)
    try:
        assert await conn.fetchval("SELECT max(loaded_at) FROM ref_loads") == loaded_at
    finally:
        await conn.close()

    # Forced reload replaces, never appends.
    assert await load_reference(settings, data_dir, force=True, progress=False) == expected
    assert await table_counts(settings) == expected


async def _check_postcodes(conn: asyncpg.Connection, data: Path) -> None:
    hu = next(
        r
        for r in _dicts(data / "postcodes/nspl_may2025_latlon_HU.csv")
        if r["Postcode"] == "HU1 1AA"
    )
    info = await postcode_info(conn, "hu11aa")
    assert info is not None and not info.unlocated
    assert (info.lat, info.lng) == (float(hu["lat"]), float(hu["long"]))
    assert info.cell == h3.latlng_to_cell(float(hu["lat"]), float(hu["long"]), 10)
    assert info.location is not None and info.location.cell == info.cell
    # Code-Point: HU1 1AA is in ward E05001677 of Kingston upon Hull (E06000010).
    assert (info.ward_code, info.local_authority_code) == ("E05001677", "E06000010")
    assert info.local_authority_name == "Kingston upon Hull, City of"

    no_point = [
        r["Postcode"]
        for f in sorted(data.glob("postcodes/nspl_*.csv"))
        for r in _dicts(f)
        if r["lat"] == ""
    ]
    assert no_point, "the sample has postcodes without coordinates"
    for raw in (no_point[0], no_point[-1]):
        missing = await postcode_info(conn, raw)
        assert missing is not None and missing.unlocated
        assert (missing.lat, missing.lng, missing.cell, missing.location) == (
            None,
            None,
            None,
            None,
        )
    assert await conn.fetchval("SELECT count(*) FROM ref_postcodes WHERE unlocated") == len(
        no_point
    )
    assert await postcode_info(conn, "ZZ9 9ZZ") is None


async def _check_imd_vintages(conn: asyncpg.Connection, data: Path) -> None:
    r19 = {r["lsoa11"]: r for r in _dicts(data / IMD19)}
    r25 = {r["lsoa21_code"]: r for r in _dicts(data / IMD25)}
    humber = {r["lsoa21_code"] for r in _dicts(data / AGE)}
    only11 = sorted(c for c in r19 if c not in r25 and r19[c]["lad19"] == "E06000010")[0]
    only21 = sorted(c for c in humber if c not in r19)[0]
    shared = sorted(c for c in humber if c in r19)[0]

    # A 2011-only code: direct in 2011; asked as 2021 it falls back to the 2011 row.
    direct = await imd_income(conn, only11, 2011)
    assert direct is not None and (direct.vintage, direct.fallback) == (2011, False)
    assert direct.income_rank == int(r19[only11]["income_rank"])
    assert direct.income_decile == int(r19[only11]["income_decile"])
    assert direct.income_score is None
    back = await imd_income(conn, only11, 2021)
    assert back is not None and (back.vintage, back.fallback) == (2011, True)

    # A 2021-only code: direct in 2021 (with IMD 2025's score); asked as 2011 it falls back.
    new = await imd_income(conn, only21, 2021)
    assert new is not None and (new.vintage, new.fallback) == (2021, False)
    assert new.income_rank == int(r25[only21]["Income_rank"])
    assert new.income_score == float(r25[only21]["Income_score"])
    assert new.local_authority_code is not None and new.lsoa_name is not None
    fell = await imd_income(conn, only21, 2011)
    assert fell is not None and (fell.vintage, fell.fallback) == (2021, True)

    # A shared code answers from the edition of the vintage asked for, never mixed.
    both = await imd_income_many(conn, [(shared, 2011), (shared, 2021), ("E01999999", 2021)])
    assert both[(shared, 2011)].income_rank == int(r19[shared]["income_rank"])
    assert both[(shared, 2021)].income_rank == int(r25[shared]["Income_rank"])
    assert not both[(shared, 2011)].fallback and not both[(shared, 2021)].fallback
    assert ("E01999999", 2021) not in both
    n25 = len(r25)
    assert both[(shared, 2021)].income_rank_fraction == pytest.approx(
        int(r25[shared]["Income_rank"]) / n25
    )
    with pytest.raises(ValueError, match="vintage"):
        await imd_income(conn, shared, 2019)


async def _check_census_and_wards(conn: asyncpg.Connection, data: Path) -> None:
    labels = {r["age_group"] for r in _dicts(data / AGE)}
    assert len(labels) == 6
    bands = {
        r["age_band"] for r in await conn.fetch("SELECT DISTINCT age_band FROM ref_census_age")
    }
    assert bands == {"0-15", "16-24", "25-34", "35-49", "50-64", "65+"}
    age_total = sum(int(r["usual_residents"]) for r in _dicts(data / AGE))
    assert await conn.fetchval("SELECT sum(residents) FROM ref_census_age") == age_total
    eth_total = sum(
        int(r["Ethnic group: Total: All usual residents"]) for r in _dicts(data / ETHNIC)
    )
    assert await conn.fetchval("SELECT sum(residents) FROM ref_census_ethnic") == eth_total
    groups = {r[0] for r in await conn.fetch("SELECT DISTINCT ethnic_group FROM ref_census_ethnic")}
    assert groups == {"asian", "black", "mixed", "white", "other"}
    ward = await conn.fetchrow("SELECT * FROM ref_wards WHERE ward_code = 'E05001677'")
    assert ward["local_authority_code"] == "E06000010"
    located = await conn.fetchrow(
        "SELECT avg(lat) AS lat, count(*) AS n FROM ref_postcodes "
        "WHERE ward_code = 'E05001677' AND NOT unlocated"
    )
    assert ward["located_postcodes"] == located["n"] > 0
    assert ward["lat"] == pytest.approx(located["lat"])


# -- malformed and missing files ------------------------------------------------------------


def _copy_data(data: Path, tmp: Path) -> Path:
    """A writable mirror of the data folder (symlinks, so only a file we break is real)."""
    for sub in ("postcodes", "deprivation", "census2021"):
        (tmp / sub).mkdir(parents=True)
        for f in (data / sub).iterdir():
            (tmp / sub / f.name).symlink_to(f)
    return tmp


def _break(path: Path, line_no: int, old: str, new: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.unlink()  # the symlink; write a real file in its place
    assert old in lines[line_no - 1]
    lines[line_no - 1] = lines[line_no - 1].replace(old, new, 1)
    path.write_text("".join(lines))


def test_malformed_value_names_file_line_and_column(data_dir: Path, tmp_path: Path) -> None:
    data = _copy_data(data_dir, tmp_path)
    target = data / IMD25
    row3 = (data_dir / IMD25).read_text().splitlines()[2].split(",")
    _break(target, 3, ",".join(row3), ",".join([*row3[:10], "many", *row3[11:]]))  # Income_rank
    with pytest.raises(ReferenceDataError) as err:
        read_all(data, progress=False)
    assert err.value.path == target
    assert (err.value.line, err.value.column) == (3, "Income_rank")
    assert "imd2025_lsoa21" in str(err.value) and "'Income_rank'" in str(err.value)


def test_missing_column_and_missing_file(data_dir: Path, tmp_path: Path) -> None:
    data = _copy_data(data_dir, tmp_path)
    nspl = data / "postcodes/nspl_may2025_latlon_HU.csv"
    _break(nspl, 1, "Postcode,lat,long", "Postcode,latitude,long")
    with pytest.raises(ReferenceDataError) as err:
        read_all(data, progress=False)
    assert err.value.path == nspl and err.value.column == "lat"

    (data / AGE).unlink()
    nspl.unlink()
    nspl.symlink_to(data_dir / "postcodes/nspl_may2025_latlon_HU.csv")
    with pytest.raises(
        ReferenceDataError, match=r"census2021_age6_lsoa21_humberside\.csv.*not found"
    ):
        read_all(data, progress=False)


async def test_bad_files_leave_database_untouched(
    isolated_settings: Settings, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown Census label fails the whole load before any write; `lpt up`'s loader reports
    the reason and carries on instead of crashing the start-up."""
    data = _copy_data(data_dir, tmp_path)
    _break(data / AGE, 2, "Aged 15 years and under", "Aged 0 to 15 years")
    with pytest.raises(ReferenceDataError) as err:
        await load_reference(isolated_settings, data, progress=False)
    assert err.value.column == "age_group" and err.value.line == 2
    assert set((await table_counts(isolated_settings)).values()) == {0}

    broken = dataclasses.replace(isolated_settings, data_dir=data)
    assert await load_reference_if_empty(broken) == {}
    assert "age_group" in capsys.readouterr().err


def test_cli_reports_bad_file(
    stack: Settings, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lpt reference load` exits 2 naming the file and column (parsing fails before any write,
    so the session database is not touched)."""
    data = _copy_data(data_dir, tmp_path)
    target = data / ETHNIC
    with (data_dir / ETHNIC).open(newline="") as fh:
        rows = list(csv.reader(fh))
    rows[3][rows[0].index("Ethnic group: White")] = "n/a"
    target.unlink()
    with target.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    assert cli(argparse.Namespace(data_dir=data, force=False)) == 2
    err = capsys.readouterr().err
    assert str(target) in err and "line 4" in err and "'Ethnic group: White'" in err
