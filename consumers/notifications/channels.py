"""Delivery channels behind one interface: e-mail over SMTP, SMS and push over HTTP providers.

Why one interface (:class:`Channel`): the worker hands each channel a batch and gets one
:class:`~consumers.notifications.retry.Outcome` per message back, whatever the transport, so
budget, idempotency and status reporting are written once.

Speed: SMTP has no batching across recipients here (every e-mail carries personal links), so
throughput comes from a few persistent connections sending concurrently. The HTTP adapter posts
concurrently under a semaphore. Both retry with exponential backoff, and both stop trying for a
short while once the server is unreachable (a circuit breaker): otherwise a mail server outage
would cost every remaining message its full series of retries. Messages that fail only for now
come back ``transient`` and the worker schedules another round later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import NoReturn, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import aiosmtplib

from consumers.notifications.compose import MessageTemplate, safe_address
from consumers.notifications.retry import (
    Backoff,
    Outcome,
    PermanentFailure,
    TransientFailure,
    Unreachable,
    with_retries,
)
from lpt.logs import get_logger
from lpt.settings import Settings

log = get_logger(__name__)

#: After a connection attempt failed through all its retries, skip this channel for this long.
CIRCUIT_OPEN_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for one resident on one channel, ready to render."""

    message_id: str
    resident_id: str
    channel: str
    #: E-mail address, phone number, or (push) the resident id the provider knows devices by.
    address: str
    template: MessageTemplate
    unsubscribe_url: str
    reply_url: str | None


