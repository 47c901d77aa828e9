"""Door-knock lists and recording a knock from the phone.

A list covers the postcodes of a set-up's area, ordered by the priority of their street cell
(highest first). No gazetteer is held, so the doors of a postcode are the addresses the system
has met: earlier knocks and registered households. Hidden from the list:

- registered households and addresses visited in the last ``VISITED_DAYS`` days, unless the
  set-up chose to revisit (or the officer asks for it with ``revisit=1``);
- households that declined in the last ``DECLINED_DAYS`` days, always (their answer stands);
- addresses marked "not in" today, for everyone, until the end of the (UK) day.

Recording a knock publishes ``doorknock.recorded`` through the intake (``producers.intake``)
with the officer's pseudonymous account id; ``no_answer`` is the "not in" button.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import h3
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.context import RESOURCES
from api.http import HTTPProblem, parse_body
from api.officer.access import FIELD, forbid_out_of_scope, require
from api.officer.accounts import Account
from api.officer.cells import score_of_cells
from api.officer.projection import door_key
from api.officer.setups import load_setup
from api.officer.state import officer_state
from producers.intake import DoorKnockReport, IntakeError
from schemas.common import DoorKnockOutcome, normalise_postcode, score_cell_of
from schemas.envelope import utcnow

UK = ZoneInfo("Europe/London")
VISITED_DAYS = 28
DECLINED_DAYS = 365
MAX_POSTCODES = 300
VISITED_OUTCOMES = ("spoke", "registered", "leaflet_left")


def uk_today(now: datetime | None = None) -> Any:
    return (now or utcnow()).astimezone(UK).date()


class KnockIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    postcode: str = Field(min_length=5, max_length=10)
    address_ref: str | None = Field(default=None, min_length=1, max_length=80)
    outcome: DoorKnockOutcome
    setup_id: str | None = Field(default=None, min_length=1, max_length=64)
    occurred_at: AwareDatetime | None = None


async def area_postcodes(request: web.Request, setup: dict[str, Any]) -> list[dict[str, Any]]:
    """Located postcodes of a set-up's wards and cells, with their res-9 cell."""
    children = [c for cell in setup["area_cells"] for c in h3.cell_to_children(cell, 10)]
    rows = await officer_state(request).pool.fetch(
        """SELECT postcode, cell FROM ref_postcodes
           WHERE cell IS NOT NULL AND (ward_code = ANY($1::text[]) OR cell = ANY($2::text[]))""",
        list(setup["ward_codes"]),
        children,
    )
    return [{"postcode": r["postcode"], "cell": score_cell_of(r["cell"])} for r in rows]


async def door_list(
    request: web.Request, account: Account, setup: dict[str, Any], revisit: bool
) -> dict[str, Any]:
    pool = officer_state(request).pool
    postcodes = await area_postcodes(request, setup)
    scores = await score_of_cells(pool, sorted({p["cell"] for p in postcodes}))
    postcodes.sort(key=lambda p: (-scores.get(p["cell"], (0.0, 0))[0], p["postcode"]))
    postcodes = postcodes[:MAX_POSTCODES]
    codes = [p["postcode"] for p in postcodes]
    today = uk_today()
    knocks = await pool.fetch(
        """SELECT DISTINCT ON (postcode, door_key) postcode, door_key, address_ref, outcome,
                  occurred_at
           FROM officer_doorknocks
           WHERE postcode = ANY($1::text[]) AND door_key IS NOT NULL
           ORDER BY postcode, door_key, occurred_at DESC""",
        codes,
    )
    declined = {
        (r["postcode"], r["door_key"])
        for r in await pool.fetch(
            """SELECT DISTINCT postcode, door_key FROM officer_doorknocks
               WHERE postcode = ANY($1::text[]) AND outcome = 'declined'
                 AND occurred_at > now() - make_interval(days => $2)""",
            codes,
            DECLINED_DAYS,
        )
    }
    registered = {
        (r["postcode"], r["door_key"])
        for r in await pool.fetch(
            """SELECT DISTINCT postcode, door_key FROM officer_doorknocks
               WHERE postcode = ANY($1::text[]) AND outcome = 'registered'""",
            codes,
        )
    }
    # Households registered online: the address is used to hide the door, never shown.
    for r in await pool.fetch(
        """SELECT postcode, address FROM identity_people
           WHERE postcode = ANY($1::text[]) AND address IS NOT NULL AND opted_out_at IS NULL""",
        codes,
    ):
        online = door_key(str(r["address"]).split(",")[0])
        if online:
            registered.add((r["postcode"], online))
    # "Not in" today: marked in the app, or a no-answer knock today from any source.
    not_in = {
        (r["postcode"], r["door_key"])
        for r in await pool.fetch(
            """SELECT postcode, door_key FROM officer_not_in
               WHERE day = $1 AND postcode = ANY($2::text[])
               UNION
               SELECT postcode, door_key FROM officer_doorknocks
               WHERE outcome = 'no_answer' AND door_key IS NOT NULL
                 AND postcode = ANY($2::text[])
                 AND (occurred_at AT TIME ZONE 'Europe/London')::date = $1""",
            today,
            codes,
        )
    }
    recent_cut = utcnow() - timedelta(days=VISITED_DAYS)
    doors: dict[str, list[dict[str, Any]]] = defaultdict(list)
    hidden: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for k in knocks:
        key = (k["postcode"], k["door_key"])
        why = None
        if key in not_in:
            why = "not_in_today"
        elif key in declined:
            why = "declined"
        elif not revisit and key in registered:
            why = "registered"
        elif not revisit and k["outcome"] in VISITED_OUTCOMES and k["occurred_at"] > recent_cut:
            why = "recently_visited"
        if why:
            hidden[k["postcode"]][why] += 1
            continue
        doors[k["postcode"]].append(
            {
                "address_ref": k["address_ref"],
                "last_outcome": k["outcome"],
                "last_visit": k["occurred_at"].isoformat(),
            }
        )
    known = {(k["postcode"], k["door_key"]) for k in knocks}
    for pc, _key in registered - known:
        if not revisit:
            hidden[pc]["registered"] += 1
    items = []
    for p in postcodes:
        score, rank = scores.get(p["cell"], (None, None))
        items.append(
            {
                "postcode": p["postcode"],
                "cell": p["cell"],
                "score": score,
                "rank": rank,
                "doors": sorted(doors.get(p["postcode"], []), key=lambda d: d["address_ref"]),
                "hidden": dict(hidden.get(p["postcode"], {})),
            }
        )
    return {
        "setup_id": setup["setup_id"],
        "revisit": revisit,
        "day": today.isoformat(),
        "count": len(items),
        "items": items,
    }


