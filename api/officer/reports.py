"""Progress of a set-up and supervisors' activity reports, with an audited CSV export.

A set-up's progress: doors knocked (distinct addresses), knocks by outcome, registrations and
survey responses in its area and dates, each against its target, by ward and by day. Archived
set-ups keep their reports: nothing here depends on a set-up being live.

Activity reports: door knocks by team and ward per day or week, with registrations and survey
responses per ward. The CSV names officers (what they did), so every export is written to the
audit log with the reason given.
"""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Any, Literal

from aiohttp import web

from api.http import HTTPProblem
from api.officer import audit
from api.officer.access import READERS, REPORTERS, require
from api.officer.accounts import Account
from api.officer.setups import _targets, load_setup, setups_for
from api.officer.state import officer_state
from schemas.envelope import utcnow

MAX_DAYS = 366


def _pct(done: int, target: int | None) -> float | None:
    return None if not target else round(100.0 * done / target, 1)


async def setup_report(request: web.Request, account: Account, setup_id: str) -> dict[str, Any]:
    setup = await load_setup(request, account, setup_id)
    pool = officer_state(request).pool
    targets = await _targets(request, setup_id) or {}
    knocks = await pool.fetchrow(
        """SELECT count(*) AS knocks,
                  count(DISTINCT postcode || '|' || COALESCE(door_key, event_id::text)) AS doors,
                  count(*) FILTER (WHERE outcome = 'spoke') AS spoke,
                  count(*) FILTER (WHERE outcome = 'registered') AS registered,
                  count(*) FILTER (WHERE outcome = 'declined') AS declined,
                  count(*) FILTER (WHERE outcome = 'no_answer') AS no_answer,
                  count(*) FILTER (WHERE outcome = 'leaflet_left') AS leaflet_left
           FROM officer_doorknocks WHERE setup_id = $1""",
        setup_id,
    )
    assert knocks is not None
    children = list(setup["area_cells"])
    area_sql = """(cell = ANY($1::text[]) OR ward_code = ANY($2::text[])
                   OR ($3::text IS NOT NULL AND $3::text = ANY(community_groups)))
                  AND occurred_at >= $4::date AND occurred_at < ($5::date + 1)"""
    args = [
        children,
        list(setup["ward_codes"]),
        setup["community_group"],
        setup["starts_on"],
        setup["ends_on"],
    ]
    activity = await pool.fetchrow(
        f"""SELECT count(*) FILTER (WHERE kind = 'registration') AS registrations,
                   count(*) FILTER (WHERE kind = 'survey_response') AS survey_responses
            FROM officer_area_activity WHERE {area_sql}""",
        *args,
    )
    assert activity is not None
    by_day: dict[str, dict[str, int]] = {}
    for r in await pool.fetch(
        """SELECT (occurred_at AT TIME ZONE 'Europe/London')::date AS day, count(*) AS knocks,
                  count(*) FILTER (WHERE outcome = 'registered') AS registered_at_door
           FROM officer_doorknocks WHERE setup_id = $1 GROUP BY 1""",
        setup_id,
    ):
        by_day.setdefault(r["day"].isoformat(), {}).update(
            knocks=r["knocks"], registered_at_door=r["registered_at_door"]
        )
    for r in await pool.fetch(
        f"""SELECT (occurred_at AT TIME ZONE 'Europe/London')::date AS day, kind, count(*) AS n
            FROM officer_area_activity WHERE {area_sql} GROUP BY 1, 2""",
        *args,
    ):
        key = "registrations" if r["kind"] == "registration" else "survey_responses"
        by_day.setdefault(r["day"].isoformat(), {})[key] = r["n"]
    by_ward: dict[str, dict[str, int]] = {}
    for r in await pool.fetch(
        """SELECT COALESCE(ward_code, 'unknown') AS ward, count(*) AS knocks,
                  count(DISTINCT postcode || '|' || COALESCE(door_key, event_id::text)) AS doors
           FROM officer_doorknocks WHERE setup_id = $1 GROUP BY 1""",
        setup_id,
    ):
        by_ward.setdefault(r["ward"], {}).update(knocks=r["knocks"], doors=r["doors"])
    for r in await pool.fetch(
        f"""SELECT COALESCE(ward_code, 'unknown') AS ward, kind, count(*) AS n
            FROM officer_area_activity WHERE {area_sql} GROUP BY 1, 2""",
        *args,
    ):
        key = "registrations" if r["kind"] == "registration" else "survey_responses"
        by_ward.setdefault(r["ward"], {})[key] = r["n"]
    doors = int(knocks["doors"])
    regs = int(activity["registrations"])
    surveys = int(activity["survey_responses"])
    return {
        "setup_id": setup_id,
        "name": setup["name"],
        "archived": setup["archived_at"] is not None,
        "starts_on": setup["starts_on"].isoformat(),
        "ends_on": setup["ends_on"].isoformat(),
        "progress": {
            "doors_knocked": {
                "done": doors,
                "target": targets.get("doors"),
                "percent": _pct(doors, targets.get("doors")),
            },
            "registrations": {
                "done": regs,
                "target": targets.get("registrations"),
                "percent": _pct(regs, targets.get("registrations")),
            },
            "survey_responses": {
                "done": surveys,
                "target": targets.get("survey_responses"),
                "percent": _pct(surveys, targets.get("survey_responses")),
            },
        },
        "knocks": {k: int(v) for k, v in dict(knocks).items()},
        "by_ward": [{"ward_code": w, **v} for w, v in sorted(by_ward.items())],
        "by_day": [{"day": d, **v} for d, v in sorted(by_day.items())],
    }


