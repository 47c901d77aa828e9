"""Load the scorer's reference maps from the ``ref_*`` tables (reference/loaders.py fills them).

Everything is read once into memory (a few hundred thousand small rows): the scorer looks up
LSOA deprivation, a cell's ward and authority, households and Census populations per batch, and
must not do that over the network. Empty tables are fine (see ``scoring.reference``).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import asyncpg
import h3

from lpt.geo import ForceArea
from lpt.logs import get_logger
from lpt.settings import Settings
from schemas.common import score_cell_of
from streams.scoring.reference import LsoaInfo, Reference

log = get_logger(__name__)

#: Children do not register: representation compares the adult bands only.
_NOT_REGISTERING = frozenset({"0-15"})


async def load_reference_data(conn: asyncpg.Connection, settings: Settings) -> Reference:
    ref = Reference(force_name=settings.force_name)
    for r in await conn.fetch(
        "SELECT lsoa_code, vintage, income_rank_fraction, income_decile, lsoa_name,"
        " local_authority_code FROM ref_lsoa_imd"
    ):
        ref.lsoa[(r["lsoa_code"], int(r["vintage"]))] = LsoaInfo(
            float(r["income_rank_fraction"]),
            int(r["income_decile"]),
            r["lsoa_name"],
            r["local_authority_code"],
        )
    for r in await conn.fetch("SELECT code, name FROM ref_local_authorities"):
        ref.local_authority_names[r["code"]] = r["name"]

    postcodes: Counter[str] = Counter()
    wards: dict[str, Counter[str]] = defaultdict(Counter)
    las: dict[str, Counter[str]] = defaultdict(Counter)
    for r in await conn.fetch(
        "SELECT cell, ward_code, local_authority_code FROM ref_postcodes WHERE NOT unlocated"
    ):
        cell = score_cell_of(r["cell"])
        postcodes[cell] += 1
        if r["ward_code"]:
            wards[cell][r["ward_code"]] += 1
        if r["local_authority_code"]:
            las[cell][r["local_authority_code"]] += 1
    cells = sorted(postcodes)
    if cells:
        area = ForceArea.from_settings(settings)
        centres = [h3.cell_to_latlng(c) for c in cells]
        inside = area.contains([p[0] for p in centres], [p[1] for p in centres])
        cells = [c for c, ok in zip(cells, inside.tolist(), strict=True) if ok]
    la_postcodes: Counter[str] = Counter()
    for cell in cells:
        ref.cell_postcodes[cell] = postcodes[cell]
        if wards[cell]:
            ref.cell_ward[cell] = min(wards[cell], key=lambda w: (-wards[cell][w], w))
        if las[cell]:
            la = min(las[cell], key=lambda a: (-las[cell][a], a))
            ref.cell_local_authority[cell] = la
            la_postcodes[la] += postcodes[cell]

    residents: Counter[str] = Counter()
    for r in await conn.fetch(
        "SELECT a.age_band, a.residents, i.local_authority_code AS la FROM ref_census_age a"
        " JOIN ref_lsoa_imd i ON i.lsoa_code = a.lsoa21_code AND i.vintage = 2021"
    ):
        if not r["la"]:
            continue
        residents[r["la"]] += r["residents"]
        if r["age_band"] not in _NOT_REGISTERING:
            band = ref.population_age.setdefault(r["la"], {})
            band[r["age_band"]] = band.get(r["age_band"], 0) + r["residents"]
    for la, n in residents.items():
        if la_postcodes[la]:
            ref.residents_per_postcode[la] = n / la_postcodes[la]

    # MSOA names are "<authority name> <number>": that is how an MSOA joins its authority.
    by_name = {name: code for code, name in ref.local_authority_names.items()}
    for r in await conn.fetch("SELECT msoa21_name, ethnic_group, residents FROM ref_census_ethnic"):
        msoa_la = by_name.get(r["msoa21_name"].rsplit(" ", 1)[0])
        if msoa_la is None or msoa_la not in ref.population_age:
            continue
        groups = ref.population_ethnic.setdefault(msoa_la, {})
        groups[r["ethnic_group"]] = groups.get(r["ethnic_group"], 0) + r["residents"]
    log.info(
        "streams.reference_loaded",
        lsoas=len(ref.lsoa),
        cells=len(ref.cell_postcodes),
        authorities=len(ref.population_age),
    )
    return ref