async def record_knock(request: web.Request, account: Account, knock: KnockIn) -> dict[str, Any]:
    state = officer_state(request)
    try:
        postcode = normalise_postcode(knock.postcode)
    except ValueError:
        raise HTTPProblem(422, "not a valid UK postcode", "postcode") from None
    ref = await state.pool.fetchrow(
        "SELECT ward_code, local_authority_code FROM ref_postcodes WHERE postcode = $1", postcode
    )
    if ref is None:
        raise HTTPProblem(422, "postcode is not a known postcode in the reference data", "postcode")
    index = await state.areas.get()
    ward, la = ref["ward_code"], ref["local_authority_code"]
    forbid_out_of_scope(
        account.scope.covers(ward, la or (index.la_of_ward.get(ward) if ward else None))
    )
    if knock.setup_id is not None:
        setup = await load_setup(request, account, knock.setup_id)
        if setup["archived_at"] is not None:
            raise HTTPProblem(409, "this set-up is archived and read-only", "setup_id")
    occurred = knock.occurred_at or utcnow()  # the event's time and the projection's agree
    report = DoorKnockReport(
        officer_id=account.account_id,
        postcode=postcode,
        outcome=knock.outcome,
        address_ref=knock.address_ref,
        setup_id=knock.setup_id,
        occurred_at=occurred,
    )
    try:
        done = await request.app[RESOURCES].intake.record_door_knock(report)
    except IntakeError as exc:
        raise HTTPProblem(exc.status, exc.message, exc.field) from None
    key = door_key(knock.address_ref)
    await state.pool.execute(
        """INSERT INTO officer_doorknocks (event_id, occurred_at, officer_id, postcode,
               address_ref, door_key, outcome, setup_id, cell, ward_code, local_authority_code)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (event_id) DO NOTHING""",
        done.event_id,
        occurred,
        account.account_id,
        postcode,
        knock.address_ref,
        key,
        knock.outcome,
        knock.setup_id,
        score_cell_of(done.cell) if done.cell else None,
        ward,
        la,
    )
    if knock.outcome == "no_answer" and key:
        await state.pool.execute(
            """INSERT INTO officer_not_in (postcode, door_key, day, marked_by)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
            postcode,
            key,
            uk_today(occurred),
            account.account_id,
        )
    return {
        "event_id": str(done.event_id),
        "postcode": postcode,
        "outcome": knock.outcome,
        "unlocated": done.cell is None,
        "hidden_until_end_of_day": knock.outcome == "no_answer" and key is not None,
    }


class IntakeKnockIn(KnockIn):
    """The intake's door-knock body (``POST /api/v1/doorknocks``) from a logged-in officer.

    Machine callers name the officer in ``officer_id``; for a session the officer is the
    account, so the field may be left out and, if given, must be the account's own id.
    """

    officer_id: str | None = Field(default=None, min_length=1, max_length=64)


async def knock_from_session(request: web.Request) -> web.Response:
    """``POST /api/v1/doorknocks`` with an officer session instead of an API key: the same
    rules as ``/api/v1/knocks`` (role, CSRF, area scope, set-up not archived)."""
    account = await require(request, FIELD)
    body = await parse_body(request, IntakeKnockIn)
    if body.officer_id is not None and body.officer_id != account.account_id:
        raise HTTPProblem(
            403, "officer_id must be your own account id (it comes from your session)", "officer_id"
        )
    knock = KnockIn.model_validate(body.model_dump(exclude={"officer_id"}))
    return web.json_response(await record_knock(request, account, knock), status=202)


# -- handlers ---------------------------------------------------------------------------------


async def list_handler(request: web.Request) -> web.Response:
    account = await require(request, FIELD)
    setup = await load_setup(request, account, request.match_info["setup_id"])
    revisit = setup["revisit_registered"] or request.query.get("revisit") in ("1", "true")
    return web.json_response(await door_list(request, account, setup, revisit))


async def knock_handler(request: web.Request) -> web.Response:
    account = await require(request, FIELD)
    knock = await parse_body(request, KnockIn)
    return web.json_response(await record_knock(request, account, knock), status=202)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/setups/{setup_id}/doors", list_handler)
    app.router.add_post("/api/v1/knocks", knock_handler)