class Channel(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send_many(self, batch: Sequence[Outgoing]) -> list[Outcome]:
        """One outcome per message, in order. Never raises for a message's own failure."""
        ...


class _Circuit:
    def __init__(self) -> None:
        self.open_until = 0.0

    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def trip(self) -> None:
        self.open_until = time.monotonic() + CIRCUIT_OPEN_SECONDS


# -- e-mail -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    use_tls: bool = False
    start_tls: bool | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """``smtp://[user:pass@]host:port[?starttls=1]`` or ``smtps://...`` (implicit TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("LPT_SMTP_URL must look like smtp://host:port or smtps://host:port")
        query = parse_qs(parts.query)
        starttls: bool | None = None
        if "starttls" in query:
            starttls = query["starttls"][0] in ("1", "true", "yes")
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 25),
            use_tls=tls,
            start_tls=None if tls else starttls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


class SmtpChannel:
    """E-mail over a few persistent SMTP connections (aiosmtplib)."""

    name = "email"

    def __init__(
        self, config: SmtpConfig, connections: int = 4, backoff: Backoff | None = None
    ) -> None:
        self.config = config
        self.connections = max(1, connections)
        self.backoff = backoff or Backoff()
        self._clients: list[aiosmtplib.SMTP | None] = [None] * self.connections
        self._circuit = _Circuit()

    @classmethod
    def from_settings(cls, settings: Settings, backoff: Backoff | None = None) -> SmtpChannel:
        return cls(SmtpConfig.from_url(settings.smtp_url), settings.smtp_connections, backoff)

    async def start(self) -> None:
        """Connections open lazily on first use (and again after a drop)."""

    async def close(self) -> None:
        for i, client in enumerate(self._clients):
            self._clients[i] = None
            if client is not None and client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()

    async def _client(self, slot: int) -> aiosmtplib.SMTP:
        client = self._clients[slot]
        if client is not None and client.is_connected:
            return client
        c = self.config
        client = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            use_tls=c.use_tls,
            start_tls=c.start_tls,
            username=c.username,
            password=c.password,
            timeout=c.timeout,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise Unreachable(f"cannot connect to the mail server: {exc}") from exc
        self._clients[slot] = client
        return client

    async def _send_one(self, slot: int, item: Outgoing) -> None:
        """One SMTP transaction: MAIL, RCPT, DATA.

        The envelope commands are issued directly rather than through ``sendmail``, which
        re-parses both addresses with the ``email`` package five times per message (a quarter
        of the CPU of a large send); the addresses were already checked by :func:`safe_address`.
        """
        if self._circuit.is_open():
            raise Unreachable("mail server unavailable")
        try:
            data = item.template.render_email(
                item.address, item.resident_id, item.unsubscribe_url, item.reply_url
            )
        except ValueError as exc:
            raise PermanentFailure("e-mail address unusable in a header") from exc
        client = await self._client(slot)
        sender = item.template.envelope_sender.encode()
        try:
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            reply = await client.execute_command(b"MAIL", b"FROM:<" + sender + b">")
            if reply.code == 250:
                reply = await client.execute_command(
                    b"RCPT", b"TO:<" + item.address.encode() + b">"
                )
            if reply.code not in (250, 251):
                await client.rset()
                _refused(reply.code, "refused the envelope")
            await client.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            _refused(exc.code, "refused the message")
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._clients[slot] = None
            client.close()
            raise Unreachable(f"connection lost: {type(exc).__name__}") from exc

    async def send_many(self, batch: Sequence[Outgoing]) -> list[Outcome]:
        results: list[Outcome | None] = [None] * len(batch)
        queue = iter(range(len(batch)))

        async def connection(slot: int) -> None:
            for i in queue:  # shared iterator: each index taken by exactly one connection
                item = batch[i]
                if not safe_address(item.address):
                    results[i] = Outcome(False, 0, "e-mail address unusable in a header")
                    continue
                if self._circuit.is_open():
                    results[i] = Outcome(False, 0, "mail server unavailable", transient=True)
                    continue
                outcome = await with_retries(partial(self._send_one, slot, item), self.backoff)
                if outcome.unreachable and not self._circuit.is_open():
                    self._circuit.trip()
                    log.warning("notify.smtp_circuit_open", detail=outcome.detail)
                results[i] = outcome

        await asyncio.gather(*(connection(s) for s in range(min(self.connections, len(batch)))))
        return [r if r is not None else Outcome(False, 0, "not attempted", True) for r in results]


# -- SMS and push over an HTTP provider ----------------------------------------------------------


class HttpProviderChannel:
    """SMS or push through a provider's HTTP API: one JSON POST per message.

    The body is ``{"channel", "to", "text" | "title"+"body", "reply_url", "unsubscribe_url",
    "message_id"}`` and the ``Idempotency-Key`` header is stable per (message, resident,
    channel), so a provider that honours it never delivers a retried request twice. 2xx is
    delivered; 408, 429 and 5xx are retried with backoff; other statuses are permanent.
    """

    def __init__(
        self,
        name: str,
        url: str,
        concurrency: int = 32,
        backoff: Backoff | None = None,
        timeout: float = 15.0,
    ) -> None:
        if name not in ("sms", "push"):
            raise ValueError("HTTP provider channels are 'sms' or 'push'")
        self.name = name
        self.url = url
        self.backoff = backoff or Backoff()
        self._limit = asyncio.Semaphore(concurrency)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._circuit = _Circuit()

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def payload(self, item: Outgoing) -> dict[str, str | None]:
        base: dict[str, str | None] = {
            "channel": self.name,
            "to": item.address,
            "message_id": item.template.smtp_message_id(item.resident_id).strip("<>"),
        }
        if self.name == "sms":
            base["text"] = item.template.sms_text(item.unsubscribe_url, item.reply_url)
        else:
            base.update(item.template.push_payload(item.unsubscribe_url, item.reply_url))
        return base

    async def _post(self, item: Outgoing) -> None:
        if self._circuit.is_open():
            raise Unreachable(f"{self.name} provider unavailable")
        assert self._session is not None, "start() the channel first"
        key = f"{item.message_id}:{item.resident_id}:{self.name}"
        try:
            async with self._session.post(
                self.url, json=self.payload(item), headers={"Idempotency-Key": key}
            ) as resp:
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(f"{self.name} provider unreachable: {type(exc).__name__}") from exc
        if 200 <= status < 300:
            return
        if status == 429 or status >= 500:
            raise Unreachable(f"{self.name} provider answered {status}")
        if status == 408:
            raise TransientFailure(f"{self.name} provider answered {status}")
        raise PermanentFailure(f"{self.name} provider refused ({status})")

    async def send_many(self, batch: Sequence[Outgoing]) -> list[Outcome]:
        await self.start()

        async def one(item: Outgoing) -> Outcome:
            async with self._limit:
                if self._circuit.is_open():
                    return Outcome(False, 0, f"{self.name} provider unavailable", transient=True)
                outcome = await with_retries(partial(self._post, item), self.backoff)
                if outcome.unreachable:
                    self._circuit.trip()
                return outcome

        return list(await asyncio.gather(*(one(item) for item in batch)))


def _refused(code: int, what: str) -> NoReturn:
    """5xx: permanent (the same message would be refused again); 421: the server is going
    away; other 4xx: this message later."""
    if code >= 500:
        raise PermanentFailure(f"mail server {what} ({code})")
    if code == 421:
        raise Unreachable("mail server closing the connection (421)")
    raise TransientFailure(f"mail server deferred ({code})")


def channels_from_settings(
    settings: Settings, backoff: Backoff | None = None
) -> dict[str, Channel]:
    """The configured channels: e-mail always, SMS and push when their provider URL is set."""
    channels: dict[str, Channel] = {"email": SmtpChannel.from_settings(settings, backoff)}
    if settings.sms_url:
        channels["sms"] = HttpProviderChannel("sms", settings.sms_url, backoff=backoff)
    if settings.push_url:
        channels["push"] = HttpProviderChannel("push", settings.push_url, backoff=backoff)
    return channels