Bucket = Literal["day", "week"]


def _period(request: web.Request) -> tuple[date, date, Bucket]:
    today = utcnow().date()
    try:
        start = date.fromisoformat(
            request.query.get("from", (today - timedelta(days=27)).isoformat())
        )
    except ValueError:
        raise HTTPProblem(422, "from must be a date (YYYY-MM-DD)", "from") from None
    try:
        end = date.fromisoformat(request.query.get("to", today.isoformat()))
    except ValueError:
        raise HTTPProblem(422, "to must be a date (YYYY-MM-DD)", "to") from None
    if end < start:
        raise HTTPProblem(422, "to is before from", "to")
    if (end - start).days > MAX_DAYS:
        raise HTTPProblem(422, f"a report covers at most {MAX_DAYS} days", "from")
    bucket = request.query.get("by", "week")
    if bucket not in ("day", "week"):
        raise HTTPProblem(422, "by must be day or week", "by")
    return start, end, "day" if bucket == "day" else "week"


async def activity_rows(
    request: web.Request, account: Account, start: date, end: date, bucket: Bucket
) -> list[dict[str, Any]]:
    """Per period, team and ward: knocks and outcomes, plus registrations and surveys."""
    state = officer_state(request)
    index = await state.areas.get()
    wards = None if account.scope.force_wide else sorted(index.wards_in_scope(account.scope))
    las = None if account.scope.force_wide else sorted(account.scope.local_authority_codes)
    trunc = "day" if bucket == "day" else "week"
    scope_sql = (
        "TRUE"
        if wards is None
        else "(ward_code = ANY($3::text[]) OR local_authority_code = ANY($4::text[]))"
    )
    params: list[Any] = [start, end] + ([] if wards is None else [wards, las])
    knocks = await state.pool.fetch(
        f"""SELECT date_trunc('{trunc}', (k.occurred_at AT TIME ZONE 'Europe/London'))::date AS period,
                   COALESCE(a.team, '(no team)') AS team, COALESCE(k.ward_code, 'unknown') AS ward,
                   count(*) AS knocks,
                   count(*) FILTER (WHERE outcome = 'spoke') AS spoke,
                   count(*) FILTER (WHERE outcome = 'registered') AS registered_at_door,
                   count(*) FILTER (WHERE outcome = 'declined') AS declined,
                   count(*) FILTER (WHERE outcome = 'no_answer') AS no_answer,
                   count(DISTINCT k.officer_id) AS officers
            FROM officer_doorknocks k LEFT JOIN officer_accounts a ON a.account_id = k.officer_id
            WHERE k.occurred_at >= $1::date AND k.occurred_at < ($2::date + 1) AND {scope_sql}
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        *params,
    )
    activity = await state.pool.fetch(
        f"""SELECT date_trunc('{trunc}', (occurred_at AT TIME ZONE 'Europe/London'))::date AS period,
                   COALESCE(ward_code, 'unknown') AS ward,
                   count(*) FILTER (WHERE kind = 'registration') AS registrations,
                   count(*) FILTER (WHERE kind = 'survey_response') AS survey_responses
            FROM officer_area_activity
            WHERE occurred_at >= $1::date AND occurred_at < ($2::date + 1) AND {scope_sql}
            GROUP BY 1, 2 ORDER BY 1, 2""",
        *params,
    )
    rows = [
        {
            "period": r["period"].isoformat(),
            "team": r["team"],
            "ward_code": r["ward"],
            **{
                k: int(r[k])
                for k in (
                    "knocks",
                    "spoke",
                    "registered_at_door",
                    "declined",
                    "no_answer",
                    "officers",
                )
            },
            "registrations": None,
            "survey_responses": None,
        }
        for r in knocks
    ]
    rows += [
        {
            "period": r["period"].isoformat(),
            "team": None,
            "ward_code": r["ward"],
            "knocks": None,
            "spoke": None,
            "registered_at_door": None,
            "declined": None,
            "no_answer": None,
            "officers": None,
            "registrations": int(r["registrations"]),
            "survey_responses": int(r["survey_responses"]),
        }
        for r in activity
    ]
    rows.sort(key=lambda r: (r["period"], r["ward_code"], r["team"] or ""))
    return rows


CSV_COLUMNS = (
    "period",
    "team",
    "ward_code",
    "knocks",
    "spoke",
    "registered_at_door",
    "declined",
    "no_answer",
    "officers",
    "registrations",
    "survey_responses",
)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n"
    )
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in CSV_COLUMNS})
    return buf.getvalue()


MAX_SETUP_OUTCOMES = 50


async def setup_outcomes(request: web.Request, account: Account) -> list[dict[str, Any]]:
    """Each set-up in scope (live first, then archived) with its results against targets."""
    out = []
    for s in (await setups_for(request, account))[:MAX_SETUP_OUTCOMES]:
        report = await setup_report(request, account, s["setup_id"])
        out.append(
            {
                "setup_id": s["setup_id"],
                "name": s["name"],
                "archived": s["archived"],
                "starts_on": s["starts_on"],
                "ends_on": s["ends_on"],
                **{k: v for k, v in report["progress"].items()},
            }
        )
    return out


# -- handlers ---------------------------------------------------------------------------------


async def setup_report_handler(request: web.Request) -> web.Response:
    account = await require(request, READERS)
    return web.json_response(await setup_report(request, account, request.match_info["setup_id"]))


async def activity_handler(request: web.Request) -> web.Response:
    account = await require(request, REPORTERS)
    start, end, bucket = _period(request)
    rows = await activity_rows(request, account, start, end, bucket)
    if request.query.get("format") == "csv":
        reason = audit.check_reason(request.query.get("reason"))
        teams = sorted({r["team"] for r in rows if r["team"]})
        await audit.record(
            officer_state(request).pool,
            account,
            "export",
            "activity_report_csv",
            teams,
            reason,
            detail=f"{start.isoformat()}..{end.isoformat()} by {bucket}, {len(rows)} rows",
        )
        return web.Response(
            text=to_csv(rows),
            content_type="text/csv",
            headers={
                "Content-Disposition": f'attachment; filename="activity-{start}-{end}.csv"',
                "Cache-Control": "no-store",
            },
        )
    return web.json_response(
        {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "by": bucket,
            "rows": rows,
            "setups": await setup_outcomes(request, account),
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/setups/{setup_id}/report", setup_report_handler)
    app.router.add_get("/api/v1/reports/activity", activity_handler)
