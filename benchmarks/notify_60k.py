"""One update to 60,000 residents: resolved, budget-checked and handed to an SMTP server.

What is timed (``pipeline``): :meth:`Dispatcher.handle` on one ``notification.requested``
event, i.e. the request row, the audience query, the budget decisions, the outbox rows and
budget charges, a reply token per resident, 60,000 personal e-mails (List-Unsubscribe and reply
link) over a few SMTP connections, the status updates and 60,000 ``notification.sent`` events on
Kafka. The residents are inserted directly into the identity tables of a fresh database first
(not timed). The SMTP server is aiosmtpd in a process of its own on a loopback port; it counts
what it accepted, and the figure is only reported if it accepted every message.

Next to it, on the same server:

- ``plain loop``: what a simple script does, one ``smtplib`` connection sending one
  ``EmailMessage`` after the other (same headers and links). Bounded: it runs on a sample
  (``--plain-sample``, default 2,000) and the 60,000 figure is extrapolated from that rate;
- ``raw aiosmtplib``: the same personal e-mails, rendered before the clock starts, sent over
  the same number of connections with no database or Kafka work: the ceiling of the SMTP part
  on this machine (on a sample, ``--raw-sample``, default 10,000);
- ``raw aiokafka``: publishing the same 60,000 status events pre-encoded with ``send_batch``,
  the floor for the Kafka part of the pipeline.

Run (the test Kafka and PostgreSQL)::

    LPT_HOME=.lpt/test LPT_KAFKA_PORT=29092 LPT_PG_PORT=25432 \\
        .venv/bin/python benchmarks/notify_60k.py [--residents 60000] [--no-progress]

Figures are printed and written to ``benchmarks/results/notify_60k.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import h3  # noqa: E402
from tqdm import tqdm  # noqa: E402

from consumers.notifications.audience import criteria_for, resolve  # noqa: E402
from consumers.notifications.channels import SmtpChannel, SmtpConfig  # noqa: E402
from consumers.notifications.dispatch import Dispatcher, plan, status_event  # noqa: E402
from consumers.notifications.tokens import (  # noqa: E402
    new_token,
    reply_url,
    unsubscribe_key,
    unsubscribe_url,
)
from identity.crypto import load_master_key, new_key, new_key_id, wrap_key  # noqa: E402
from lpt.kafka import make_producer, publish_raw, topic_name  # noqa: E402
from lpt.logs import configure_logging  # noqa: E402
from lpt.scratch import create_scratch, drop_scratch  # noqa: E402
from lpt.settings import Settings, get_settings  # noqa: E402
from schemas.notifications import Audience, NotificationRequested  # noqa: E402
from schemas.registry import encode  # noqa: E402
from schemas.topics import NOTIFICATIONS_SENT  # noqa: E402

#: A weekday noon in London: outside quiet hours, so every resident is sent the update now.
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
AREA = h3.cell_to_parent(h3.latlng_to_cell(53.7440, -0.3330, 10), 6)  # Hull and around
WARD = "E05001677"
PUBLIC = "https://lpt.example.org"
MAIL_FROM = "Humberside Police <alerts@police.example.org>"
SUBJECT = "You said, we did: anti-social behaviour around the precinct"
BODY = (
    "Last quarter you told us that anti-social behaviour around the shopping precinct was your\n"
    "top concern. Since then officers have patrolled the precinct every evening, we have worked\n"
    "with the council on lighting, and reports have fallen by a third.\n\n"
    "Thank you for telling us. Your local policing team.\n"
)

SMTP_SERVER = r"""
import sys, threading
from aiosmtpd.controller import Controller
count = 0
lock = threading.Lock()
class Counter:
    async def handle_DATA(self, server, session, envelope):
        global count
        with lock:
            count += 1
        return "250 OK"
