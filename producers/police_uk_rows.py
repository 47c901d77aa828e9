"""police.uk street-level CSV rows: validation, row identity, and ``crime.reported`` JSON.

Row identity (what makes a re-import publish nothing new):
- a row with a ``Crime ID`` keeps it as ``incident_id``; its event id hashes (month, Crime ID).
  police.uk occasionally repeats a Crime ID, within a month (the same crime at two snapped
  points) or in the next month's file (seen in the sample: 2018-10 and 2018-11). The month and,
  for the n-th repeat within a file, ``n`` are part of the event id, so every CSV row is one
  event and published counts equal the files' counts.
- anti-social behaviour rows (and any other row) without a Crime ID get a generated
  ``incident_id``: a hash of all the row's fields plus the row's occurrence index among
  identical rows in the file. Identical ASB rows (same month, snapped point and type: about a
  quarter of them) stay distinct events, and re-reading the file regenerates the same ids.

Field choices:
- ``occurred_at`` is the 15th of the row's month, 00:00 UTC (police.uk publishes months only).
- ``lsoa_vintage``: police.uk assigned 2011 LSOA codes up to December 2022 data and 2021 codes
  from January 2023 data. IMD 2019 is published for 2011 LSOAs and IMD 2025 for 2021 LSOAs, so
  consumers need the vintage to join the right deprivation table.
- ``in_force_area`` is False for a point outside the force area (``lpt.geo.ForceArea``); such
  rows are still published, counted and flagged; the stream processors leave them out of the
  force's tables. Rows without coordinates get ``location`` None and ``in_force_area`` True
  (nothing says they lie elsewhere; they count at force level only).

Speed: the columns are checked by hand against the ``CrimeReported`` constraints and the JSON is
assembled from escaped pieces instead of building a pydantic model per row (about 4x faster);
the tests decode every published message with the schema, which keeps the two in step.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring
from pathlib import Path
from typing import NamedTuple

import h3

from lpt.geo import ForceArea
from schemas.common import CRIME_TYPES, INDEX_RESOLUTION, SCORE_RESOLUTION
from schemas.envelope import EVENT_NAMESPACE

SOURCE = "police-uk"
EVENT_TYPE = "crime.reported"
#: First month police.uk published with 2021 LSOA codes.
LSOA_2021_FROM = "2023-01"
#: Line numbers kept per skip reason, for the summary.
EXAMPLE_LINES = 5

COLUMNS = (
    "Crime ID",
    "Month",
    "Reported by",
    "Falls within",
    "Longitude",
    "Latitude",
    "Location",
    "LSOA code",
    "LSOA name",
    "Crime type",
    "Last outcome category",
    "Context",
)
#: Older extracts may lack Context; every other column is required.
OPTIONAL_COLUMNS = frozenset({"Context"})

# Constraints mirrored from schemas.crime (the tests decode every published event with it).
_MONTH_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
_LSOA_RE = re.compile(r"^[EW]0[01][0-9]{6}$")
_CRIME_TYPES = frozenset(CRIME_TYPES)
_MAX_LEN = {
    "Crime ID": 128,
    "Reported by": 120,
    "Falls within": 120,
    "Location": 200,
    "LSOA name": 120,
    "Last outcome category": 200,
    "Context": 2000,
}
_SHORTEST_LIMIT = min(_MAX_LEN.values())
_NAMESPACE = EVENT_NAMESPACE.bytes

Message = tuple[bytes | None, bytes]


class ImportFileError(Exception):
    """The whole file cannot be imported (unreadable, not UTF-8, not a police.uk header)."""


class Record(NamedTuple):
    """One valid row, stripped, empty strings as None."""

    line: int
    month: str
    reported_by: str
    falls_within: str
    lat: float | None
    lng: float | None
    location_text: str | None
    lsoa_code: str | None
    lsoa_name: str | None
    crime_type: str
    outcome: str | None
    context: str | None
    incident_id: str
    event_id: str


@dataclass
class ParsedFile:
    """The valid rows of one CSV with their area flags, and what was skipped and why."""

    path: Path
    sha256: str
    rows_read: int = 0
    records: list[Record] = field(default_factory=list)
    in_area: list[bool] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_lines: dict[str, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def skip(self, reason: str, line: int) -> None:
        self.skipped[reason] += 1
        lines = self.skipped_lines.setdefault(reason, [])
        if len(lines) < EXAMPLE_LINES:
            lines.append(line)


def event_id(*parts: str) -> str:
    """``str(schemas.envelope.deterministic_id(*parts))`` without building a UUID object.

    uuid5 by hand (SHA-1 of namespace + name, version 5, RFC 4122 variant): the ``uuid``
    module's version costs as much as the rest of a row's checks. The tests check both agree.
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def generated_incident_id(fields: Iterable[str], occurrence: int) -> str:
    """Stable id for a row without Crime ID: its fields and its index among identical rows."""
    digest = hashlib.sha256("\x1f".join([*fields, str(occurrence)]).encode()).hexdigest()
    return f"puk-{digest[:40]}"


