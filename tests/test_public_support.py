"""Shared pieces for the public-page tests: the real app, a real SMTP server, form helpers.

The SMTP server is aiosmtpd on a loopback port (a real server speaking SMTP over TCP). The app
is the real ``create_app`` on the isolated Kafka topics and database of ``isolated_settings``,
driven with plain form posts, exactly as a browser without JavaScript sends them.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import re
import socket
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import h3
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiosmtpd.controller import Controller

from api.app import create_app
from api.context import RESOURCES
from api.public.state import PUBLIC
from consumers.notifications.channels import SmtpChannel, SmtpConfig
from consumers.notifications.dispatch import Dispatcher
from consumers.notifications.retry import Backoff
from identity.crypto import load_master_key
from identity.linkkey import load_link_key
from identity.vault import IdentityVault
from lpt.kafka import make_producer, publish, topic_name
from lpt.logs import configure_logging
from lpt.settings import Settings
from schemas.registry import decode
from schemas.topics import TopicSpec
from tests.web_helpers import web_settings

PUBLIC_URL = "https://lpt.example.org"
# Real postcodes (NSPL May 2025): HU1 1AA has coordinates, HU7 9AA has none.
LOCATED = ("HU1 1AA", 53.74406, -0.33280, "E05001677", "E06000010")
UNLOCATED = ("HU7 9AA", None, None, None, "E06000010")
WARD = "E05001677"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
LINK_RE = re.compile(re.escape(PUBLIC_URL) + r"(/[a-z]+/[A-Za-z0-9_.-]+)")


def midday() -> datetime:
    """Today at 12:00 UTC: outside the default quiet hours (21:00-08:00 London) all year."""
    return datetime.combine(datetime.now(UTC).date(), time(12, 0), UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Inbox:
    """aiosmtpd handler keeping every message it accepts."""

    messages: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(envelope.content)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            raw = list(self.messages)
        parsed = [message_from_bytes(r, policy=policy.default) for r in raw]
        return [m for m in parsed if m["To"] == address]  # type: ignore[misc]


@dataclass
class Site:
    client: TestClient[Any, Any]
    app: web.Application
    settings: Settings
    pool: asyncpg.Pool
    vault: IdentityVault
    inbox: Inbox

    @property
    def live_channels(self) -> Any:
        """The app's own message channels (to put back after a test swapped them)."""
        return self._channels

    async def dispatcher(self) -> Dispatcher:
        """The notification worker's dispatcher on the same database and SMTP server."""
        port = int(self.settings.smtp_url.rsplit(":", 1)[1])
        channel = SmtpChannel(
            SmtpConfig("127.0.0.1", port), connections=1, backoff=Backoff(2, 0.01, 2.0, 0.05)
        )
        producer = make_producer(self.settings)
        await producer.start()
        self._closers.extend([channel.close, producer.stop])

        async def statuses(events: Sequence[Any]) -> None:
            await publish(producer, events, self.settings)

        return Dispatcher(
            self.pool,
            {"email": channel},
            public_base=PUBLIC_URL,
            mail_from=self.settings.mail_from,
            unsubscribe_secret=load_link_key(self.settings),
            publish=statuses,
            clock=midday,
        )

    _closers: list[Any] = field(default_factory=list)
    _channels: Any = None


async def add_reference_postcodes(pool: asyncpg.Pool) -> None:
    """The few reference rows the tests need (loading the whole reference set is not)."""
    for pc, lat, lng, ward, la in (LOCATED, UNLOCATED):
        cell = h3.latlng_to_cell(lat, lng, 10) if lat is not None else None
        await pool.execute(
            """INSERT INTO ref_postcodes
                   (postcode, lat, lng, cell, unlocated, ward_code, local_authority_code)
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (postcode) DO NOTHING""",
            pc,
            lat,
            lng,
            cell,
            lat is None,
            ward,
            la,
        )


