"""The demo mail sink (demo mode only): a real SMTP server run as ``lpt up`` runs it, real
mail from the notification worker's dispatcher, ``.eml`` files under ``$LPT_HOME/mail`` and the
demo-only page that shows them."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from test_notifications_support import (
    HULL,
    NOON,
    WARD_HULL,
    KafkaStatuses,
    add_people,
    free_port,
    request,
)

from api import public
from api.app import create_app
from api.context import SETTINGS
from consumers.notifications.channels import channels_from_settings
from consumers.notifications.dispatch import Dispatcher
from lpt import mailsink
from lpt.services import demo_notes, managed_processes, start_process, stop_process
from lpt.settings import Settings
from schemas.notifications import Audience

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = "http://127.0.0.1:8080"


def demo_settings(base: Settings, home: Path, smtp_url: str) -> Settings:
    return dataclasses.replace(
        base,
        home=home,
        demo_mode=True,
        smtp_url=smtp_url,
        public_url=PUBLIC,
        master_key_file=home / "secrets" / "master.key",
        link_key_file=home / "secrets" / "link.key",
        cookie_secure=False,
    )


def public_pages(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    public.setup(app)
    return app


def names(settings: Settings) -> list[str]:
    return [p.name for p in managed_processes(settings)]


def test_sink_is_started_in_demo_mode_only(stack: Settings, tmp_path: Path) -> None:
    demo = demo_settings(stack, tmp_path, "smtp://127.0.0.1:1025")
    assert names(demo)[:3] == ["mail", "web", "notify"]
    notes = demo_notes(demo)
    assert len(notes) == 1 and str(tmp_path / "mail") in notes[0] and "/demo/mail" in notes[0]
    # Not outside demo mode, and not when the demo is given a real mail server.
    assert "mail" not in names(dataclasses.replace(demo, demo_mode=False))
    assert demo_notes(dataclasses.replace(demo, demo_mode=False)) == []
    assert "mail" not in names(dataclasses.replace(demo, smtp_url="smtp://mail.example.org:25"))
    # The command itself refuses to run outside demo mode.
    refused = subprocess.run(
        [sys.executable, "-m", "lpt.cli", "mail-sink"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "LPT_HOME": str(tmp_path), "LPT_DEMO": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "demo mode only" in refused.stdout


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def test_demo_mail_lands_in_the_mail_directory_and_on_the_demo_page(
    isolated_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    settings = demo_settings(isolated_settings, tmp_path / "home", f"smtp://127.0.0.1:{port}")
    # As `make run` does: the environment says demo mode; `lpt up` starts the managed process.
    monkeypatch.setenv("LPT_DEMO", "1")
    monkeypatch.setenv("LPT_SMTP_URL", settings.smtp_url)
    monkeypatch.setenv("LPT_LOG_LEVEL", "info")  # so the sink's log can be searched
    [sink] = [p for p in managed_processes(settings) if p.name == mailsink.PROCESS_NAME]
    pid = start_process(settings, sink)
    # `lpt up` exits and leaves the sink to init; here the test process is its parent, so reap
    # it when it ends (or `stop_process` would wait on a zombie).
    threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()
    pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=3)
    statuses = KafkaStatuses(settings)
    channels = channels_from_settings(settings)
    try:
        await asyncio.to_thread(wait_port, port)
        [person] = await add_people(pool, settings, [(HULL, WARD_HULL)])
        await statuses.start()
        for ch in channels.values():
            await ch.start()
        dispatcher = Dispatcher.from_settings(pool, settings, channels, statuses, lambda: NOON)
        summary = await dispatcher.handle(request("n-demo", Audience(ward_codes=[WARD_HULL])))
        assert summary.sent == 1

        [eml] = list((settings.home / "mail").glob("*.eml"))
        assert oct(eml.stat().st_mode & 0o777) == "0o600"
        mail = message_from_bytes(eml.read_bytes(), policy=policy.default)
        assert mail["To"] == person.email
        assert mail["Subject"] == "You said, we did: parking on Whitefriargate"
        assert mail["List-Unsubscribe"].startswith(f"<{PUBLIC}/unsubscribe/")
        log = (settings.home / "logs" / "mail.log").read_text()
        assert "mail_sink.stored" in log and person.email not in log

        # The demo-only page lists it and shows it with its links. (The public pages alone:
        # the whole service in demo mode also seeds the officers' demo accounts, which is slow.)
        client: TestClient[Any, Any] = TestClient(TestServer(public_pages(settings)))
        await client.start_server()
        try:
            resp = await client.get("/demo/mail")
            page = await resp.text()
            assert resp.status == 200 and person.email in page and eml.name in page
            resp = await client.get(f"/demo/mail/{eml.name}")
            page = await resp.text()
            assert resp.status == 200 and "We patrolled daily this week." in page
            assert f'href="{PUBLIC}/unsubscribe/' in page and f'href="{PUBLIC}/reply/' in page
            assert (await client.get("/demo/mail/..%2Fsecrets%2Fmaster.key")).status == 404
        finally:
            await client.close()
        # Outside demo mode the page does not exist.
        plain = dataclasses.replace(settings, demo_mode=False)
        client = TestClient(TestServer(create_app(plain)))
        await client.start_server()
        try:
            assert (await client.get("/demo/mail")).status == 404
        finally:
            await client.close()
    finally:
        for ch in channels.values():
            await ch.close()
        await statuses.stop()
        await pool.close()
        assert stop_process(settings, mailsink.PROCESS_NAME)
