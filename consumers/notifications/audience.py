"""Who a notification is for: areas, community groups, set-ups or named residents.

Never by ethnicity, religion or any other special-category data (DESIGN §6). That is true by
construction: :class:`schemas.notifications.Audience` has no field for it, and the one query
below reads only the identity columns in :data:`COLUMNS_READ` (tests check both, and that
residents of different ethnic groups in one area are selected alike).

Opted-out residents are never selected (``opted_out_at IS NULL``); erased residents have no
identity row left, so they cannot be selected either. The worker checks again at send time.

E-mail goes only to confirmed addresses (``email_confirmed_at``, set by the link in the sign-up
e-mail, :mod:`api.public.confirm`): anyone can type someone else's address into the sign-up
form, and that person never opted in. So the e-mail channel of an unconfirmed registration is
dropped here, and a resident left with no channel is not selected at all (nothing is charged
to their budget, no outbox row is written). Their other channels (SMS, push) still count.

How the criteria combine: the area is the union of its cells and wards; a community group
given together with an area selects the group's members *in* that area (a set-up "for this
group in this ward"), alone it selects all its members; named residents are added. A set-up
contributes its own area and group in the same way.

Cells may be at any resolution. Residents are indexed at resolution 10 (DESIGN §4); a resident
is in an audience cell when the cell is the H3 parent of the resident's cell at the cell's
resolution. The parent is computed in SQL from the 64-bit index (exactly ``cell_to_parent``:
set the resolution field, fill the finer digits with 7), so one hash join resolves 60,000
residents against thousands of cells. Cells finer than resolution 10 stand for their res-10
parent (finer than the street is false precision anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time

import asyncpg
import h3

from consumers.notifications.budget import WINDOW, Preferences
from schemas.common import INDEX_RESOLUTION, score_cell_of
from schemas.notifications import Audience

#: The identity columns the resolver reads; nothing about a person's ethnicity, religion, age,
#: health or the like is among them (and identity_people does not hold such data at all).
COLUMNS_READ = frozenset(
    {
        "resident_id",
        "email",
        "phone",
        "cell",
        "ward_code",
        "channels",
        "community_groups",
        "opted_out_at",
        "email_confirmed_at",
    }
)


class AudienceError(ValueError):
    """An audience that cannot be resolved; ``field`` names the offending part."""

    def __init__(self, reason: str, field: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class Criteria:
    """An audience reduced to what the query needs (cells as 64-bit ints with resolutions)."""

    cell_ids: tuple[int, ...] = ()
    resolutions: tuple[int, ...] = ()
    ward_codes: tuple[str, ...] = ()
    group: str | None = None
    resident_ids: tuple[str, ...] = ()

    @property
    def has_area(self) -> bool:
        return bool(self.cell_ids or self.ward_codes)


@dataclass(frozen=True, slots=True)
class Recipient:
    resident_id: str
    channels: tuple[str, ...]
    cell: str | None
    ward_code: str | None
    prefs: Preferences
    topics: tuple[str, ...] | None
    charges_in_window: int

    @property
    def area_cell(self) -> str | None:
        """The resolution-9 cell (the inbox area) of the resident's street cell."""
        if not self.cell:
            return None
        return score_cell_of(self.cell)


