"""Status page: ``/`` (server-rendered HTML) and ``/api/v1/status`` (the same data as JSON).

What ``make run`` opens until the officer pages exist: each catalogue topic with its message
count, dead-letter counts, and the consumer groups with their lag. Plain HTML that reads on a
phone and needs no JavaScript (a meta refresh keeps it current). It shows counts only, never
personal data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from aiohttp import web
from aiokafka.errors import KafkaError

from api.context import RESOURCES, SETTINGS
from api.http import HTTPProblem
from api.topic_stats import StatusSnapshot, collect_status
from lpt.logs import get_logger

log = get_logger(__name__)

REFRESH_SECONDS = 15

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;
 padding:1rem;color:#0b0c0c;background:#fff;line-height:1.4;max-width:60rem}
h1{font-size:1.4rem;margin:.2rem 0 .6rem}h2{font-size:1.1rem;margin:1.4rem 0 .4rem}
p.meta{color:#505a5f;font-size:.9rem;margin:.2rem 0}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.95rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #b1b4b6;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.doc{display:block;color:#505a5f;font-size:.85rem}.warn{color:#d4351c;font-weight:600}
.ok{color:#00703c}code{font-size:.9em;overflow-wrap:anywhere}
@media (max-width:30rem){body{padding:.6rem}th,td{padding:.3rem .25rem}
 table{font-size:.85rem}.doc{display:none}}
"""


async def snapshot(request: web.Request) -> StatusSnapshot:
    settings = request.app[SETTINGS]
    res = request.app[RESOURCES]
    try:
        return await collect_status(settings, res.admin, res.offsets)
    except (KafkaError, TimeoutError, OSError) as exc:
        log.warning("status.kafka_unavailable", error=type(exc).__name__)
        raise HTTPProblem(503, "Kafka is not reachable; status unavailable") from None


async def status_json(request: web.Request) -> web.Response:
    snap = await snapshot(request)
    settings = request.app[SETTINGS]
    body = {
        "force": settings.force_name,
        "topic_prefix": settings.topic_prefix,
        "generated_at": datetime.now(UTC).isoformat(),
        **snap.as_json(),
    }
    return web.json_response(body)


def _n(value: int) -> str:
    return f"{value:,}"


def render_html(snap: StatusSnapshot, force: str, prefix: str, generated: datetime) -> str:
    rows = []
    for t in snap.topics:
        dlq = "—"
        if t.dead_letter_name:
            cls = "warn" if t.dead_letters else "ok"
            dlq = f'<span class="{cls}">{_n(t.dead_letters)}</span>'
        messages = _n(t.messages) if t.exists else '<span class="warn">missing</span>'
        rows.append(
            f'<tr><td><code title="{escape(t.name)}">{escape(t.catalogue_name)}</code>'
            f'<span class="doc">{escape(t.doc)}</span></td>'
            f'<td class="n">{t.partitions}</td><td class="n">{messages}</td>'
            f'<td class="n">{dlq}</td></tr>'
        )
    if snap.groups:
        group_rows = []
        for g in snap.groups:
            per_topic = "<br>".join(
                f'<code title="{escape(topic)}">{escape(topic.removeprefix(prefix))}</code>: '
                f"{_n(lag)}"
                for topic, lag in g.lag_by_topic.items()
            )
            group_rows.append(
                f"<tr><td><code>{escape(g.group)}</code></td><td>{escape(g.state)}</td>"
                f'<td class="n">{g.members}</td><td class="n">{_n(g.total_lag)}</td>'
                f"<td>{per_topic}</td></tr>"
            )
        groups = (
            '<div class="scroll"><table><thead><tr><th>Group</th><th>State</th>'
            '<th class="n">Members</th><th class="n">Lag</th><th>Lag by topic</th></tr>'
            f"</thead><tbody>{''.join(group_rows)}</tbody></table></div>"
        )
    else:
        groups = "<p>No consumer group has committed offsets on these topics yet.</p>"
    total = sum(t.messages for t in snap.topics)
    dead = sum(t.dead_letters for t in snap.topics)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>Status · Local Priority Targeting</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>Local Priority Targeting: status</h1>
<p class="meta">{escape(force)} · topic prefix <code>{escape(prefix)}</code> ·
{_n(total)} messages · {_n(dead)} dead letters ·
updated {generated:%Y-%m-%d %H:%M:%S} UTC (refreshes every {REFRESH_SECONDS} s)</p>
<h2>Topics</h2>
<div class="scroll"><table>
<thead><tr><th>Topic</th><th class="n">Parts</th><th class="n">Messages</th>
<th class="n">Dead letters</th></tr></thead>
<tbody>{"".join(rows)}</tbody>
</table></div>
<h2>Consumer groups</h2>
{groups}
<h2>More</h2>
<p><a href="/api/v1/status">Status as JSON</a> · <a href="/readyz">Readiness</a> ·
<a href="/healthz">Liveness</a></p>
</main>
</body>
</html>
"""


async def status_page(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        snap = await snapshot(request)
    except HTTPProblem as problem:
        html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
            f"<title>Status unavailable</title><style>{_CSS}</style></head><body><main>"
            f"<h1>Status unavailable</h1><p>{escape(problem.message)}</p></main></body></html>"
        )
        return web.Response(status=problem.status, text=html, content_type="text/html")
    html = render_html(snap, settings.force_name, settings.topic_prefix, datetime.now(UTC))
    return web.Response(text=html, content_type="text/html")


def setup(app: web.Application) -> None:
    app.router.add_get("/", status_page)
    app.router.add_get("/api/v1/status", status_json)
