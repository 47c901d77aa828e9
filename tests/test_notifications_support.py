"""Shared pieces for the notification tests: a real SMTP server, residents, a settable clock.

The SMTP server is aiosmtpd on a loopback port (a real server speaking SMTP over TCP, not a
fake of the client); residents go into the real identity tables through the identity vault.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import asyncpg
import h3
import pytest
from aiokafka import AIOKafkaConsumer
from aiosmtpd.controller import Controller

from consumers.notifications.channels import SmtpChannel, SmtpConfig
from consumers.notifications.dispatch import Dispatcher
from consumers.notifications.retry import Backoff
from identity.crypto import load_master_key
from identity.linkkey import load_link_key
from identity.vault import IdentityVault, PersonDetails
from lpt.kafka import make_producer, publish, publish_raw, topic_name
from lpt.settings import Settings
from schemas.notifications import Audience, NotificationRequested, NotificationSent
from schemas.registry import decode, encode
from schemas.topics import NOTIFICATIONS_SENT, TopicSpec

# Street cells in Hull (resolution 10) and their parents.
HULL = h3.latlng_to_cell(53.74406, -0.33280, 10)
HULL_NEAR = h3.grid_ring(HULL, 1)[0]  # a neighbour, same res-8 parent in practice
BEVERLEY = h3.latlng_to_cell(53.8400, -0.4300, 10)
WARD_HULL = "E05001677"
WARD_BEVERLEY = "E05009999"
PUBLIC = "https://lpt.example.org"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpInbox:
    """aiosmtpd handler keeping every message; ``refuse_first`` answers 451 that many times."""

    refuse_first: int = 0
    #: Recipients whose mailbox is "busy": 450 at RCPT, every time.
    busy: set[str] = field(default_factory=set)
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.busy:
            return "450 4.2.1 mailbox busy"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.refuse_first > 0:
                self.refuse_first -= 1
                return "451 4.3.0 try again later"
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def parsed(self) -> list[EmailMessage]:
        with self.lock:
            raw = [m[2] for m in self.messages]
        return [message_from_bytes(r, policy=policy.default) for r in raw]  # type: ignore[misc]

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.parsed() if m["To"] == address]


@dataclass
class SmtpServer:
    port: int
    inbox: SmtpInbox
    controller: Controller


@pytest.fixture(name="smtp_server")
def smtp_server_fixture() -> Iterator[SmtpServer]:
    inbox = SmtpInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer(port, inbox, controller)
    finally:
        controller.stop()


class Clock:
    """A clock the test moves by hand (budget decisions take the clock as a parameter)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


#: Tuesday 10 March 2026, 12:00 UTC = 12:00 in London (GMT): outside quiet hours.
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def notify_settings(settings: Settings, smtp_port: int) -> Settings:
    return dataclasses.replace(
        settings,
        public_url=PUBLIC,
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        mail_from="Humberside Police <alerts@police.example.org>",
        smtp_connections=2,
        survey_auto_waves=False,  # on in tests/test_survey_schedule.py only
    )


def fast_backoff() -> Backoff:
    return Backoff(attempts=3, base=0.01, cap=0.05)


def smtp_channel(port: int) -> SmtpChannel:
    return SmtpChannel(SmtpConfig("127.0.0.1", port), connections=2, backoff=fast_backoff())


@dataclass
class Person:
    resident_id: str
    email: str
    cell: str | None
    ward: str | None


async def add_people(
    pool: asyncpg.Pool,
    settings: Settings,
    specs: Sequence[tuple[str | None, str | None]],
    groups: Sequence[Sequence[str]] | None = None,
    channels: Sequence[str] = ("email",),
    confirmed: bool = True,
) -> list[Person]:
    """Residents (cell, ward) with e-mail addresses, straight into the identity vault.

    ``confirmed``: their e-mail addresses are confirmed (as by the sign-up link); e-mail goes
    only to confirmed addresses.
    """
    vault = IdentityVault(pool, load_master_key(settings.master_key_file))
    people: list[Person] = []
    for i, (cell, ward) in enumerate(specs):
        email = f"resident{i}.{uuid.uuid4().hex[:10]}@example.org"
        key = await vault.create_person(
            PersonDetails(
                postcode="HU1 1AA",
                channels=tuple(channels),
                consent_version="v1",
                email=email,
                phone="+447700900" + f"{i:03d}",
                name=f"Resident {i}",
                cell=cell,
                unlocated=cell is None,
                ward_code=ward,
                community_groups=tuple(groups[i]) if groups else (),
            )
        )
        people.append(Person(key.resident_id, email, cell, ward))
    if confirmed and people:
        await pool.execute(
            "UPDATE identity_people SET email_confirmed_at = now() WHERE resident_id = ANY($1)",
            [p.resident_id for p in people],
        )
    return people


def request(
    nid: str, audience: Audience, *, urgent: bool = False, allow_reply: bool = True, **kw: Any
) -> NotificationRequested:
    return NotificationRequested(
        occurred_at=NOON,
        source="officer-app",
        notification_id=nid,
        kind=kw.pop("kind", "safety_alert" if urgent else "you_said_we_did"),
        urgent=urgent,
        audience=audience,
        subject=kw.pop("subject", "You said, we did: parking on Whitefriargate"),
        body=kw.pop("body", "You told us about dangerous parking. We patrolled daily this week."),
        sender="officer-0042",
        allow_reply=allow_reply,
        **kw,
    )


class KafkaStatuses:
    """Publishes statuses to the real notifications.sent topic and reads them back."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = make_producer(settings)

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def __call__(self, events: Sequence[NotificationSent]) -> None:
        await publish_raw(
            self.producer,
            topic_name(NOTIFICATIONS_SENT, self.settings),
            [(e.resident_id.encode(), encode(e)) for e in events],
        )


async def read_topic(settings: Settings, spec: TopicSpec, name: str | None = None) -> list[Any]:
    """Every record on a topic (from the beginning), as aiokafka records."""
    consumer = AIOKafkaConsumer(
        name or topic_name(spec, settings),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1500)
            if not batch:
                break
            records.extend(r for rs in batch.values() for r in rs)
    finally:
        await consumer.stop()
    return records


async def statuses(settings: Settings) -> list[NotificationSent]:
    return [decode(r.value) for r in await read_topic(settings, NOTIFICATIONS_SENT)]  # type: ignore[misc]


@dataclass
class Env:
    settings: Settings
    pool: asyncpg.Pool
    smtp: SmtpServer
    clock: Clock
    dispatcher: Dispatcher
    published: KafkaStatuses


@pytest.fixture(name="env")
async def env_fixture(isolated_settings: Settings, smtp_server: SmtpServer) -> AsyncIterator[Env]:
    settings = notify_settings(isolated_settings, smtp_server.port)
    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=4)
    clock = Clock(NOON)
    published = KafkaStatuses(settings)
    await published.start()
    channel = smtp_channel(smtp_server.port)
    dispatcher = Dispatcher(
        pool,
        {"email": channel},
        public_base=PUBLIC,
        mail_from=settings.mail_from,
        unsubscribe_secret=load_link_key(settings),
        publish=published,
        clock=clock,
    )
    try:
        yield Env(settings, pool, smtp_server, clock, dispatcher, published)
    finally:
        await channel.close()
        await published.stop()
        await pool.close()


async def publish_requests(settings: Settings, events: Sequence[Any]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        await publish(producer, events, settings)
    finally:
        await producer.stop()


async def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)
