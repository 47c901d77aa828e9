"""The ops page (HTML, no JavaScript) and its JSON twin, dead-letter pages and replay.

``/ops``: consumer lag per group and partition (messages and seconds), throughput per topic
and group, dead-letter counts per input topic, worker health; it refreshes itself every
``REFRESH_SECONDS``. ``/ops/dead-letters/<topic>``: the newest dead letters of one input topic;
``/ops/dead-letters/<topic>/<partition>/<offset>``: one of them (reason, headers, origin,
payload or shape) with the replay form. ``/api/v1/ops...``: the same as JSON, for scripts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from aiohttp import web
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field

from api.context import RESOURCES, SETTINGS
from api.http import HTTPProblem, parse_body
from api.status import _CSS
from lpt.kafka import dead_letter_topic_name, topic_name
from lpt.logs import get_logger
from schemas.topics import ALL_TOPICS, TopicSpec

from .auth import Operator, require_operator
from .deadletters import (
    DeadLetter,
    ReplayRefused,
    list_dead_letters,
    read_dead_letter,
    replay,
    spec_for,
)
from .lag import LagSnapshot
from .state import ops_state
from .workers import list_workers

log = get_logger(__name__)

REFRESH_SECONDS = 10
CSRF_FIELD = "csrf_token"

_OPS_CSS = """
.bad{color:#d4351c;font-weight:600}.muted{color:#505a5f}
pre{background:#f3f2f1;padding:.6rem;overflow-x:auto;font-size:.85rem;white-space:pre-wrap}
button{font:inherit;padding:.4rem .9rem;background:#00703c;color:#fff;border:0;cursor:pointer}
textarea{width:100%;max-width:40rem;font:inherit}
.scroll td code{white-space:nowrap;overflow-wrap:normal}h3{font-size:1rem;margin:1rem 0 .3rem}
@media (max-width:30rem){.opt{display:none}}
"""


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    note: str | None = Field(default=None, max_length=500)


# -- data -----------------------------------------------------------------------------------


async def _snapshot(request: web.Request) -> LagSnapshot:
    res = request.app[RESOURCES]
    try:
        return await ops_state(request).sampler.snapshot(res.admin, res.offsets)
    except (KafkaError, TimeoutError, OSError) as exc:
        log.warning("ops.kafka_unavailable", error=type(exc).__name__)
        raise HTTPProblem(503, "Kafka is not reachable; lag unavailable") from None


async def _replay_counts(request: web.Request) -> dict[str, int]:
    rows = await request.app[RESOURCES].pool.fetch(
        "SELECT original_topic, count(*) AS n FROM ops_replays GROUP BY original_topic"
    )
    return {r["original_topic"]: r["n"] for r in rows}


async def overview(request: web.Request) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    snap = await _snapshot(request)
    workers = await list_workers(request.app[RESOURCES].pool)
    replayed = await _replay_counts(request)
    topics = []
    for spec in ALL_TOPICS:
        main = topic_name(spec, settings)
        dlq = dead_letter_topic_name(spec, settings) if spec.dead_letter else None
        topics.append(
            {
                "name": main,
                "catalogue_name": spec.name,
                "messages": snap.topic_messages(main),
                "end_offset": snap.topic_end(main),
                "produce_rate": _rate(snap.produce_rate.get(main)),
                "dead_letter_topic": dlq,
                "dead_letters": snap.topic_messages(dlq) if dlq else None,
                "replayed": replayed.get(main, 0) if dlq else None,
            }
        )
    groups = [
        {
            "group": g.group,
            "state": g.state,
            "members": g.members,
            "lag": g.lag,
            "lag_seconds": _secs(g.lag_seconds),
            "lag_by_topic": g.lag_by_topic(),
            "consume_rate": {
                t: _rate(snap.consume_rate.get((g.group, t))) for t in g.lag_by_topic()
            },
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "committed": p.committed,
                    "end": p.end,
                    "lag": p.lag,
                    "lag_seconds": _secs(p.lag_seconds),
                }
                for p in g.partitions
            ],
        }
        for g in snap.groups
    ]
    return {
        "generated_at": datetime.fromtimestamp(snap.taken_at, UTC).isoformat(),
        "topic_prefix": settings.topic_prefix,
        "rate_window_s": snap.rate_window_s,
        "total_lag": sum(g.lag for g in snap.groups),
        "consumer_groups": groups,
        "topics": topics,
        "workers": [w.as_json() for w in workers],
    }


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _secs(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _spec(request: web.Request) -> TopicSpec:
    spec = spec_for(request.match_info["topic"])
    if spec is None:
        raise HTTPProblem(404, "no dead-letter topic of that name", "topic")
    return spec


def _position(request: web.Request) -> tuple[int, int]:
    try:
        return int(request.match_info["partition"]), int(request.match_info["offset"])
    except ValueError:
        raise HTTPProblem(404, "partition and offset must be integers") from None


async def _letter(request: web.Request) -> DeadLetter:
    spec = _spec(request)
    partition, offset = _position(request)
    res = request.app[RESOURCES]
    letter = await read_dead_letter(
        request.app[SETTINGS], res.admin, res.pool, spec, partition, offset
    )
    if letter is None:
        raise HTTPProblem(404, "no dead letter at that partition and offset")
    return letter


async def _do_replay(request: web.Request, operator: Operator, note: str | None) -> DeadLetter:
    letter = await _letter(request)
    res = request.app[RESOURCES]
    try:
        done = await replay(
            request.app[SETTINGS], res.pool, res.producer, letter, operator.actor, note
        )
    except ReplayRefused as refused:
        raise HTTPProblem(refused.status, refused.message) from None
    return DeadLetter(**{**letter.__dict__, "replay": done})


# -- JSON -----------------------------------------------------------------------------------


async def overview_json(request: web.Request) -> web.Response:
    await require_operator(request)
    return web.json_response(await overview(request))


async def dead_letters_json(request: web.Request) -> web.Response:
    await require_operator(request)
    spec = _spec(request)
    res = request.app[RESOURCES]
    total, letters = await list_dead_letters(request.app[SETTINGS], res.admin, res.pool, spec)
    return web.json_response(
        {"topic": spec.name, "total": total, "dead_letters": [d.as_json() for d in letters]}
    )


async def dead_letter_json(request: web.Request) -> web.Response:
    await require_operator(request)
    return web.json_response((await _letter(request)).as_json(with_payload=True))


async def replay_json(request: web.Request) -> web.Response:
    operator = await require_operator(request)
    note = None
    if request.can_read_body:
        note = (await parse_body(request, ReplayIn)).note
    letter = await _do_replay(request, operator, note)
    return web.json_response(letter.as_json(), status=201)


# -- HTML -----------------------------------------------------------------------------------


def _page(title: str, body: str, refresh: bool = False) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{meta}
<title>{escape(title)} · Local Priority Targeting</title>
<style>{_CSS}{_OPS_CSS}</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""


def _n(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _r(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}/s"


def _s(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:,.1f} s"
    if value < 7200:
        return f"{value / 60:,.1f} min"
    return f"{value / 3600:,.1f} h"


def _short(topic: str, prefix: str) -> str:
    return f'<code title="{escape(topic)}">{escape(topic.removeprefix(prefix))}</code>'


def render_overview(data: dict[str, Any], operator: Operator) -> str:
    prefix = data["topic_prefix"]
    group_rows = []
    for g in data["consumer_groups"]:
        cls = "bad" if g["lag"] else "ok"
        group_rows.append(
            f"<tr><td>{_short(g['group'], prefix)}</td><td class='opt'>{escape(g['state'])}</td>"
            f'<td class="n opt">{g["members"]}</td>'
            f'<td class="n"><span class="{cls}" data-group-lag="{escape(g["group"])}">'
            f"{_n(g['lag'])}</span></td>"
            f'<td class="n">{_s(g["lag_seconds"])}</td></tr>'
        )
    part_rows = []
    for g in data["consumer_groups"]:
        for p in g["partitions"]:
            cls = ' class="bad"' if p["lag"] else ""
            part_rows.append(
                f"<tr><td>{_short(g['group'], prefix)}</td>"
                f"<td>{_short(p['topic'], prefix)}</td><td class='n'>{p['partition']}</td>"
                f"<td class='n opt'>{_n(p['committed'])}</td>"
                f"<td class='n opt'>{_n(p['end'])}</td>"
                f"<td class='n'><span{cls}>{_n(p['lag'])}</span></td>"
                f"<td class='n'>{_s(p['lag_seconds'])}</td></tr>"
            )
    consume_rows = [
        f"<tr><td>{_short(g['group'], prefix)}</td><td>{_short(t, prefix)}</td>"
        f"<td class='n'>{_r(rate)}</td></tr>"
        for g in data["consumer_groups"]
        for t, rate in g["consume_rate"].items()
    ]
    topic_rows = []
    for t in data["topics"]:
        dlq = "—"
        if t["dead_letter_topic"]:
            cls = "bad" if t["dead_letters"] else "ok"
            dlq = (
                f'<a class="{cls}" href="/ops/dead-letters/{escape(t["catalogue_name"])}">'
                f"{_n(t['dead_letters'])}</a>"
            )
        replayed = "—" if t["replayed"] is None else _n(t["replayed"])
        topic_rows.append(
            f"<tr><td>{_short(t['name'], prefix)}</td><td class='n opt'>{_n(t['messages'])}</td>"
            f"<td class='n'>{_r(t['produce_rate'])}</td><td class='n'>{dlq}</td>"
            f"<td class='n opt'>{replayed}</td></tr>"
        )
    worker_rows = []
    for w in data["workers"]:
        cls = {"up": "ok", "stopped": "muted"}.get(w["health"], "bad")
        worker_rows.append(
            f"<tr><td><code>{escape(w['name'])}</code></td><td class='opt'>{escape(w['kind'])}</td>"
            f'<td><span class="{cls}">{escape(w["health"])}</span></td>'
            f"<td class='n'>{_s(w['heartbeat_age_s'])}</td>"
            f"<td class='opt'>{escape(w['started_at'][:19].replace('T', ' '))}</td></tr>"
        )
    window = data["rate_window_s"]
    rates_note = (
        f"over the last {window:.0f} s" if window else "measuring: rates appear on the next refresh"
    )
    groups_html = (
        _table(
            ["Group", "State|o", "Members|no", "Lag (messages)|n", "Oldest unconsumed|n"],
            group_rows,
        )
        if group_rows
        else "<p>No consumer group has committed offsets on these topics yet.</p>"
    )
    body = f"""
<h1>Operations</h1>
<p class="meta">topic prefix <code>{escape(prefix)}</code> · total lag
<strong id="total-lag">{_n(data["total_lag"])}</strong> messages ·
updated {escape(data["generated_at"][:19].replace("T", " "))} UTC
(refreshes every {REFRESH_SECONDS} s) · signed in as <code>{escape(operator.actor)}</code></p>
<h2>Consumer lag</h2>
{groups_html}
<h2>Throughput</h2>
<p class="meta">From offset deltas, {rates_note}.</p>
{_table(["Topic", "Messages|no", "Produced|n", "Dead letters|n", "Replayed|no"], topic_rows)}
{
        "<h3>Consumed by group</h3>" + _table(["Group", "Topic", "Consumed|n"], consume_rows)
        if consume_rows
        else ""
    }
<h2>Workers</h2>
{
        _table(["Worker", "Kind|o", "Health", "Heartbeat|n", "Started (UTC)|o"], worker_rows)
        if worker_rows
        else "<p>No worker has registered yet (workers register in ops_workers).</p>"
    }
<h2>Lag per partition</h2>
{
        _table(
            ["Group", "Topic", "Part|n", "Committed|no", "End|no", "Lag|n", "Seconds|n"],
            part_rows,
        )
        if part_rows
        else "<p>—</p>"
    }
<h2>More</h2>
<p><a href="/api/v1/ops">This page as JSON</a> · <a href="/metrics">Metrics</a> ·
<a href="/readyz">Readiness</a> · <a href="/healthz">Liveness</a> · <a href="/">Status</a></p>
"""
    return _page("Operations", body, refresh=True)


def _table(headers: list[str], rows: list[str]) -> str:
    """Headers: ``"Title"``, ``"Title|n"`` (numeric), ``|o``/``|no`` (hidden on phones)."""

    def th(h: str) -> str:
        title, _, flags = h.partition("|")
        classes = " ".join(c for c, f in (("n", "n"), ("opt", "o")) if f in flags)
        return (
            f'<th class="{classes}">{escape(title)}</th>'
            if classes
            else f"<th>{escape(title)}</th>"
        )

    head = "".join(th(h) for h in headers)
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def render_list(spec: TopicSpec, total: int, letters: list[DeadLetter]) -> str:
    rows = []
    for d in letters:
        href = f"/ops/dead-letters/{escape(spec.name)}/{d.partition}/{d.offset}"
        state = "replayed" if d.replay else "held"
        rows.append(
            f'<tr><td class="n"><a href="{href}">{d.partition}:{d.offset}</a></td>'
            f"<td>{escape(d.timestamp.strftime('%Y-%m-%d %H:%M:%S'))}</td>"
            f"<td>{escape(d.reason[:160])}</td><td><code>{escape(d.field or '—')}</code></td>"
            f"<td>{state}</td></tr>"
        )
    table = (
        _table(["Dead letter|n", "Time (UTC)", "Reason", "Field", "State"], rows)
        if rows
        else "<p>No dead letters.</p>"
    )
    body = f"""
<p><a href="/ops">← Operations</a></p>
<h1>Dead letters: <code>{escape(spec.name)}</code></h1>
<p class="meta">{total:,} held; the newest {len(letters)} shown.</p>
{table}
"""
    return _page(f"Dead letters {spec.name}", body)


def render_letter(d: DeadLetter, operator: Operator) -> str:
    shown, payload = d.payload()
    header_rows = [
        f"<tr><td><code>{escape(k)}</code></td><td><code>{escape(v[:1000])}</code></td></tr>"
        for k, v in sorted(d.headers.items())
    ]
    if d.replay:
        r = d.replay
        action = (
            f'<p class="ok">Replayed to <code>{escape(r.to_topic)}</code> partition '
            f"{r.to_partition} offset {r.to_offset} by <code>{escape(r.replayed_by)}</code> at "
            f"{escape(r.replayed_at.strftime('%Y-%m-%d %H:%M:%S'))} UTC.</p>"
        )
    else:
        csrf = escape(operator.csrf_token or "")
        action = f"""
<form method="post" action="/ops/dead-letters/{escape(d.spec.name)}/{d.partition}/{d.offset}/replay">
<input type="hidden" name="{CSRF_FIELD}" value="{csrf}">
<p><label for="note">What was fixed (optional, kept with the replay record)</label><br>
<textarea id="note" name="note" rows="2" maxlength="500"></textarea></p>
<p><button type="submit">Replay to its original topic</button></p>
</form>"""
    payload_note = (
        ""
        if shown
        else "<p class='meta'>This topic's messages may hold personal data: only the "
        "message's shape and envelope fields are shown.</p>"
    )
    body = f"""
<p><a href="/ops/dead-letters/{escape(d.spec.name)}">← Dead letters of {escape(d.spec.name)}</a></p>
<h1>Dead letter {d.partition}:{d.offset}</h1>
{
        _table(
            ["", ""],
            [
                f"<tr><th>Reason</th><td>{escape(d.reason)}</td></tr>",
                f"<tr><th>Field</th><td><code>{escape(d.field or '—')}</code></td></tr>",
                f"<tr><th>Original</th><td><code>{escape(d.original_topic or '?')}</code> partition "
                f"{_n(d.original_partition)} offset {_n(d.original_offset)}</td></tr>",
                f"<tr><th>Consumer</th><td><code>{escape(d.consumer or '—')}</code></td></tr>",
                f"<tr><th>Dead-lettered</th><td>{escape(d.timestamp.strftime('%Y-%m-%d %H:%M:%S'))} UTC"
                "</td></tr>",
            ],
        )
    }
<h2>Replay</h2>
{action}
<h2>Headers</h2>
{_table(["Header", "Value"], header_rows)}
<h2>Payload</h2>
{payload_note}
<pre>{escape(payload)}</pre>
"""
    return _page(f"Dead letter {d.partition}:{d.offset}", body)


def _unauthorised_page(problem: HTTPProblem) -> web.Response:
    body = (
        f"<h1>Operations</h1><p>{escape(problem.message)}</p>"
        "<p>The ops page is for accounts with the <strong>admin</strong> role: log in to the "
        "officer app first. Scripts send <code>Authorization: Bearer &lt;LPT_OPS_TOKEN&gt;"
        "</code>.</p>"
    )
    return web.Response(
        status=problem.status,
        text=_page("Operations", body),
        content_type="text/html",
        headers=problem.headers,
    )


async def _html_operator(request: web.Request) -> Operator | web.Response:
    try:
        return await require_operator(request)
    except HTTPProblem as problem:
        if problem.status in (401, 403):
            return _unauthorised_page(problem)
        raise


async def overview_page(request: web.Request) -> web.Response:
    operator = await _html_operator(request)
    if isinstance(operator, web.Response):
        return operator
    data = await overview(request)
    return web.Response(text=render_overview(data, operator), content_type="text/html")


async def dead_letters_page(request: web.Request) -> web.Response:
    operator = await _html_operator(request)
    if isinstance(operator, web.Response):
        return operator
    spec = _spec(request)
    res = request.app[RESOURCES]
    total, letters = await list_dead_letters(request.app[SETTINGS], res.admin, res.pool, spec)
    return web.Response(text=render_list(spec, total, letters), content_type="text/html")


async def dead_letter_page(request: web.Request) -> web.Response:
    operator = await _html_operator(request)
    if isinstance(operator, web.Response):
        return operator
    letter = await _letter(request)
    return web.Response(text=render_letter(letter, operator), content_type="text/html")


async def replay_form(request: web.Request) -> web.StreamResponse:
    operator = await _html_operator(request)
    if isinstance(operator, web.Response):
        return operator
    form = await request.post()
    raw = form.get("note")
    note = raw.strip()[:500] or None if isinstance(raw, str) else None
    letter = await _do_replay(request, operator, note)
    raise web.HTTPSeeOther(
        f"/ops/dead-letters/{letter.spec.name}/{letter.partition}/{letter.offset}"
    )


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/ops", overview_page)
    app.router.add_get("/ops/dead-letters/{topic}", dead_letters_page)
    app.router.add_get("/ops/dead-letters/{topic}/{partition}/{offset}", dead_letter_page)
    app.router.add_post("/ops/dead-letters/{topic}/{partition}/{offset}/replay", replay_form)
    app.router.add_get("/api/v1/ops", overview_json)
    app.router.add_get("/api/v1/ops/dead-letters/{topic}", dead_letters_json)
    app.router.add_get("/api/v1/ops/dead-letters/{topic}/{partition}/{offset}", dead_letter_json)
    app.router.add_post("/api/v1/ops/dead-letters/{topic}/{partition}/{offset}/replay", replay_json)
