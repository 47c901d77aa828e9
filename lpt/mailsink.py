"""The demo mail sink: a local SMTP server that keeps every e-mail as an ``.eml`` file.

Why: ``make run`` (demo mode) starts the notification worker and the public pages, which send
e-mail to ``LPT_SMTP_URL`` (``smtp://127.0.0.1:1025`` by default). Without a server there, every
sign-up confirmation and update would fail, and the demo could not show what residents receive.
So in demo mode only, ``lpt up`` runs ``lpt mail-sink`` as one of its managed processes: an
aiosmtpd server on that address that accepts everything, delivers nothing onwards, and writes
each message to ``$LPT_HOME/mail/<time>-<random>.eml`` (readable with any mail client, and on
the demo-only page ``/demo/mail``).

It never runs outside demo mode, and only when ``LPT_SMTP_URL`` points at this machine: a demo
configured with a real mail server sends real mail. The files hold the addresses of the
(fictional) demo residents, so the directory is private to the user (0700, files 0600).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lpt.logs import get_logger
from lpt.settings import Settings, get_settings

log = get_logger(__name__)

#: Name of the managed process (``$LPT_HOME/run/mail.pid``, ``$LPT_HOME/logs/mail.log``).
PROCESS_NAME = "mail"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def mail_dir(settings: Settings) -> Path:
    return settings.home / "mail"


def sink_address(settings: Settings) -> tuple[str, int] | None:
    """(host, port) to listen on, or None when LPT_SMTP_URL is not a plain local address."""
    parts = urlsplit(settings.smtp_url)
    if parts.scheme != "smtp" or parts.hostname not in LOCAL_HOSTS or parts.username:
        return None
    return parts.hostname, parts.port or 25


def runs_sink(settings: Settings) -> bool:
    """Demo mode with a local mail address: the only case in which the sink is started."""
    return settings.demo_mode and sink_address(settings) is not None


class EmlStore:
    """aiosmtpd handler: every accepted message becomes one ``.eml`` file (written atomically,
    so the page never reads half a message)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)

    def store(self, content: bytes) -> Path:
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}.eml"
        path = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.replace(tmp, path)
        return path

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        path = self.store(content if isinstance(content, bytes) else content.encode())
        log.info("mail_sink.stored", file=path.name)  # the file name only: no address logged
        return "250 OK: kept in the demo mail folder"


@dataclass(frozen=True)
class StoredMail:
    name: str
    to: str
    subject: str
    date: str


def list_mail(directory: Path, limit: int = 200) -> list[StoredMail]:
    """The newest ``limit`` stored messages (headers only), newest first."""
    if not directory.is_dir():
        return []
    files = sorted(directory.glob("*.eml"), reverse=True)[:limit]
    parser = BytesHeaderParser(policy=default_policy)
    out: list[StoredMail] = []
    for f in files:
        with f.open("rb") as fh:
            headers = parser.parse(fh)
        out.append(
            StoredMail(f.name, str(headers["To"] or ""), str(headers["Subject"] or ""),
                       str(headers["Date"] or ""))
        )  # fmt: skip
    return out


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run the sink until ``stop`` is set."""
    from aiosmtpd.smtp import SMTP  # a dev/demo dependency: imported only when the sink runs

    address = sink_address(settings)
    if address is None:
        raise ValueError("LPT_SMTP_URL must be smtp://127.0.0.1:<port> for the demo mail sink")
    host, port = address
    handler = EmlStore(mail_dir(settings))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="lpt-demo-mail", enable_SMTPUTF8=True), host, port
    )
    log.info("mail_sink.listening", host=host, port=port, directory=str(handler.directory))
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def cli(_: argparse.Namespace) -> int:
    """``lpt mail-sink``: the demo mail sink in the foreground (``lpt up`` starts it in demo mode)."""
    settings = get_settings()
    if not settings.demo_mode:
        print("the mail sink runs in demo mode only (LPT_DEMO=1)")
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
    return 0