def _cells(cells: Iterable[str], field: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    ids: set[int] = set()
    for cell in cells:
        if not h3.is_valid_cell(cell):
            raise AudienceError(f"{cell!r} is not an H3 cell", field)
        if h3.get_resolution(cell) > INDEX_RESOLUTION:
            cell = h3.cell_to_parent(cell, INDEX_RESOLUTION)
        ids.add(h3.str_to_int(cell))
    resolutions = sorted({h3.get_resolution(h3.int_to_str(i)) for i in ids})
    return tuple(sorted(ids)), tuple(resolutions)


async def criteria_for(conn: asyncpg.Connection, audience: Audience) -> Criteria:
    """Validate an audience and fold in its set-up; :class:`AudienceError` names the field."""
    cells = list(audience.cells)
    wards = list(audience.ward_codes)
    group = audience.community_group
    if audience.setup_id:
        setup = await conn.fetchrow(
            """SELECT area_cells, ward_codes, community_group, archived_at
               FROM notification_setups WHERE setup_id = $1""",
            audience.setup_id,
        )
        if setup is None:
            raise AudienceError("unknown set-up", "audience.setup_id")
        if setup["archived_at"] is not None:
            raise AudienceError("set-up is archived (read-only)", "audience.setup_id")
        cells.extend(setup["area_cells"])
        wards.extend(setup["ward_codes"])
        if setup["community_group"]:
            if group and group.lower() != setup["community_group"].lower():
                raise AudienceError(
                    "differs from the set-up's community group", "audience.community_group"
                )
            group = setup["community_group"]
    field = "audience.cells" if audience.cells else "audience.setup_id"
    cell_ids, resolutions = _cells(cells, field)
    return Criteria(
        cell_ids=cell_ids,
        resolutions=resolutions,
        ward_codes=tuple(sorted({w.strip().upper() for w in wards if w.strip()})),
        group=group.strip().lower() if group and group.strip() else None,
        resident_ids=tuple(sorted(set(audience.resident_ids))),
    )


#: ``cell_to_parent`` on the 64-bit H3 index: resolution field (bits 52-55) set to r, digits
#: of resolutions r+1..15 (3 bits each, from the bottom) set to 7.
_PARENT = (
    "(({h} & ~(15::bigint << 52)) | ({r}::bigint << 52) | ((1::bigint << (3 * (15 - {r}))) - 1))"
)
_H3_INT = "('x' || lpad(p.cell, 16, '0'))::bit(64)::bigint"

#: The one audience query. $1 cell ids, $2 their resolutions, $3 wards, $4 group (casefolded),
#: $5 resident ids, $6 whether an area was given, $7 start of the budget window,
#: $8 the message id (residents already in its outbox are left out: a redelivery resumes).
AUDIENCE_SQL = f"""
WITH aud_cells AS (SELECT DISTINCT unnest($1::bigint[]) AS cell_id),
aud_res AS (SELECT DISTINCT unnest($2::int[]) AS r),
in_cells AS (
    SELECT p.resident_id
    FROM identity_people p CROSS JOIN aud_res
    JOIN aud_cells ON aud_cells.cell_id = {_PARENT.format(h=_H3_INT, r="aud_res.r")}
    WHERE p.cell IS NOT NULL AND p.opted_out_at IS NULL
),
selected AS (
    SELECT p.resident_id FROM identity_people p
    WHERE p.opted_out_at IS NULL
      AND (
        (($6 AND (p.ward_code = ANY($3::text[])
                  OR p.resident_id IN (SELECT resident_id FROM in_cells)))
          OR (NOT $6 AND $4::text IS NOT NULL))
        AND ($4::text IS NULL OR $4::text = ANY(
              SELECT lower(g) FROM unnest(p.community_groups) AS g))
        OR p.resident_id = ANY($5::text[])
      )
)
SELECT p.resident_id, p.channels, p.cell, p.ward_code,
       p.email_confirmed_at IS NOT NULL AS email_confirmed,
       pref.channels AS pref_channels, pref.topics, pref.quiet_start, pref.quiet_end,
       pref.timezone, pref.max_per_week,
       COALESCE(charges.n, 0) AS charges_in_window
FROM selected s
JOIN identity_people p USING (resident_id)
LEFT JOIN notification_preferences pref USING (resident_id)
LEFT JOIN LATERAL (
    SELECT count(*) AS n FROM notification_budget_ledger l
    WHERE l.resident_id = p.resident_id AND l.charged_at > $7
) charges ON true
WHERE NOT EXISTS (
    SELECT 1 FROM notification_outbox o WHERE o.message_id = $8 AND o.resident_id = p.resident_id
)
ORDER BY p.resident_id
"""


def preferences_from_row(row: asyncpg.Record) -> Preferences:
    if row["quiet_start"] is None:  # no preferences row: the defaults
        return Preferences()
    start: time = row["quiet_start"]
    end: time = row["quiet_end"]
    return Preferences(start, end, row["timezone"], int(row["max_per_week"]))


def channels_from_row(row: asyncpg.Record) -> tuple[str, ...]:
    """The channels a message may use: chosen (or registered), e-mail only once confirmed."""
    registered = tuple(c for c in row["channels"] if c != "email" or row["email_confirmed"])
    chosen = row["pref_channels"]
    if chosen is None:
        return registered
    return tuple(c for c in chosen if c in registered)


async def resolve(
    conn: asyncpg.Connection, criteria: Criteria, message_id: str, now: datetime
) -> list[Recipient]:
    """The residents a request reaches (one query), with their preferences and budget use.

    Residents with no usable channel (typically: e-mail only, not yet confirmed) are left out.
    """
    rows: Sequence[asyncpg.Record] = await conn.fetch(
        AUDIENCE_SQL,
        list(criteria.cell_ids),
        list(criteria.resolutions),
        list(criteria.ward_codes),
        criteria.group,
        list(criteria.resident_ids),
        criteria.has_area,
        now - WINDOW,
        message_id,
    )
    recipients: list[Recipient] = []
    for r in rows:
        channels = channels_from_row(r)
        if not channels:
            continue
        recipients.append(
            Recipient(
                resident_id=r["resident_id"],
                channels=channels,
                cell=r["cell"],
                ward_code=r["ward_code"],
                prefs=preferences_from_row(r),
                topics=tuple(r["topics"]) if r["topics"] is not None else None,
                charges_in_window=int(r["charges_in_window"]),
            )
        )
    return recipients
