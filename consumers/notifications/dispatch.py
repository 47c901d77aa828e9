"""One notification request end to end: resolve, decide, record, send, record, report.

Order matters for the guarantees:

1. In one transaction (under the budget lock): the request row (idempotency), the audience
   (one query), the budget decisions (pure, :mod:`.budget`), and every outbox row, budget
   charge and held message. Either all of it is recorded or none of it.
2. Then the ``pending`` rows are sent in chunks. Each chunk re-reads the residents' identity
   rows first: someone who opted out or was erased a second ago is not sent anything (opt-out
   takes effect at once, DESIGN §6), and addresses are never copied out of the identity store.
3. Each chunk's outcomes are written in one statement and published as ``NotificationSent``.

Held messages (budget used) and suppressed ones are reported when decided, messages scheduled
for the morning when they are sent, and messages that failed only for now (mail server down)
as ``retrying``, with a later round scheduled (:data:`RETRY_ROUNDS`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

import asyncpg

from consumers.notifications import outbox
from consumers.notifications.audience import Recipient, criteria_for, resolve
from consumers.notifications.budget import Action, Clock, decide, system_clock
from consumers.notifications.channels import Channel, Outgoing
from consumers.notifications.compose import MessageTemplate
from consumers.notifications.digest import build_digest_templates
from consumers.notifications.retry import Outcome
from consumers.notifications.tokens import (
    TokenGrant,
    issue_reply_tokens,
    reply_url,
    unsubscribe_url,
)
from identity.linkkey import load_link_key
from lpt.logs import get_logger
from lpt.metrics import NOTIFICATIONS
from lpt.settings import Settings
from schemas.common import score_cell_of
from schemas.envelope import deterministic_id
from schemas.notifications import NotificationRequested, NotificationSent

log = get_logger(__name__)

SOURCE = "notification-worker"
#: Outbox rows per send chunk (a resident's rows for one message never straddle two chunks).
CHUNK_ROWS = 2000
#: Later rounds for messages that failed only for now (server down): 1, 2, 4, 8, 16 minutes.
RETRY_ROUNDS = 5
RETRY_BASE = timedelta(minutes=1)

PublishStatuses = Callable[[Sequence[NotificationSent]], Awaitable[None]]


@dataclass
class Summary:
    """What happened to one request (or one release round), counted per outbox row."""

    audience: int = 0
    sent: int = 0
    held: int = 0
    scheduled: int = 0
    retrying: int = 0
    failed: int = 0
    suppressed: int = 0
    duplicate: bool = False

    def __iadd__(self, other: Summary) -> Summary:
        for f in fields(self):
            if f.type in ("int", int):
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


@dataclass
class Plan:
    rows: list[outbox.Row]
    charged: list[str]
    held: list[str]
    over_budget: int = 0
    in_quiet_hours: int = 0


def plan(req: NotificationRequested, recipients: Sequence[Recipient], now: datetime) -> Plan:
    """Outbox rows, charges and holds for a request (pure: the decisions come from budget)."""
    result = Plan([], [], [])
    nid = req.notification_id
    for r in recipients:
        if not r.channels:
            continue
        if not req.urgent and r.topics is not None and req.kind not in r.topics:
            continue  # the resident turned this kind of message off
        d = decide(now, urgent=req.urgent, charges_in_window=r.charges_in_window, prefs=r.prefs)
        status, due, detail = "pending", None, None
        if d.action is Action.SEND_URGENT:
            result.over_budget += d.over_budget
            result.in_quiet_hours += d.in_quiet_hours
        elif d.action is Action.SCHEDULE:
            status, due = "scheduled", d.release_at
        elif d.action is Action.HOLD:
            status = "held_for_digest"
            result.held.append(r.resident_id)
        elif d.action is Action.SKIP:
            status, detail = "suppressed_opted_out", "resident takes urgent alerts only"
        if d.charged:
            result.charged.append(r.resident_id)
        for channel in r.channels:
            result.rows.append(
                outbox.Row(nid, r.resident_id, channel, status, req.urgent, False, due, detail)
            )
    return result


def chunks(rows: Sequence[outbox.PendingRow], size: int) -> Iterator[list[outbox.PendingRow]]:
    """Chunks of about ``size`` rows, cut only between (message, resident) groups."""
    chunk: list[outbox.PendingRow] = []
    for row in rows:
        if len(chunk) >= size and (row.message_id, row.resident_id) != (
            chunk[-1].message_id,
            chunk[-1].resident_id,
        ):
            yield chunk
            chunk = []
        chunk.append(row)
    if chunk:
        yield chunk


def status_event(
    message_id: str, resident_id: str, channel: str, status: str, detail: str | None, now: datetime,
    attempt: int = 0,
) -> NotificationSent:  # fmt: skip
    return NotificationSent(
        event_id=deterministic_id(
            "notification.sent", message_id, resident_id, channel, status, str(attempt)
        ),
        occurred_at=now,
        source=SOURCE,
        notification_id=message_id,
        resident_id=resident_id,
        channel=channel,
        status=status,
        detail=detail,
    )


@dataclass
class _Prepared:
    """One chunk on its way through the send pipeline."""

    rows: list[outbox.PendingRow]
    prepared_at: datetime
    results: list[outbox.Result] = field(default_factory=list)
    by_channel: dict[str, list[tuple[outbox.PendingRow, Outgoing]]] = field(
        default_factory=lambda: defaultdict(list)
    )


class Dispatcher:
    """Runs requests through the steps above; shared by the worker, the digest and tests."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        channels: Mapping[str, Channel],
        *,
        public_base: str,
        mail_from: str,
        unsubscribe_secret: bytes,
        publish: PublishStatuses,
        clock: Clock = system_clock,
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        self.pool = pool
        self.channels = dict(channels)
        self.public_base = public_base.rstrip("/")
        self.mail_from = mail_from
        self.unsubscribe_secret = unsubscribe_secret
        self.publish = publish
        self.clock = clock
        self.chunk_rows = chunk_rows
        self._templates: OrderedDict[str, tuple[MessageTemplate, bool]] = OrderedDict()

    @classmethod
    def from_settings(
        cls,
        pool: asyncpg.Pool,
        settings: Settings,
        channels: Mapping[str, Channel],
        publish: PublishStatuses,
        clock: Clock = system_clock,
    ) -> Dispatcher:
        return cls(
            pool,
            channels,
            public_base=settings.public_base_url,
            mail_from=settings.mail_from,
            unsubscribe_secret=load_link_key(settings),
            publish=publish,
            clock=clock,
        )

    # -- requests ---------------------------------------------------------------------------

    async def handle(self, req: NotificationRequested) -> Summary:
        """Deliver one request. :class:`~.audience.AudienceError` leaves nothing recorded."""
        now = self.clock()
        summary = Summary()
        for attempt in range(3):
            try:
                made = await self._decide(req, now)
                break
            except asyncpg.ForeignKeyViolationError:
                # A resident was erased between the audience query and the budget charge:
                # nothing was recorded; deciding again leaves them out.
                if attempt == 2:
                    raise
        if made is None:
            return Summary(duplicate=True)
        recipients, p = made
        summary.audience = len(recipients)
        decided = [r for r in p.rows if r.status in ("held_for_digest", "suppressed_opted_out")]
        summary.held = sum(r.status == "held_for_digest" for r in p.rows)
        summary.suppressed = sum(r.status == "suppressed_opted_out" for r in p.rows)
        summary.scheduled = sum(r.status == "scheduled" for r in p.rows)
        await self._report(
            [status_event(r.message_id, r.resident_id, r.channel, r.status, r.detail, now)
             for r in decided]
        )  # fmt: skip
        if req.urgent:
            log.warning(
                "notify.urgent_sent",
                notification_id=req.notification_id,
                sender=req.sender,
                recipients=len(recipients),
                over_budget=p.over_budget,
                in_quiet_hours=p.in_quiet_hours,
            )
        summary += await self.send(await outbox.pending_rows(self.pool, req.notification_id))
        await outbox.complete_request(self.pool, req.notification_id, len(recipients), self.clock())
        log.info(
            "notify.request_done",
            notification_id=req.notification_id,
            audience=summary.audience,
            sent=summary.sent,
            held=summary.held,
            scheduled=summary.scheduled,
            failed=summary.failed,
            suppressed=summary.suppressed,
        )
        return summary

    async def _decide(
        self, req: NotificationRequested, now: datetime
    ) -> tuple[list[Recipient], Plan] | None:
        """Step 1 in one transaction; None when the request was already completed."""
        async with self.pool.acquire() as conn, conn.transaction():
            state = await outbox.record_request(conn, req, now)
            if state.completed:
                return None
            criteria = await criteria_for(conn, req.audience)
            await outbox.lock_budget(conn)
            recipients = await resolve(conn, criteria, req.notification_id, now)
            p = plan(req, recipients, now)
            await outbox.insert_rows(conn, p.rows, now)
            await outbox.charge(conn, req.notification_id, p.charged, now)
            await outbox.hold(conn, req.notification_id, p.held, now)
            if req.urgent:
                await outbox.log_urgent(
                    conn, req, len(recipients), p.over_budget, p.in_quiet_hours, now
                )
        return recipients, p

    async def release_due(self, limit: int = 20_000) -> Summary:
        """Send scheduled rows whose time has come (morning after quiet hours, retries)."""
        rows = await outbox.claim_due(self.pool, self.clock(), limit)
        return await self.send(rows)

    # -- sending ----------------------------------------------------------------------------

    async def send(self, rows: Sequence[outbox.PendingRow]) -> Summary:
        """Send pending rows chunk by chunk, as a three-stage pipeline.

        While chunk k is on the wire, chunk k+1 is prepared (identity re-read, reply tokens)
        and chunk k-1's outcomes are written and published, so the SMTP connections never wait
        for the database. The identity rows are read at most one chunk (a few seconds) before
        the send, which is what "checked at send time" means here.
        """
        summary = Summary()
        parts = list(chunks(rows, self.chunk_rows))
        if not parts:
            return summary
        next_prep: asyncio.Task[_Prepared] | None = asyncio.create_task(self._prepare(parts[0]))
        recording: asyncio.Task[Summary] | None = None
        try:
            for i in range(len(parts)):
                assert next_prep is not None
                prepared = await next_prep
                next_prep = None
                if i + 1 < len(parts):
                    next_prep = asyncio.create_task(self._prepare(parts[i + 1]))
                await self._deliver(prepared)
                if recording is not None:
                    summary += await recording
                recording = asyncio.create_task(self._record(prepared))
            if recording is not None:
                summary += await recording
                recording = None
        finally:
            for task in (next_prep, recording):
                if task is not None and not task.done():
                    task.cancel()
        return summary

    async def _template(self, message_id: str) -> tuple[MessageTemplate, bool] | None:
        cached = self._templates.get(message_id)
        if cached is not None:
            return cached
        stored = (await outbox.stored_requests(self.pool, [message_id])).get(message_id)
        if stored is None:
            return None
        entry = (
            MessageTemplate(message_id, stored.subject, stored.body, self.mail_from),
            stored.allow_reply,
        )
        self._templates[message_id] = entry
        while len(self._templates) > 64:
            self._templates.popitem(last=False)
        return entry

    async def _prepare(self, rows: list[outbox.PendingRow]) -> _Prepared:
        """Re-read the residents (opt-out, erasure, current address) and build the messages."""
        now = self.clock()
        residents = sorted({r.resident_id for r in rows})
        people = await outbox.contacts(self.pool, residents)
        prepared = _Prepared(rows, now)
        ready: list[tuple[outbox.PendingRow, str]] = []
        for r in rows:
            person = people.get(r.resident_id)
            if person is None or person.opted_out:
                why = "erased" if person is None else "opted out"
                prepared.results.append(self._result(r, "suppressed_opted_out", 0, why))
                continue
            address = {"email": person.email, "sms": person.phone, "push": r.resident_id}.get(
                r.channel
            )
            if not address:
                prepared.results.append(self._result(r, "failed", 0, f"no {r.channel} address"))
            elif r.channel not in self.channels:
                prepared.results.append(
                    self._result(r, "failed", 0, f"{r.channel} is not configured")
                )
            else:
                ready.append((r, address))
        items = await self._outgoing(ready, people, now)
        for (r, _), item in zip(ready, items, strict=True):
            if item is None:
                prepared.results.append(self._result(r, "failed", 0, "message no longer exists"))
            else:
                prepared.by_channel[r.channel].append((r, item))
        return prepared

    async def _deliver(self, prepared: _Prepared) -> None:
        """Hand each channel its messages (channels run side by side); collect the outcomes."""
        names = list(prepared.by_channel)
        outcomes = await asyncio.gather(
            *(self.channels[n].send_many([it for _, it in prepared.by_channel[n]]) for n in names)
        )
        now = self.clock()
        for name, channel_outcomes in zip(names, outcomes, strict=True):
            for (r, _), outcome in zip(prepared.by_channel[name], channel_outcomes, strict=True):
                prepared.results.append(self._from_outcome(r, outcome, now))

    async def _record(self, prepared: _Prepared) -> Summary:
        """Write a chunk's outcomes (one statement), give back unused budget, publish them."""
        rows, results, now = prepared.rows, prepared.results, self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            await outbox.record_results(conn, results, now)
            await outbox.refund(conn, _unreached(rows, results))
        rounds = {(r.message_id, r.resident_id, r.channel): r.attempts for r in rows}
        events = [
            status_event(x.message_id, x.resident_id, x.channel,
                         "retrying" if x.status == "scheduled" else x.status, x.detail, now,
                         rounds[(x.message_id, x.resident_id, x.channel)] + x.attempts)
            for x in results
        ]  # fmt: skip
        await self._report(events)
        summary = Summary()
        for x in results:
            if x.status == "sent":
                summary.sent += 1
            elif x.status == "scheduled":
                summary.retrying += 1
            elif x.status == "failed":
                summary.failed += 1
            else:
                summary.suppressed += 1
        return summary

    async def _outgoing(
        self,
        ready: Sequence[tuple[outbox.PendingRow, str]],
        people: Mapping[str, outbox.Contact],
        now: datetime,
    ) -> list[Outgoing | None]:
        """Render inputs for each ready row; reply tokens issued in one COPY per chunk."""
        templates: dict[str, tuple[MessageTemplate, bool] | None] = {}
        for r, _ in ready:
            if not r.is_digest and r.message_id not in templates:
                templates[r.message_id] = await self._template(r.message_id)
        digest_pairs = sorted({(r.message_id, r.resident_id) for r, _ in ready if r.is_digest})
        grants: dict[tuple[str, str], TokenGrant] = {}
        for r, _ in ready:
            entry = templates.get(r.message_id)
            key = (r.message_id, r.resident_id)
            if r.is_digest or entry is None or not entry[1] or key in grants:
                continue
            person = people[r.resident_id]
            area = _area(person.cell)
            grants[key] = TokenGrant(r.message_id, r.message_id, r.resident_id, area,
                                     person.ward_code)  # fmt: skip
        async with self.pool.acquire() as conn, conn.transaction():
            tokens = await issue_reply_tokens(conn, list(grants.values()), now)
            digests: dict[tuple[str, str], MessageTemplate] = {}
            if digest_pairs:
                digests = await build_digest_templates(
                    conn, digest_pairs, now, self.mail_from, self.public_base
                )
        links = {key: reply_url(self.public_base, t) for key, t in zip(grants, tokens, strict=True)}
        unsub: dict[str, str] = {}
        out: list[Outgoing | None] = []
        for r, address in ready:
            key = (r.message_id, r.resident_id)
            if r.is_digest:
                template = digests.get(key)
            else:
                entry = templates[r.message_id]
                template = entry[0] if entry is not None else None
            if template is None:
                out.append(None)
                continue
            url = unsub.get(r.resident_id)
            if url is None:
                url = unsub[r.resident_id] = unsubscribe_url(
                    self.public_base, self.unsubscribe_secret, r.resident_id
                )
            out.append(
                Outgoing(r.message_id, r.resident_id, r.channel, address, template, url,
                         links.get(key))
            )  # fmt: skip
        return out

    def _result(
        self, r: outbox.PendingRow, status: str, attempts: int, detail: str | None
    ) -> outbox.Result:
        return outbox.Result(r.message_id, r.resident_id, r.channel, status, attempts, detail)

    def _from_outcome(self, r: outbox.PendingRow, outcome: Outcome, now: datetime) -> outbox.Result:
        # The outbox counts delivery rounds; each round retries in-process with backoff.
        if outcome.ok:
            return self._result(r, "sent", 1, None)
        rounds = r.attempts + 1
        if outcome.transient and rounds < RETRY_ROUNDS:
            due = now + RETRY_BASE * (2 ** (rounds - 1))
            return outbox.Result(r.message_id, r.resident_id, r.channel, "scheduled", 1,
                                 outcome.detail, due)  # fmt: skip
        return self._result(r, "failed", 1 if outcome.attempts else 0, outcome.detail)

    async def _report(self, events: Sequence[NotificationSent]) -> None:
        if not events:
            return
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for e in events:
            counts[(e.channel, e.status)] += 1
        for (channel, status), n in counts.items():
            NOTIFICATIONS.labels(channel=channel, status=status).inc(n)
        await self.publish(events)


def _area(cell: str | None) -> str | None:
    return score_cell_of(cell) if cell else None


def _unreached(
    rows: Sequence[outbox.PendingRow], results: Sequence[outbox.Result]
) -> list[tuple[str, str]]:
    """(message, resident) pairs of non-urgent rows that reached no channel and will not retry."""
    reached: set[tuple[str, str]] = set()
    for x in results:
        if x.status in ("sent", "scheduled"):
            reached.add((x.message_id, x.resident_id))
    return sorted({(r.message_id, r.resident_id) for r in rows if not r.urgent} - reached)