def public_settings(settings: Settings, smtp_port: int) -> Settings:
    return web_settings(
        dataclasses.replace(
            settings,
            public_url=PUBLIC_URL,
            smtp_url=f"smtp://127.0.0.1:{smtp_port}",
            mail_from="Humberside Police <neighbourhood@police.example.org>",
            cookie_secure=False,  # the test client speaks plain http
        )
    )


@pytest.fixture(name="site")
async def site_fixture(isolated_settings: Settings) -> AsyncIterator[Site]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings = public_settings(isolated_settings, port)
    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=4)
    await add_reference_postcodes(pool)
    app = create_app(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    vault = IdentityVault(pool, load_master_key(settings.master_key_file))
    s = Site(client, app, settings, pool, vault, inbox)
    s._channels = app[PUBLIC].channels
    try:
        yield s
    finally:
        for close in reversed(s._closers):
            await close()
        await client.close()
        await pool.close()
        controller.stop()


# -- talking to the pages like a browser without JavaScript ----------------------------------------


async def csrf_token(client: TestClient[Any, Any], path: str) -> str:
    resp = await client.get(path)
    assert resp.status == 200, path
    match = CSRF_RE.search(await resp.text())
    assert match, f"no CSRF field on {path}"
    return match.group(1)


async def post_form(
    client: TestClient[Any, Any],
    path: str,
    fields: Iterable[tuple[str, str]],
    *,
    token_from: str | None = None,
    allow_redirects: bool = True,
) -> tuple[int, str]:
    """GET the form page (for its CSRF field, as a browser would), then POST the fields."""
    token = await csrf_token(client, token_from or path)
    data = aiohttp.FormData([("csrf_token", token), *fields])
    resp = await client.post(path, data=data, allow_redirects=allow_redirects)
    return resp.status, await resp.text()


def registration_fields(
    email: str | None = None,
    phone: str | None = None,
    postcode: str = "HU1 1AA",
    name: str | None = None,
    channels: Sequence[str] = ("email",),
    consent: bool = True,
    **extra: str,
) -> list[tuple[str, str]]:
    fields = [("channels", c) for c in channels]
    fields += [("email", email or ""), ("phone", phone or ""), ("postcode", postcode)]
    fields += [("name", name or "")]
    fields += list(extra.items())
    if consent:
        fields.append(("consent", "yes"))
    return fields


def unique_person() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    digits = str(int(tag, 16) % 1000).zfill(3)
    return f"pat.{tag}@example.org", f"07700 900{digits}", f"Patience Quill-{tag}"


async def register(site: Site, **kwargs: Any) -> tuple[str, str]:
    """Sign up through the form; returns (resident id, page html)."""
    status, page = await post_form(site.client, "/register", registration_fields(**kwargs))
    assert status == 200, page
    email = kwargs.get("email")
    if email:
        rid = await site.pool.fetchval(
            "SELECT resident_id FROM identity_people WHERE email = $1", email
        )
    else:
        rid = await site.pool.fetchval(
            "SELECT resident_id FROM identity_people ORDER BY registered_at DESC LIMIT 1"
        )
    assert rid is not None
    return str(rid), page


async def confirm_email(site: Site, email: str) -> None:
    """Press the button behind the link in the sign-up e-mail, as the resident does (e-mail
    goes only to confirmed addresses)."""
    [mail] = [m for m in site.inbox.to(email) if m["Subject"] == "Confirm your email address"]
    path = link_in(mail, "confirm")
    status, page = await post_form(site.client, path, [])
    assert status == 200, page


def link_in(message: EmailMessage, kind: str) -> str:
    """The path of the first ``/kind/...`` link in a message body."""
    for path in LINK_RE.findall(message.get_content()):
        if path.startswith(f"/{kind}/"):
            return str(path)
    raise AssertionError(f"no /{kind}/ link in the message")


def text_of(page: str) -> str:
    """Visible text of a page, whitespace collapsed (for assertions on wording)."""
    no_tags = re.sub(r"<[^>]+>", " ", page)
    return " ".join(html.unescape(no_tags).split())


# -- searching every store -------------------------------------------------------------------------


async def database_tables(pool: asyncpg.Pool) -> dict[str, str]:
    """Every row of every table in every schema of ours, each row cast to text, by table.

    ``bytea`` columns come out as hex (``\\x...``): search for hex-encoded needles too
    (:func:`needle_forms`).
    """
    tables = await pool.fetch(
        """SELECT table_schema, table_name FROM information_schema.tables
           WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
             AND table_type = 'BASE TABLE' ORDER BY table_schema, table_name"""
    )
    out: dict[str, str] = {}
    for t in tables:
        schema, table = t["table_schema"], t["table_name"]
        key = table if schema == "public" else f"{schema}.{table}"
        out[key] = await pool.fetchval(
            f'SELECT coalesce(string_agg(x::text, chr(10)), \'\') FROM "{schema}"."{table}" x'
        )
    return out


@pytest.fixture(name="service_log")
def service_log_fixture(tmp_path: Path) -> Iterator[Path]:
    """The log file of what runs in this test (see :func:`production_logs`)."""
    with production_logs(tmp_path / "service.log") as path:
        yield path


async def database_dump(pool: asyncpg.Pool) -> str:
    """Every row of every table of the database, as text."""
    return "\n".join((await database_tables(pool)).values())


def needle_forms(value: str) -> list[str]:
    """Lower-cased ways a value can appear in a text dump: as typed, and as hex (bytea)."""
    lowered = value.lower()
    return [lowered, lowered.encode().hex(), value.encode().hex()]


@contextmanager
def production_logs(path: Path) -> Iterator[Path]:
    """Log to ``path`` as a deployed process does (``configure_logging``: JSON lines, the
    personal-data redaction, stdlib warnings and up), at debug level so every line is kept.

    Loggers are not cached while this is active, so none stays bound to the file afterwards.
    """
    fh = path.open("w", encoding="utf-8")
    real_stderr = sys.stderr
    sys.stderr = fh  # configure_logging binds the stream it finds here
    try:
        configure_logging("json", "debug")
    finally:
        sys.stderr = real_stderr
    structlog.configure(cache_logger_on_first_use=False)
    handler = logging.StreamHandler(fh)
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        yield path
    finally:
        logging.getLogger().removeHandler(handler)
        structlog.reset_defaults()
        fh.close()


async def kafka_dump(settings: Settings) -> bytes:
    """Every key, value and header of every message on this test's topics, as raw bytes."""
    chunks: list[bytes] = []
    for r in await kafka_records(settings):
        chunks.extend([r.key or b"", r.value or b""])
        chunks.extend(v for _, v in r.headers or ())
    return b"\n".join(chunks)


async def kafka_records(settings: Settings) -> list[Any]:
    """Every message on every topic of this test's prefix (dead-letter and internal topics
    included), read to the end of each partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    assert len(topics) >= 10, "the test's topics were not found"
    tps = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    out: list[Any] = []
    try:
        end = await consumer.end_offsets(tps)
        begin = await consumer.beginning_offsets(tps)
        todo = {tp for tp in tps if end[tp] > begin[tp]}
        if not todo:
            return []
        consumer.assign(sorted(todo, key=lambda tp: (tp.topic, tp.partition)))
        await consumer.seek_to_beginning()
        for _ in range(100):
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for r in records:
                    out.append(r)
                    if r.offset + 1 >= end[tp]:
                        todo.discard(tp)
            if not todo:
                break
        assert not todo, "could not read every topic to its end"
    finally:
        await consumer.stop()
    return out


async def events_on(settings: Settings, spec: TopicSpec) -> list[Any]:
    """Decoded events on one topic (from the beginning)."""
    consumer = AIOKafkaConsumer(
        topic_name(spec, settings),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch:
                break
            out.extend(decode(r.value) for rs in batch.values() for r in rs)
    finally:
        await consumer.stop()
    return out


def public_state(site: Site) -> Any:
    return site.app[PUBLIC]


def resources(site: Site) -> Any:
    return site.app[RESOURCES]