def lsoa_vintage(month: str) -> int:
    """2011 LSOA codes up to 2022-12 data, 2021 codes from 2023-01 (see the module docstring)."""
    return 2011 if month < LSOA_2021_FROM else 2021


def parse_file(path: Path, force_area: ForceArea) -> ParsedFile:
    """Read and check one CSV; raises :class:`ImportFileError` if the file is unusable.

    Malformed rows never raise: they are counted in ``skipped`` by reason.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ImportFileError(f"cannot read: {exc.strerror or exc}") from exc
    parsed = ParsedFile(path=Path(path), sha256=hashlib.sha256(raw).hexdigest())
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"not UTF-8 (byte {exc.start})") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in COLUMNS if c not in header and c not in OPTIONAL_COLUMNS]
    if missing:
        raise ImportFileError(f"not a police.uk street-level CSV, missing columns: {missing}")
    col = {c: header.index(c) for c in COLUMNS if c in header}
    i_id, i_month, i_rep, i_fall = (col[c] for c in COLUMNS[:4])
    i_lng, i_lat, i_loc, i_lsoa, i_lsoa_name, i_type, i_outcome = (col[c] for c in COLUMNS[4:11])
    i_ctx = col.get("Context")
    width = len(header)
    too_long = [(col[c], c, n) for c, n in _MAX_LEN.items() if c in col]
    occurrences: Counter[str] = Counter()
    records = parsed.records
    skip = parsed.skip

    for raw_row in reader:
        line = reader.line_num
        if not raw_row:
            continue  # a blank line holds no data
        parsed.rows_read += 1
        if len(raw_row) != width:
            skip("wrong_column_count", line)
            continue
        row = list(map(str.strip, raw_row))
        month = row[i_month]
        if not _MONTH_RE.match(month):
            skip("bad_month", line)
            continue
        crime_type = row[i_type]
        if crime_type not in _CRIME_TYPES:
            skip("unknown_crime_type", line)
            continue
        lng_s, lat_s = row[i_lng], row[i_lat]
        lat: float | None = None
        lng: float | None = None
        if lng_s or lat_s:
            try:
                lat, lng = float(lat_s), float(lng_s)
            except ValueError:
                skip("bad_coordinates", line)
                continue
            if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):  # also rejects nan
                skip("bad_coordinates", line)
                continue
        if not row[i_rep]:
            skip("missing_reported_by", line)
            continue
        if not row[i_fall]:
            skip("missing_falls_within", line)
            continue
        lsoa = row[i_lsoa]
        if lsoa and not _LSOA_RE.match(lsoa):
            skip("bad_lsoa_code", line)
            continue
        if max(map(len, row)) > _SHORTEST_LIMIT:
            long_field = next((name for i, name, n in too_long if len(row[i]) > n), None)
            if long_field is not None:
                skip(f"too_long:{long_field}", line)
                continue

        crime_id = row[i_id]
        if crime_id:
            occurrence = occurrences[crime_id]
            occurrences[crime_id] = occurrence + 1
            incident = crime_id
            parts: tuple[str, ...] = (SOURCE, EVENT_TYPE, month, crime_id)
            if occurrence:
                parts += (str(occurrence),)
        else:
            ident = "\x1f".join(row)
            occurrence = occurrences[ident]
            occurrences[ident] = occurrence + 1
            incident = generated_incident_id(row, occurrence)
            parts = (SOURCE, EVENT_TYPE, incident)
        records.append(
            Record(
                line,
                month,
                row[i_rep],
                row[i_fall],
                lat,
                lng,
                row[i_loc] or None,
                lsoa or None,
                row[i_lsoa_name] or None,
                crime_type,
                row[i_outcome] or None,
                (row[i_ctx] or None) if i_ctx is not None else None,
                incident,
                event_id(*parts),
            )
        )

    # One vectorised point-in-polygon call for the whole file.
    located = [i for i, r in enumerate(records) if r.lat is not None]
    parsed.in_area = [True] * len(records)
    if located:
        inside = force_area.contains(
            [records[i].lat for i in located],  # type: ignore[misc]
            [records[i].lng for i in located],  # type: ignore[misc]
        )
        for i, ok in zip(located, inside.tolist(), strict=True):
            parsed.in_area[i] = ok
    return parsed


class Encoder:
    """``crime.reported`` JSON for parsed rows, with the partition key of each.

    The JSON is assembled from pieces: strings go through the C ``encode_basestring`` escaper
    (repeated values such as street names and outcomes are escaped once and remembered), floats
    use ``repr`` as ``json`` does, and the rest is constant. H3 cells are remembered per
    snapped point (police.uk puts many crimes on the same point).
    """

    MAX_CACHED = 200_000

    def __init__(self, produced_at: datetime | None = None) -> None:
        when = (produced_at or datetime.now(UTC)).astimezone(UTC)
        self.produced_at = when.isoformat().replace("+00:00", "Z")
        self._cells: dict[tuple[float, float], tuple[str, bytes]] = {}
        self._escaped: dict[str, str] = {}

    def cells(self, lat: float, lng: float) -> tuple[str, bytes]:
        """(res-10 cell, res-9 cell as the partition key) of a point."""
        hit = self._cells.get((lat, lng))
        if hit is None:
            cell = h3.latlng_to_cell(lat, lng, INDEX_RESOLUTION)
            hit = (cell, h3.cell_to_parent(cell, SCORE_RESOLUTION).encode())
            if len(self._cells) < self.MAX_CACHED:
                self._cells[(lat, lng)] = hit
        return hit

    def _q(self, value: str | None) -> str:
        if value is None:
            return "null"
        hit = self._escaped.get(value)
        if hit is None:
            hit = encode_basestring(value)
            if len(self._escaped) < self.MAX_CACHED:
                self._escaped[value] = hit
        return hit

    def encode(self, parsed: ParsedFile, indices: Iterable[int]) -> list[Message]:
        records, in_area, q = parsed.records, parsed.in_area, self._q
        head = f'"produced_at":"{self.produced_at}","source":"{SOURCE}","trace_id":null,'
        out: list[Message] = []
        for i in indices:
            r = records[i]
            if r.lat is not None:
                cell, key = self.cells(r.lat, r.lng)  # type: ignore[arg-type]
                location = f'{{"lat":{r.lat!r},"lng":{r.lng!r},"cell":"{cell}"}}'
            else:
                key, location = r.incident_id.encode(), "null"
            vintage = ("2011" if r.month < LSOA_2021_FROM else "2021") if r.lsoa_code else "null"
            context = "null" if r.context is None else encode_basestring(r.context)
            value = (
                f'{{"event_id":"{r.event_id}","schema_version":1,'
                f'"occurred_at":"{r.month}-15T00:00:00Z",{head}'
                f'"incident_id":{encode_basestring(r.incident_id)},"version":1,'
                f'"crime_type":{q(r.crime_type)},"month":"{r.month}",'
                f'"reported_by":{q(r.reported_by)},"falls_within":{q(r.falls_within)},'
                f'"location":{location},"location_text":{q(r.location_text)},'
                f'"lsoa_code":{q(r.lsoa_code)},"lsoa_name":{q(r.lsoa_name)},'
                f'"lsoa_vintage":{vintage},"outcome":{q(r.outcome)},"context":{context},'
                f'"in_force_area":{"true" if in_area[i] else "false"},"type":"{EVENT_TYPE}"}}'
            )
            out.append((key, value.encode()))
        return out


def encode_file(
    path: Path, force_area: ForceArea, produced_at: datetime | None = None
) -> list[Message]:
    """Every valid row of a file as (key, value) messages, without publishing (benchmarks)."""
    parsed = parse_file(path, force_area)
    return Encoder(produced_at).encode(parsed, range(len(parsed)))