c = Controller(Counter(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
print(count, flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpServerProcess:
    """aiosmtpd in its own process (so it does not share the sender's core or event loop)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SMTP_SERVER, str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("SMTP server did not start")

    def stop(self) -> int:
        """Stop the server; returns how many messages it accepted."""
        out, _ = self.proc.communicate("", timeout=60)
        return int(out.strip().splitlines()[-1])


def resident_cells(n: int) -> list[str]:
    """``n`` street cells (resolution 10) spread over the area, several residents per cell."""
    cells = sorted(h3.cell_to_children(AREA, 10))
    step = max(1, len(cells) // max(1, n // 3))
    return [cells[(i * step) % len(cells)] for i in range(n)]


async def insert_residents(settings: Settings, n: int, progress: bool) -> list[tuple[str, str]]:
    """60,000 residents straight into the identity tables (keys wrapped as the vault does)."""
    master = load_master_key(settings.master_key_file)
    cells = resident_cells(n)
    keys: list[tuple[str, str, bytes]] = []
    people: list[tuple[Any, ...]] = []
    pairs: list[tuple[str, str]] = []
    for i in tqdm(range(n), desc="residents", disable=not progress, file=sys.stderr):
        rid = f"r-bench{i:07d}"
        key_id = new_key_id()
        keys.append((rid, key_id, wrap_key(master, new_key(), key_id)))
        email = f"resident{i}@example.org"
        # Confirmed addresses: e-mail goes only to those (as after the sign-up link).
        people.append((rid, email, "HU1 1AA", cells[i], False, WARD, ["email"], [], "v1", NOON))
        pairs.append((rid, email))
    conn = await asyncpg.connect(settings.dsn)
    try:
        await conn.copy_records_to_table(
            "identity_keys", records=keys, columns=["resident_id", "key_id", "wrapped_key"]
        )
        await conn.copy_records_to_table(
            "identity_people",
            records=people,
            columns=["resident_id", "email", "postcode", "cell", "unlocated", "ward_code",
                     "channels", "community_groups", "consent_version", "email_confirmed_at"],
        )  # fmt: skip
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return pairs


def the_request(nid: str) -> NotificationRequested:
    return NotificationRequested(
        occurred_at=NOON,
        source="officer-app",
        notification_id=nid,
        kind="you_said_we_did",
        audience=Audience(cells=[AREA]),
        subject=SUBJECT,
        body=BODY,
        sender="officer-0042",
    )


async def resolve_and_check(pool: asyncpg.Pool, req: NotificationRequested) -> dict[str, Any]:
    """The audience query and budget decisions alone (read-only), timed separately."""
    started = time.perf_counter()
    async with pool.acquire() as conn:
        criteria = await criteria_for(conn, req.audience)
        recipients = await resolve(conn, criteria, req.notification_id, NOON)
    resolved = time.perf_counter()
    decided = plan(req, recipients, NOON)
    done = time.perf_counter()
    return {
        "audience": len(recipients),
        "resolve_s": round(resolved - started, 3),
        "budget_check_s": round(done - resolved, 3),
        "to_send_now": sum(r.status == "pending" for r in decided.rows),
    }


async def run_pipeline(
    settings: Settings, pool: asyncpg.Pool, port: int, connections: int
) -> dict[str, Any]:
    producer = make_producer(settings)
    await producer.start()
    channel = SmtpChannel(SmtpConfig("127.0.0.1", port), connections=connections)

    async def publish_statuses(events: Any) -> None:
        await publish_raw(
            producer,
            topic_name(NOTIFICATIONS_SENT, settings),
            [(e.resident_id.encode(), encode(e)) for e in events],
        )

    dispatcher = Dispatcher(
        pool,
        {"email": channel},
        public_base=PUBLIC,
        mail_from=MAIL_FROM,
        unsubscribe_secret=unsubscribe_key(load_master_key(settings.master_key_file)),
        publish=publish_statuses,
        clock=lambda: NOON,
    )
    req = the_request("bench-" + uuid.uuid4().hex[:12])
    try:
        checked = await resolve_and_check(pool, req)
        started = time.perf_counter()
        summary = await dispatcher.handle(req)
        elapsed = time.perf_counter() - started
    finally:
        await channel.close()
        await producer.stop()
    return {
        **checked,
        "sent": summary.sent,
        "held": summary.held,
        "failed": summary.failed,
        "seconds": round(elapsed, 2),
        "per_s": round(summary.sent / elapsed, 1),
        "smtp_connections": connections,
    }


def plain_loop(port: int, people: list[tuple[str, str]], secret: bytes) -> dict[str, Any]:
    """One smtplib connection, one EmailMessage after another (the simple script)."""
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for i, (rid, email) in enumerate(people):
            msg = EmailMessage()
            msg["From"] = MAIL_FROM
            msg["To"] = email
            msg["Subject"] = SUBJECT
            msg["Message-ID"] = f"<plain-{i}@police.example.org>"
            unsub = unsubscribe_url(PUBLIC, secret, rid)
            msg["List-Unsubscribe"] = f"<{unsub}>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            msg.set_content(f"{BODY}\nReply: {reply_url(PUBLIC, new_token())}\nStop: {unsub}\n")
            smtp.send_message(msg)
    elapsed = time.perf_counter() - started
    return {"sample": len(people), "seconds": round(elapsed, 2),
            "per_s": round(len(people) / elapsed, 1)}  # fmt: skip


async def raw_aiosmtplib(
    port: int, people: list[tuple[str, str]], secret: bytes, connections: int
) -> dict[str, Any]:
    import aiosmtplib

    from consumers.notifications.compose import MessageTemplate

    template = MessageTemplate("raw", SUBJECT, BODY, MAIL_FROM)
    messages = [
        (email, template.render_email(email, rid, unsubscribe_url(PUBLIC, secret, rid),
                                      reply_url(PUBLIC, new_token())))
        for rid, email in people
    ]  # fmt: skip
    queue = iter(messages)

    async def connection() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await client.connect()
        for email, data in queue:
            await client.sendmail(template.envelope_sender, [email], data)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {"sample": len(messages), "seconds": round(elapsed, 2),
            "per_s": round(len(messages) / elapsed, 1)}  # fmt: skip


async def raw_aiokafka(settings: Settings, people: list[tuple[str, str]]) -> dict[str, Any]:
    events = [
        (rid.encode(), encode(status_event("raw", rid, "email", "sent", None, NOON)))
        for rid, _ in people
    ]
    producer = make_producer(settings)
    await producer.start()
    try:
        started = time.perf_counter()
        await publish_raw(producer, topic_name(NOTIFICATIONS_SENT, settings), events)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return {"events": len(events), "seconds": round(elapsed, 2),
            "per_s": round(len(events) / elapsed, 1)}  # fmt: skip


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    base = get_settings()
    tmp = tempfile.mkdtemp(prefix="lpt-notify-bench-")
    settings = await create_scratch(base, "notifybench", master_key_file=Path(tmp) / "master.key")
    server: SmtpServerProcess | None = None
    try:
        progress = not args.no_progress
        people = await insert_residents(settings, args.residents, progress)
        server = SmtpServerProcess()
        pool = await asyncpg.create_pool(settings.dsn, min_size=2, max_size=6)
        try:
            print(f"sending one update to {args.residents:,} residents ...", file=sys.stderr)
            pipeline = await run_pipeline(settings, pool, server.port, args.connections)
        finally:
            await pool.close()
        sample = people[: args.plain_sample]
        print(f"plain smtplib loop on a sample of {len(sample):,} ...", file=sys.stderr)
        secret = unsubscribe_key(load_master_key(settings.master_key_file))
        plain = plain_loop(server.port, sample, secret)
        raw_sample = people[: args.raw_sample]
        print(f"raw aiosmtplib on a sample of {len(raw_sample):,} ...", file=sys.stderr)
        raw_smtp = await raw_aiosmtplib(server.port, raw_sample, secret, args.connections)
        accepted = server.stop()
        server = None
        raw = await raw_aiokafka(settings, people)
    finally:
        if server is not None:
            server.stop()
        await drop_scratch(settings)
        for f in Path(tmp).glob("*"):
            f.unlink()
        os.rmdir(tmp)

    expected = pipeline["sent"] + plain["sample"] + raw_smtp["sample"]
    if accepted != expected:
        raise RuntimeError(f"SMTP server accepted {accepted} messages, expected {expected}")
    plain_60k = args.residents / plain["per_s"]
    return {
        "residents": args.residents,
        "cpu_count": os.cpu_count(),
        "pipeline": pipeline,
        "smtp_server_accepted": accepted,
        "target_seconds": 60,
        "within_target": pipeline["seconds"] < 60,
        "plain_loop": {
            **plain,
            "extrapolated_seconds_for_all": round(plain_60k, 1),
            "note": f"measured on {plain['sample']:,} messages, extrapolated to {args.residents:,}",
        },
        "speedup_vs_plain_loop": round(plain_60k / pipeline["seconds"], 2),
        "raw_aiosmtplib": raw_smtp,
        "ratio_to_raw_aiosmtplib": round(pipeline["per_s"] / raw_smtp["per_s"], 3),
        "raw_aiokafka_status_events": raw,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": secrets.token_hex(4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--residents", type=int, default=60_000)
    parser.add_argument(
        "--connections",
        type=int,
        default=get_settings().smtp_connections,
        help="SMTP connections (default LPT_SMTP_CONNECTIONS)",
    )
    parser.add_argument("--plain-sample", type=int, default=2_000)
    parser.add_argument("--raw-sample", type=int, default=10_000)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    configure_logging()
    figures = asyncio.run(benchmark(args))
    p, plain = figures["pipeline"], figures["plain_loop"]
    print(f"audience resolved         {p['audience']:,} residents in {p['resolve_s']} s")
    print(f"budget checked            in {p['budget_check_s']} s")
    print(
        f"pipeline (handle)         {p['sent']:,} e-mails in {p['seconds']} s = {p['per_s']}/s "
        f"({'within' if figures['within_target'] else 'OVER'} the 60 s target)"
    )
    print(
        f"plain smtplib loop        {plain['per_s']}/s on {plain['sample']:,} -> "
        f"~{plain['extrapolated_seconds_for_all']} s for {figures['residents']:,} (extrapolated)"
    )
    print(f"speed-up vs plain loop    x{figures['speedup_vs_plain_loop']}")
    rs = figures["raw_aiosmtplib"]
    print(
        f"raw aiosmtplib            {rs['per_s']}/s on {rs['sample']:,} pre-rendered "
        f"(pipeline = {figures['ratio_to_raw_aiosmtplib']:.0%} of it)"
    )
    raw = figures["raw_aiokafka_status_events"]
    print(f"raw aiokafka (statuses)   {raw['events']:,} events in {raw['seconds']} s")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "notify_60k.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
