"""Live updates: priority changes and officer alerts pushed to open pages (server-sent events).

Why a consumer inside the web service, without a consumer group: every web process must see
every event to serve the pages connected to it, and a page only wants what happens from now
on. So each process assigns itself all partitions of ``priority.changed`` and
``officer.alerts`` at the end offset and fans each event out to its SSE subscribers, filtered
by the subscriber's area scope. Latency is a fetch wait (at most ``FETCH_WAIT_MS``) plus a
queue hop, well under the one second the issue asks for.

A slow page cannot hold the others back: each subscriber has a bounded queue, and when it is
full the oldest update is dropped for that page only and the page is told to reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from api.officer.accounts import Scope
from lpt.kafka import topic_name
from lpt.logs import get_logger
from lpt.settings import Settings
from schemas.priority import OfficerAlert, PriorityChanged
from schemas.registry import InvalidEvent, decode
from schemas.topics import OFFICER_ALERTS, PRIORITY_CHANGED

log = get_logger(__name__)

FETCH_WAIT_MS = 100
QUEUE_SIZE = 200
HEARTBEAT_SECONDS = 15.0
CLOSE = "__close__"

#: (cell, ward, local authority) -> in the subscriber's scope?
ScopeTest = Callable[[Scope, str, str | None, str | None], Awaitable[bool]]


@dataclass(eq=False)
class Subscriber:
    scope: Scope
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE)
    )
    overflowed: bool = False


class LiveHub:
    """Subscribers of this process and the consumer feeding them."""

    def __init__(self, settings: Settings, in_scope: ScopeTest) -> None:
        self.settings = settings
        self.in_scope = in_scope
        self.subscribers: set[Subscriber] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.delivered = 0

    @contextlib.contextmanager
    def subscribe(self, scope: Scope) -> Any:
        sub = Subscriber(scope)
        self.subscribers.add(sub)
        try:
            yield sub
        finally:
            self.subscribers.discard(sub)

    def close_all(self) -> None:
        """Ask every open stream to end (at shutdown: open SSE connections would otherwise hold
        the server for its whole shutdown timeout)."""
        for sub in list(self.subscribers):
            if sub.queue.full():
                sub.queue.get_nowait()
            sub.queue.put_nowait((CLOSE, {}))

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=FETCH_WAIT_MS,
            auto_offset_reset="latest",
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="officer-live")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        """All partitions of both topics, positioned at their end (retried until they exist)."""
        specs = (PRIORITY_CHANGED, OFFICER_ALERTS)
        names = [topic_name(spec, self.settings) for spec in specs]
        while not set(names) <= set(await consumer.topics()):
            await asyncio.sleep(1.0)  # `lpt up` creates the topics; wait for them
        # Partition counts from the catalogue (they are fixed there for these topics).
        tps = [
            TopicPartition(name, p)
            for spec, name in zip(specs, names, strict=True)
            for p in range(spec.partitions or self.settings.topic_partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolve "end" now, not at the first fetch

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            await self._assign(consumer)
        except Exception as exc:
            log.error("officer.live_assign_failed", error=type(exc).__name__)
            raise
        self.ready.set()
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker hiccup must not end live updates
                log.warning("officer.live_fetch_failed", error=type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            for tp, records in batches.items():
                for record in records:
                    await self._dispatch(tp.topic, record.offset, record.value)

    async def _dispatch(self, topic: str, offset: int, raw: bytes | None) -> None:
        try:
            event = decode(raw or b"")
        except (InvalidEvent, ValidationError, ValueError) as exc:
            reason = getattr(exc, "reason", type(exc).__name__)
            log.warning("officer.live_bad_event", topic=topic, offset=offset, reason=reason)
            return
        if isinstance(event, PriorityChanged):
            kind = "priority"
        elif isinstance(event, OfficerAlert):
            kind = "alert"
        else:
            log.warning("officer.live_unexpected_type", topic=topic, offset=offset)
            return
        payload = event.model_dump(mode="json")
        for sub in list(self.subscribers):
            if not await self.in_scope(
                sub.scope, event.cell, event.ward_code, event.local_authority_code
            ):
                continue
            if sub.queue.full():
                sub.overflowed = True
                with contextlib.suppress(asyncio.QueueEmpty):
                    sub.queue.get_nowait()
            sub.queue.put_nowait((kind, payload))
            self.delivered += 1


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream(request: web.Request, hub: LiveHub, scope: Scope) -> web.StreamResponse:
    """Serve one SSE connection until the client goes away."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache, no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    with hub.subscribe(scope) as sub:
        await response.write(_sse("hello", {"ready": hub.ready.is_set()}))
        async for item in _items(sub):
            if item is None:
                await response.write(b": keep-alive\n\n")
                continue
            kind, payload = item
            if kind == CLOSE:
                break
            if sub.overflowed:
                sub.overflowed = False
                await response.write(_sse("overflow", {"reload": True}))
            await response.write(_sse(kind, payload))
    return response


async def _items(sub: Subscriber) -> AsyncIterator[tuple[str, dict[str, Any]] | None]:
    while True:
        try:
            yield await asyncio.wait_for(sub.queue.get(), HEARTBEAT_SECONDS)
        except TimeoutError:
            yield None
