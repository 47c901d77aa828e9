"""Unsubscribe links keep working when the master key is rotated (real PostgreSQL, Kafka, SMTP).

The links are signed with the link key (``identity/linkkey.py``), a secret of its own. A link
is mailed by the notification worker's dispatcher, ``lpt rotate-master-key`` runs, the web
service starts again with the new master key, and the one-click POST from the old e-mail still
unsubscribes. The same holds for a link mailed before the link key existed (signed with the
key derived from the master key, as the code did then).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.controller import Controller
from test_notifications_support import (
    HULL,
    NOON,
    WARD_HULL,
    KafkaStatuses,
    add_people,
    request,
    smtp_channel,
)

from api.app import create_app
from consumers.notifications.dispatch import Dispatcher
from consumers.notifications.tokens import unsubscribe_key, unsubscribe_url
from identity.crypto import load_master_key
from identity.linkkey import legacy_link_key, load_link_key
from identity.rotation import rotate_master_key
from lpt.settings import Settings
from schemas.notifications import Audience
from tests.test_public_support import PUBLIC_URL, Inbox, free_port, public_settings

OPTED_OUT = "SELECT opted_out_at IS NOT NULL FROM identity_people WHERE resident_id = $1"


@dataclass
class Setup:
    settings: Settings
    pool: asyncpg.Pool
    inbox: Inbox
    port: int


@pytest.fixture
async def setup(isolated_settings: Settings, tmp_path: Path) -> AsyncIterator[Setup]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings = dataclasses.replace(
        public_settings(isolated_settings, port),
        master_key_file=tmp_path / "secrets" / "master.key",
        link_key_file=tmp_path / "secrets" / "link.key",
    )
    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=3)
    try:
        yield Setup(settings, pool, inbox, port)
    finally:
        await pool.close()
        controller.stop()


async def one_click(settings: Settings, url: str) -> int:
    """Start the web service (as after the rotation) and POST the link as a mail client does."""
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        resp = await client.post(
            url.removeprefix(PUBLIC_URL),
            data="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        return resp.status
    finally:
        await client.close()


async def test_mailed_link_still_unsubscribes_after_master_key_rotation(setup: Setup) -> None:
    settings, pool = setup.settings, setup.pool
    [person] = await add_people(pool, settings, [(HULL, WARD_HULL)])
    statuses = KafkaStatuses(settings)
    await statuses.start()
    channel = smtp_channel(setup.port)
    try:
        dispatcher = Dispatcher.from_settings(
            pool, settings, {"email": channel}, statuses, clock=lambda: NOON
        )
        sent = await dispatcher.handle(request("n-rotate", Audience(ward_codes=[WARD_HULL])))
        assert sent.sent == 1
    finally:
        await channel.close()
        await statuses.stop()
    [mail] = setup.inbox.to(person.email)
    link = mail["List-Unsubscribe"].strip("<>")
    link_key = settings.link_key_file.read_bytes()
    old_master = settings.master_key_file.read_bytes()

    result = await rotate_master_key(settings, progress=False)
    assert result.rewrapped == 1
    new_master = settings.master_key_file.read_bytes()
    assert new_master != old_master
    # The link key did not move with the master key, and is not derived from the new one.
    assert load_link_key(settings) == link_key != legacy_link_key(new_master)
    assert oct(settings.link_key_file.stat().st_mode & 0o777) == "0o600"

    assert await pool.fetchval(OPTED_OUT, person.resident_id) is False
    assert await one_click(settings, link) == 200
    assert await pool.fetchval(OPTED_OUT, person.resident_id) is True
    # A forged link (right shape, wrong key) is still refused after the rotation.
    forged = unsubscribe_url(PUBLIC_URL, legacy_link_key(new_master), person.resident_id)
    assert await one_click(settings, forged) == 404


async def test_link_mailed_before_the_link_key_existed_survives_rotation(setup: Setup) -> None:
    settings, pool = setup.settings, setup.pool
    [person] = await add_people(pool, settings, [(HULL, WARD_HULL)])
    # As the code signed links before: a key derived from the master key; no link key yet.
    old_link = unsubscribe_url(
        PUBLIC_URL, unsubscribe_key(load_master_key(settings.master_key_file)), person.resident_id
    )
    assert not settings.link_key_file.exists()

    await rotate_master_key(settings, progress=False)
    assert settings.link_key_file.exists()  # seeded from the master key the link was made with
    assert await one_click(settings, old_link) == 200
    assert await pool.fetchval(OPTED_OUT, person.resident_id) is True


def test_new_installation_gets_a_random_link_key(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        isolated_settings,
        master_key_file=tmp_path / "master.key",
        link_key_file=tmp_path / "link.key",
    )
    key = load_link_key(settings)
    assert len(key) == 32 and load_link_key(settings) == key  # created once, then read
    assert not settings.master_key_file.exists()
    assert key != legacy_link_key(load_master_key(settings.master_key_file))
