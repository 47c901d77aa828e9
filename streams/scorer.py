"""The scorer: the one place that sees every cell (percentile ranks are force-wide).

It runs on whichever worker owns the single partition of the ``summaries`` topic. Each batch of
changed cells is merged and its alerts (``officer.alerts``, which depend on their own cell only)
leave at once; then the force is re-scored at event time ``as_of`` (vectorised, see
``scoring.model``), changes are announced (``priority.changed``) and the rows that changed are
written to PostgreSQL. Re-scoring runs for a batch only when the last one is long enough ago
(``COMPUTE_SPACING``), else for the batches since at the next timer tick (0.25 s).

Write policy: a ranking publishes its announcements first, then writes the res-9 cells changed
since the last one (every ``FRESH_EVERY`` at most) and every area whose priority.changed it
announced. The small rank shifts every change causes elsewhere,
the coarse levels and the decay of untouched areas to the new ``as_of`` are written by the
settle timer, in small chunks between batches (so live latency stays low), once input pauses
for ``QUIET_SECONDS`` with no backlog left upstream, or at least every ``SETTLE_EVERY`` seconds
(decay-only rows: after ``IDLE_SECONDS``, and at most once per ``DRIFT_SPACING`` times their
last pass's cost).
``priority_status.settled`` says when every row is exact. History: every written row is also
the snapshot of its event-time day; each settle completes the snapshot of the current day
(during a fast backfill, days the scorer never settled on have the touched areas only).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg

from lpt.logs import get_logger
from lpt.settings import Settings
from schemas.envelope import Envelope, deterministic_id
from schemas.priority import OfficerAlert, PriorityChanged, Reason
from streams import pg
from streams.refdata import load_reference_data
from streams.scoring import decay
from streams.scoring.cellstate import CellState
from streams.scoring.config import (
    ALERT_NEAR_REPEAT_DAYS,
    ALERT_RECENT_DAYS,
    DAY,
    HARM_HALF_LIFE,
    HARM_SPIKE_MIN_DAYS,
    HARM_SPIKE_RATIO,
)
from streams.scoring.model import (
    H3_LEVELS,
    LEVELS,
    PriorityModel,
    RowBuilder,
    Tables,
    iso_date,
)

log = get_logger(__name__)

SOURCE = "lpt-streams"
#: Input pause after which rows whose score or rank moved are written...
QUIET_SECONDS = 1.0
#: ...and after which every row is brought to the latest as_of (decay only).
IDLE_SECONDS = 2.0
#: Deferred rows are written at least this often while input keeps flowing.
SETTLE_EVERY = 60.0
#: Member cells read per settle step and rows per step of the changed cells (each step runs
#: between batches, so it bounds how long a batch may wait: ~1 ms per cell with a year of
#: state).
SETTLE_CHUNK = 100
FRESH_CHUNK = 100
#: Rows of the cells batches changed are written at most this often (seconds): a busy cell
#: changes several times a second, and each row costs ~0.2 ms to build (measured at 1,000
#: events/s over a year of state: 0.94 distinct cells per event within 0.25 s, 0.65 within 2 s).
FRESH_EVERY = 2.0
#: ...and while batches keep coming, a pass over them is followed by a pause this many times as
#: long as it took (at least ``FRESH_EVERY``): in a backfill every cell changes between passes
#: and a pass takes seconds; rows rewritten that often would take the time the batches need.
FRESH_SPACING = 4.0
#: A pass bringing decay-only rows to the new ``as_of`` (every area of the force: seconds of CPU
#: at a force's size) is followed by at least this many times its cost before the next one.
#: Why: under a trickle of events (one every few seconds, e.g. at night) every pause would
#: otherwise rewrite the whole force; a busy moment's rows are written at once regardless.
DRIFT_SPACING = 10.0
#: Row writes queued behind the one in flight before a timer step waits for PostgreSQL (it
#: waits without the lock, see ``Scorer._room``)...
MAX_QUEUED_WRITES = 4
#: ...and before a batch does (under the lock: every batch behind it waits). A batch queues one
#: write per ranking, a few a second, so this covers PostgreSQL pausing for several seconds
#: (e.g. a WAL fsync behind the kernel flushing Kafka's writes); beyond it, a PostgreSQL that
#: is away holds the batches back. (The 1.4-1.9 s live stalls first blamed on such pauses were
#: Faust's fetch wait, see ``streams.faustfix``.)
MAX_QUEUED_BATCH_WRITES = 32
#: A row write, a changelog write or a batch's wait for the lock taking longer than this is
#: logged (``streams.scorer_write_slow``, ``..._changelog_slow``, ``..._batch_waiting``).
SLOW_SECONDS = 0.5
#: A batch re-ranks the force only if the last ranking began at least this many times its
#: duration ago (else the settle timer does it, within 0.25 s): ranking takes at most a third
#: of the scorer's time however fast summaries arrive.
COMPUTE_SPACING = 3.0
#: A ranking that finds at least this share of the force's cells changed since the previous one
#: is part of a bulk load (a backfill, a replay; live, a ranking sees a few hundred cells at
#: most): rankings and fresh rows are then spaced ``BULK_SPACING`` times further apart, so the
#: scorer leaves the CPU to the stages that feed it (measured: 74% of a core in a backfill,
#: with the stages on the critical path).
BULK_SHARE = 0.25
BULK_SPACING = 3.0

#: While input pauses, the stages upstream are asked at most this often (seconds) whether
#: they still hold a backlog (``upstream_busy``).
UPSTREAM_CHECK_SECONDS = 0.5

Publish = Callable[[Sequence[Envelope]], Awaitable[None]]
UpstreamBusy = Callable[[], Awaitable[bool]]
Summary = tuple[str, int, CellState]


class TracedLock(asyncio.Lock):
    """The scorer's lock, remembering which task holds it: when a batch waits for it too long,
    the holder's await chain is logged (``streams.scorer_batch_waiting``), naming what held
    the batch up."""

    holder: asyncio.Task[Any] | None = None

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self.holder = asyncio.current_task()
        return True

    def release(self) -> None:
        self.holder = None
        super().release()

    def holder_chain(self) -> list[str]:
        """``function:line`` of each coroutine the holder is suspended in, outermost first."""
        chain: list[str] = []
        awaitable: Any = self.holder.get_coro() if self.holder is not None else None
        while awaitable is not None and len(chain) < 16:
            frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
            if frame is not None:
                chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            awaitable = getattr(awaitable, "cr_await", None) or getattr(
                awaitable, "gi_yieldfrom", None
            )
        return chain


async def _never_busy() -> bool:
    return False


class Scorer:
    """``upstream_busy``: whether the stages feeding the scorer still hold a backlog. A pause
    in input counts as quiet (settle the deferred rows) or idle (decay them) only when it says
    no: in a backfill the cells stage waits seconds between its big batches
    (``stages.catch_up``), and the scorer rewriting every deferred row at each such gap took
    the CPU the backfill needed (PostgreSQL rows per event 0.04 -> 0.06 at 1 s gaps)."""

    def __init__(
        self, settings: Settings, publish: Publish, upstream_busy: UpstreamBusy = _never_busy
    ) -> None:
        self.settings = settings
        self.publish = publish
        self.upstream_busy = upstream_busy
        #: (when upstream was last asked, its answer)
        self._upstream: tuple[float, bool] = (-math.inf, False)
        self.model: PriorityModel | None = None
        self.pool: asyncpg.Pool | None = None
        self.written: dict[tuple[str, str], tuple[float, int, bool, float]] = {}
        self.announced: dict[tuple[str, str], tuple[float, bool]] = {}
        self.lock = TracedLock()
        self.last_batch = 0.0
        self.last_settle = time.monotonic()
        self.next_fresh = 0.0
        #: When decay-only rows may be rewritten next, and the CPU the current pass took.
        self.next_drift = 0.0
        self.drift_cost = 0.0
        self.unsettled = False
        self.tables: Tables | None = None
        #: (tables the list was computed for, material, drift) - reused across settle chunks
        self._pending: tuple[Tables, list[tuple[str, str]], list[tuple[str, str]]] | None = None
        #: Row writes queued or in flight, oldest first (each waits for the one before).
        self._writes: list[asyncio.Task[None]] = []
        #: Coarse areas (res 8 and 7, ward, authority, force) whose members changed, with the
        #: batch generation that changed them. Their score and rank may not move when their
        #: components do, so the (score, rank) comparison of ``_differing`` alone misses them.
        self.dirty: dict[tuple[str, str], int] = {}
        #: Res-9 cells changed by a batch whose rows are not written yet (oldest first).
        self.fresh: dict[tuple[str, str], None] = {}
        self.generation = 0
        self._tables_gen = 0
        #: Batches merged since the force was last ranked (``_recompute``), and their cells.
        self.compute_due = False
        self.touched: set[str] = set()
        self.next_compute = 0.0
        #: Spacing factor: ``BULK_SPACING`` while the last ranking was part of a bulk load.
        self.spacing = 1.0

    @property
    def active(self) -> bool:
        return self.model is not None

    async def _conn_pool(self) -> asyncpg.Pool:
        if self.pool is None:
            self.pool = await asyncpg.create_pool(self.settings.dsn, min_size=1, max_size=2)
            assert self.pool is not None
        return self.pool

    async def activate(self, stored: Iterable[Summary]) -> None:
        """Become the scorer: reference data, what PostgreSQL already shows, and the cells'
        latest states (from the scorer's own table, restored by Faust)."""
        pool = await self._conn_pool()
        async with pool.acquire() as conn:
            reference = await load_reference_data(conn, self.settings)
            self.written = await pg.load_written(conn)
            self.announced = await pg.load_announced(conn)
        model = PriorityModel(reference)
        n = 0
        for cell, seq, state in stored:
            model.merge(cell, seq, state)
            n += 1
        self.model = model
        # Tables now, not at the first batch: a scorer taking over an idle pipeline must still
        # settle what its predecessor left unwritten. Every area is rewritten once: a batch's
        # write runs after its offsets may be committed, so a crash can lose rows whose score
        # and rank look unchanged (only their components differ).
        self.tables = model.compute()
        self._tables_gen = self.generation
        for level in LEVELS:
            for area in self.tables.levels[level].ids:
                self.dirty.setdefault((level, area), self.generation)
        self._pending = None
        self.unsettled = True
        log.info("streams.scorer_active", cells=n, rows=len(self.written))

    def deactivate(self) -> None:
        self.model = None
        self.tables = None
        self.compute_due, self.touched = False, set()

    async def close(self) -> None:
        await self._flush()
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    # ------------------------------------------------------------------ batches

    async def on_batch(self, summaries: Sequence[Summary]) -> None:
        waiting = None
        if self.lock.locked():
            waiting = asyncio.get_running_loop().call_later(
                SLOW_SECONDS,
                lambda: log.warning(
                    "streams.scorer_batch_waiting",
                    seconds=SLOW_SECONDS,
                    holder=self.lock.holder_chain(),
                ),
            )
        async with self.lock:
            if waiting is not None:
                waiting.cancel()
            model = self.model
            assert model is not None, "activate() first"
            before = {cell: self._before(model, cell) for cell, _, _ in summaries}
            touched = {cell for cell, seq, state in summaries if model.merge(cell, seq, state)}
            touched = {c for c in touched if not c.startswith("_")}
            self.generation += 1
            gen = self.generation
            for key in self._ancestors(model, touched):
                self.dirty[key] = gen
            # Alerts depend on their own cell only: they leave before the force is re-ranked.
            now = model.as_of() or 0.0
            alerts = self._alerts(model, now, touched, before)
            if alerts:
                await self.publish(alerts)
            self.unsettled = True
            self.touched.update(touched)
            self.compute_due = True
            if time.monotonic() >= self.next_compute:
                await self._recompute()
            self.last_batch = time.monotonic()

    async def _recompute(self) -> None:
        """Re-rank the force with every batch merged so far, announce what changed, queue the
        rows (under the lock). Batches call it at most every ``COMPUTE_SPACING`` times its cost,
        the timer otherwise: re-ranking the whole force for each batch of a backfill took the
        core the stages needed, and live it held up the next batch's alerts."""
        model = self.model
        assert model is not None
        started = time.monotonic()
        touched, self.touched = self.touched, set()
        self.compute_due = False
        bulk = len(touched) >= BULK_SHARE * len(model.cells)
        self.spacing = BULK_SPACING if bulk else 1.0
        gen = self.generation
        tables = model.compute(model.as_of() or 0.0)
        self.tables, self._tables_gen = tables, gen
        changed = self._changes(tables)
        # Then the announcements (what officers wait for next), with just their rows...
        announced = {key for key, _ in changed}
        rows = self._rows(model, tables, announced)
        row_of = {(r["level"], r["area_id"]): r for r in rows}
        events: list[Envelope] = [
            self._change_event(model, tables, key, change, row_of) for key, change in changed
        ]
        if events:
            await self.publish(events)
        # ...then the res-9 cells the batches changed, in chunks between batches (``tick``):
        # building their rows here would hold up the next batch's announcements. Everything
        # else (rank shifts elsewhere, coarser levels, the day's snapshot) is settled later.
        self.fresh.update(dict.fromkeys(sorted({("res9", c) for c in touched} - announced)))
        # The write runs while the next batch gathers: a crash before it lands loses
        # nothing, because an activating scorer rewrites every row once (see activate).
        announced_keys = [key for key, _ in changed]
        write = self._write(rows, tables, announced_keys, gen)
        await self._queue_write(write, MAX_QUEUED_BATCH_WRITES)
        self.next_compute = started + (time.monotonic() - started) * COMPUTE_SPACING * self.spacing

    async def _flush(self) -> None:
        """Wait until every queued row write has landed."""
        while self._writes:
            await self._writes.pop(0)

    async def _queue_write(
        self, write: Coroutine[Any, Any, None], limit: int = MAX_QUEUED_WRITES
    ) -> None:
        """Queue a row write behind the others (they land in order, one at a time). Waits only
        when ``limit`` are queued: until then a slow or restarting PostgreSQL does not hold up
        the next batch's alerts and announcements (they go to Kafka). A write that failed
        fails this call, so the batch fails and the process restarts (``guard``)."""
        for task in [t for t in self._writes if t.done()]:
            task.result()
        self._writes = [t for t in self._writes if not t.done()]
        if len(self._writes) >= limit:
            started = time.monotonic()
            while len(self._writes) >= limit:
                await self._writes.pop(0)
            log.warning(
                "streams.scorer_waited_for_postgres",
                seconds=round(time.monotonic() - started, 3),
                limit=limit,
            )
        previous = self._writes[-1] if self._writes else None
        self._writes.append(asyncio.create_task(_after(previous, write)))

    async def _room(self, free: int = 2) -> None:
        """Wait, *without* the lock, until at most ``MAX_QUEUED_WRITES - free`` row writes are
        queued. The timer's steps call it before taking the lock: a step that waited for
        PostgreSQL while holding the lock held up every batch behind it (measured: a live
        probe's alert 0.45-1.6 s late while the minutely settle's writes queued up)."""
        while True:
            pending = [t for t in self._writes if not t.done()]
            if len(pending) <= MAX_QUEUED_WRITES - free:
                return
            await asyncio.wait(pending[:1])

    async def tick(self) -> None:
        """Timer: write deferred rows in chunks, a batch going first whenever one waits. The
        cells batches changed go first (every ``FRESH_EVERY``); then rows whose score, rank or
        top flag moved, once input pauses for ``QUIET_SECONDS`` (or every ``SETTLE_EVERY``);
        rows that only need the newer ``as_of`` (decay) wait for a longer pause, so a backfill
        does not rewrite the whole force between its batches, and for ``DRIFT_SPACING`` times
        the cost of the last such pass, so a trickle of events does not either."""
        if self.compute_due and self.model is not None:
            async with self.lock:
                if self.compute_due and self.model is not None:
                    await self._recompute()
        quiet = await self._paused_for() >= QUIET_SECONDS
        if self.fresh and (quiet or time.monotonic() >= self.next_fresh):
            started = time.monotonic()
            while self.fresh and self.model is not None:
                await self._room()
                await self._write_fresh()
                await asyncio.sleep(0)  # a batch waiting for the lock runs now
            took = time.monotonic() - started
            spacing = max(FRESH_EVERY, took * FRESH_SPACING * self.spacing)
            self.next_fresh = time.monotonic() + spacing
        while await self._settle_step():
            await asyncio.sleep(0)

    async def _paused_for(self) -> float:
        """Seconds since the last batch, or 0 while the stages upstream still hold a backlog
        (asked at most every ``UPSTREAM_CHECK_SECONDS``, and only once input has paused)."""
        paused = time.monotonic() - self.last_batch
        if paused < QUIET_SECONDS:
            return paused
        asked, busy = self._upstream
        if time.monotonic() - asked >= UPSTREAM_CHECK_SECONDS:
            busy = await self.upstream_busy()
            self._upstream = (time.monotonic(), busy)
        return 0.0 if busy else paused

    async def _settle_step(self) -> bool:
        """One settle chunk; True while there is more to settle now."""
        if not self.unsettled or self.model is None or self.tables is None:
            return False
        if self.fresh or self.compute_due:  # those go first (``tick``)
            return False
        idle_for = await self._paused_for()
        overdue = time.monotonic() - self.last_settle >= SETTLE_EVERY
        if not (idle_for >= QUIET_SECONDS or overdue) or self.lock.locked():
            return False
        await self._room()
        async with self.lock:
            model, tables = self.model, self.tables
            if model is None or tables is None:
                return False
            if self._pending is None or self._pending[0] is not tables:
                material_set, drift_set = self._differing(tables)
                self._pending = (tables, sorted(material_set), sorted(drift_set))
            _, material, drift = self._pending
            wanted, drifting = material, False
            if not wanted and (idle_for >= IDLE_SECONDS or overdue):
                drifting = time.monotonic() >= self.next_drift
                wanted = drift if drifting else []
            started = time.monotonic()
            chunk, cost = self._take_chunk(tables, wanted)
            gen = self._tables_gen
            if cost > SETTLE_CHUNK and len(chunk) == 1:
                (level, area) = next(iter(chunk))
                big = model.row_builder(tables, level, tables.levels[level].index()[area])
            else:
                big = None
                if chunk:
                    rows = self._rows(model, tables, chunk)
                    await self._queue_write(self._write(rows, tables, [], gen))
                if drifting:
                    self.drift_cost += time.monotonic() - started
                if material or drift:
                    return bool(chunk)
                # Settled once every queued write has landed (waited for below, without the
                # lock). The status write is queued (``_queue_write`` also raises a failed
                # write's error), so a batch's write queued after it lands after it.
                landed = all(t.done() for t in self._writes)
                if landed:
                    if self.drift_cost:
                        self.next_drift = time.monotonic() + self.drift_cost * DRIFT_SPACING
                        self.drift_cost = 0.0
                    self.unsettled = False
                    self.last_settle = time.monotonic()
                    await self._queue_write(self._status(tables, settled=True))
        if big is not None:
            return await self._settle_big(big, model, gen, drifting)
        if not landed:
            await self._room(free=MAX_QUEUED_WRITES)
        return not landed

    async def _settle_big(
        self, big: RowBuilder, model: PriorityModel, gen: int, drifting: bool
    ) -> bool:
        """A coarse area summing thousands of cells (the force row reads them all: about half
        a second with a year of state), built a slice at a time without the lock so batches
        run in between; from the snapshot ``big`` took, so it matches the tables it ranks."""
        spent = 0.0
        while not big.complete:
            started = time.monotonic()
            big.add(SETTLE_CHUNK)
            spent += time.monotonic() - started
            await asyncio.sleep(0)
        started = time.monotonic()
        row = big.finish()
        if drifting:
            self.drift_cost += spent + time.monotonic() - started
        await self._room()
        async with self.lock:
            if self.model is not model:  # deactivated meanwhile: not ours to write any more
                return False
            await self._queue_write(self._write([row], big.tables, [], gen))
        return True

    @staticmethod
    def _take_chunk(
        tables: Tables, wanted: list[tuple[str, str]]
    ) -> tuple[set[tuple[str, str]], int]:
        """Remove and return the next areas of ``wanted`` worth about ``SETTLE_CHUNK`` cells of
        work, and that work (a coarse area's row reads every member cell, so counting areas
        would let one step hold up batches for a second; an area bigger than that comes alone,
        and ``_settle_step`` builds it in slices)."""
        taken: set[tuple[str, str]] = set()
        cost = 0
        while wanted and (not taken or cost < SETTLE_CHUNK):
            area_cost = _cost(tables, *wanted[0])
            if taken and area_cost > SETTLE_CHUNK:
                break
            taken.add(wanted.pop(0))
            cost += area_cost
        return taken, cost

    async def _write_fresh(self) -> None:
        """One chunk of the cells batches changed (held under the lock only while its rows
        are built: a waiting batch goes next)."""
        async with self.lock:
            model, tables = self.model, self.tables
            if model is None or tables is None:
                return
            chunk = list(itertools.islice(self.fresh, FRESH_CHUNK))
            for key in chunk:
                del self.fresh[key]
            rows = self._rows(model, tables, set(chunk))
            await self._queue_write(self._write(rows, tables, [], self._tables_gen))

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _before(model: PriorityModel, cell: str) -> tuple[list[float] | None, float | None]:
        state = model.states.get(cell)
        if state is None:
            return None, None
        own = [e[0] for e in state.get("nr") or [] if e[1] == 0]
        return state.get("h"), max(own) if own else None

    def _alerts(
        self,
        model: PriorityModel,
        now: float,
        touched: set[str],
        before: dict[str, tuple[list[float] | None, float | None]],
    ) -> list[OfficerAlert]:
        """Near-repeat and harm-spike alerts of the touched cells at event time ``now``."""
        alerts: list[OfficerAlert] = []
        for cell in sorted(touched):
            state = model.states[cell]
            old_harm, old_burglary = before.get(cell, (None, None))
            own = [e[0] for e in state.get("nr") or [] if e[1] == 0]
            newest = max(own) if own else None
            i = model.index[cell]
            ward, la = model.ward_of[i], model.la_of[i]
            if (
                newest is not None
                and (old_burglary is None or newest > old_burglary)
                and now - newest <= ALERT_RECENT_DAYS * DAY
            ):
                alerts.append(
                    OfficerAlert(
                        alert_id=f"nr-{cell}-{int(newest)}",
                        event_id=deterministic_id("officer.alert", "nr", cell, str(int(newest))),
                        occurred_at=_dt(newest),
                        source=SOURCE,
                        kind="near_repeat",
                        cell=cell,
                        ward_code=ward,
                        local_authority_code=la,
                        severity="warning",
                        message=(
                            f"Burglary on {iso_date(newest)} in this area: raised risk of "
                            "another within 400 m for two weeks. Short visible patrols and "
                            "crime-prevention visits nearby are advised."
                        ),
                        valid_until=iso_date(newest + ALERT_NEAR_REPEAT_DAYS * DAY),
                    )
                )
            h = state.get("h")
            if h is None:
                continue
            new_value = decay.value_at(h, now, HARM_HALF_LIFE)
            old_value = decay.value_at(old_harm, now, HARM_HALF_LIFE) if old_harm else 0.0
            added = new_value - old_value
            if (
                added >= HARM_SPIKE_MIN_DAYS
                and added >= HARM_SPIKE_RATIO * old_value
                and now - h[1] <= ALERT_RECENT_DAYS * DAY
            ):
                day = iso_date(h[1]) or ""
                alerts.append(
                    OfficerAlert(
                        alert_id=f"hs-{cell}-{day}",
                        event_id=deterministic_id("officer.alert", "hs", cell, day),
                        occurred_at=_dt(h[1]),
                        source=SOURCE,
                        kind="harm_spike",
                        cell=cell,
                        ward_code=ward,
                        local_authority_code=la,
                        severity="urgent" if added >= 4 * HARM_SPIKE_MIN_DAYS else "warning",
                        message=(
                            f"Sudden rise in crime harm here: {added:,.0f} harm-days added on "
                            f"{day}, against {old_value:,.0f} before."
                        ),
                        valid_until=iso_date(h[1] + ALERT_RECENT_DAYS * DAY),
                    )
                )
        return alerts

    def _changes(self, tables: Tables) -> list[tuple[tuple[str, str], str]]:
        """Areas entering or leaving the top share, or whose score moved more than the
        configured threshold since it was last announced."""
        threshold = self.settings.score_change_threshold
        out: list[tuple[tuple[str, str], str]] = []
        for level in H3_LEVELS:
            t = tables.levels[level]
            top = t.in_top
            for i, area in enumerate(t.ids):
                key = (level, area)
                score, in_top = float(t.score[i]), bool(top[i])
                prev = self.announced.get(key)
                if prev is None:
                    if in_top:
                        out.append((key, "entered_top"))
                    else:
                        self.announced[key] = (score, False)  # baseline, nothing to say
                    continue
                if in_top != prev[1]:
                    out.append((key, "entered_top" if in_top else "left_top"))
                elif abs(score - prev[0]) > threshold:
                    out.append((key, "score_moved"))
        return out

    def _change_event(
        self,
        model: PriorityModel,
        tables: Tables,
        key: tuple[str, str],
        change: str,
        row_of: dict[tuple[str, str], dict[str, Any]],
    ) -> PriorityChanged:
        level, area = key
        row = row_of.get(key) or model.row(tables, level, tables.levels[level].index()[area])
        prev = self.announced.get(key)
        self.announced[key] = (row["score"], row["in_top"])
        return PriorityChanged(
            event_id=deterministic_id(
                "priority.changed", level, area, change, repr(tables.as_of), f"{row['score']:.9f}"
            ),
            occurred_at=_dt(tables.as_of),
            source=SOURCE,
            cell=area,
            resolution=H3_LEVELS[level],
            score_before=prev[0] if prev else None,
            score_after=row["score"],
            rank=row["rank"],
            cells_ranked=row["areas_ranked"],
            change=change,
            reasons=[Reason(**r) for r in row["reasons"]],
            ward_code=row["ward_code"],
            local_authority_code=row["local_authority_code"],
        )

    @staticmethod
    def _ancestors(model: PriorityModel, cells: set[str]) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        for cell in cells:
            i = model.index[cell]
            for key in (
                ("res8", model.parent_of[8][i]),
                ("res7", model.parent_of[7][i]),
                ("ward", model.ward_of[i]),
                ("local_authority", model.la_of[i]),
                ("force", model.ref.force_name),
            ):
                if key[1]:
                    out.add((key[0], str(key[1])))
        return out

    def _differing(self, tables: Tables) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """Areas whose written row is not the current one: (score, rank or top moved, never
        written, or a member changed; only the event time moved)."""
        material: set[tuple[str, str]] = set()
        for key in list(self.dirty):
            if key[1] in tables.levels[key[0]].index():
                material.add(key)
            else:  # not an area at this level (any more): nothing to write
                del self.dirty[key]
        drift: set[tuple[str, str]] = set()
        as_of = tables.as_of
        for level in LEVELS:
            t = tables.levels[level]
            top = t.in_top.tolist()
            scores = t.score.tolist()
            ranks = t.rank.tolist()
            written = self.written
            for i, area in enumerate(t.ids):
                w = written.get((level, area))
                if w is None or w[0] != scores[i] or w[1] != ranks[i] or w[2] != top[i]:
                    material.add((level, area))
                elif abs(w[3] - as_of) > 1e-3:
                    drift.add((level, area))
        return material, drift

    @staticmethod
    def _rows(
        model: PriorityModel, tables: Tables, wanted: set[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        rows = []
        for level in LEVELS:
            t = tables.levels[level]
            index = t.index()
            for lv, area in sorted(k for k in wanted if k[0] == level):
                i = index.get(area)
                if i is not None:
                    rows.append(model.row(tables, lv, i))
        return rows

    async def _write(
        self,
        rows: list[dict[str, Any]],
        tables: Tables,
        announced: list[tuple[str, str]],
        gen: int,
    ) -> None:
        """Write rows built from the tables of batch generation ``gen``."""
        ann = [
            (level, area, *self.announced[(level, area)], tables.as_of) for level, area in announced
        ]
        delay = 0.5
        started = time.monotonic()
        while True:
            try:
                pool = await self._conn_pool()
                async with pool.acquire() as conn:
                    await pg.write_rows(conn, rows)
                    await pg.write_announced(conn, ann)
                    await pg.write_status(
                        conn, tables.as_of, not self.unsettled, len(tables.levels["res9"].ids)
                    )
                break
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
                # PostgreSQL is the query side: wait for it, never drop the write.
                log.warning("streams.pg_retry", error=str(exc)[:200], delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        took = time.monotonic() - started
        if took > SLOW_SECONDS:
            log.warning("streams.scorer_write_slow", seconds=round(took, 3), rows=len(rows))
        for r in rows:
            key = (r["level"], r["area_id"])
            self.written[key] = (r["score"], r["rank"], r["in_top"], r["as_of"])
            if self.dirty.get(key, gen + 1) <= gen:
                del self.dirty[key]

    async def _status(self, tables: Tables, settled: bool) -> None:
        pool = await self._conn_pool()
        async with pool.acquire() as conn:
            await pg.write_status(conn, tables.as_of, settled, len(tables.levels["res9"].ids))


def _cost(tables: Tables, level: str, area: str) -> int:
    """Member cells an area's row reads (1 for a res-9 cell or an area gone from the tables)."""
    t = tables.levels[level]
    i = t.index().get(area)
    return 1 if level == "res9" or i is None else max(1, len(t.members[i]))


async def _after(previous: asyncio.Task[None] | None, write: Coroutine[Any, Any, None]) -> None:
    """Run ``write`` once ``previous`` has landed (never, if it failed)."""
    try:
        if previous is not None:
            await previous
    except BaseException:
        write.close()
        raise
    await write


def _dt(t: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=t)
