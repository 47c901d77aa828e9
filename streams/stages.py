"""The partitioned Faust stages, each processing a *batch* of Kafka messages (the input stage,
which reads the input topics and fills ``entities``, is :mod:`streams.source`):

2. ledger (``entities``, keyed by entity): dedupe by event id, apply versions, opt-outs and
   replacements against the entity's ledger entry, send the resulting cell deltas batched to the
   ``deltas`` topic;
3. cells  (``deltas``, keyed by res-9 cell): apply the deltas to the cells' states, touching each
   cell once per batch, and send the changed states to the scorer.

At-least-once, made exact: every stage *first* sends its output and waits for the broker's
acknowledgement, *then* writes its table; Faust commits input offsets only after that. A crash
in between repeats work, and repetition is harmless: ledgers recognise event ids, and each cell
keeps a watermark of the ledger positions it has applied (a re-sent delta is skipped), stored in
the same table value as the state it guards.

Watermarks need each partition's messages in offset order, and Faust does not always deliver
them so: after a rebalance its consumer has handed a stage a partition's later messages and
the skipped one only after a restart (seen in the two-kill fault test: a ledger sent deltas of
entities offset 12 before those of offset 5, so the cell took offset 5's as already applied).
So each stage stores, beside its rows, the next offset it expects per input partition
(:class:`InputOrder`), and a batch that skips one restarts the process, which then reads again
from the committed offset (``streams.faustfix`` keeps commits from passing the skipped message).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import faust
import orjson

from lpt.logs import get_logger
from lpt.metrics import EVENTS_DUPLICATE
from streams.faustio import (
    TableWriter,
    dumps,
    read_many,
    send_all,
    send_chunked,
    send_lines,
)
from streams.items import partition_for
from streams.ledgers import apply_item, table_for
from streams.scoring.cellstate import (
    already_applied,
    apply_delta,
    decode_state,
    encode_summary,
    mark_applied,
    new_state,
    thaw,
)
from streams.watchdog import restart_process

log = get_logger(__name__)

_MISSING = object()
#: Table key of a partition's next expected input offset (no entity or cell has this name).
NEXT_KEY = "__lpt_next_offset__"
#: Bits of a delta position: offset << 24 | item index << 6 | per-cell sequence in the item.
_ITEM_BITS, _SUB_BITS = 18, 6

Table = faust.types.TableT[bytes, bytes]


class InputOrder:
    """The next input offset per partition, kept in a stage's table (see module docstring)."""

    def __init__(self, table: Table, topic: str) -> None:
        self.table = table
        self.topic = topic

    def check(self, events: list[Any]) -> dict[int, tuple[Any, int]]:
        """{partition: (last event, next offset to store)}; restarts the process when the
        batch skips a message of a partition."""
        out: dict[int, tuple[Any, int]] = {}
        for ev in events:
            partition, offset = ev.message.partition, ev.message.offset
            if partition in out:
                expected = out[partition][1]
            else:
                raw = read_many(self.table, ev, [NEXT_KEY])[0]
                expected = int(raw) if raw is not None else offset
            if offset > expected:
                log.error(
                    "streams.input_skipped_restarting",
                    topic=self.topic,
                    partition=partition,
                    expected=expected,
                    offset=offset,
                )
                restart_process()
            out[partition] = (ev, max(expected, offset + 1))
        return out

    @staticmethod
    def rows(checked: dict[int, tuple[Any, int]]) -> list[tuple[Any, str, bytes]]:
        return [(ev, NEXT_KEY, b"%d" % nxt) for ev, nxt in checked.values()]


class LedgerStage:
    """Per-entity ledgers -> cell deltas with positions (see module docstring)."""

    def __init__(
        self,
        tables: dict[str, Table],
        writers: dict[str, TableWriter],
        deltas: faust.types.TopicT,
        partitions: int,
        group: str,
    ) -> None:
        self.tables = tables
        self.writers = writers
        self.deltas = deltas
        self.partitions = partitions
        self.group = group
        self.order = InputOrder(tables["incidents"], "entities")
        #: ``deltas`` partition per cell (a force has a few tens of thousands of cells).
        self.partition_of: dict[str, int] = {}
        #: Batches in progress, and when the last one ended (see :meth:`producing`).
        self.running = 0
        self.last_end = -float("inf")

    def producing(self, within: float) -> bool:
        """True while a batch is in progress or one ended less than ``within`` seconds ago:
        the stage still has input to turn into deltas."""
        return self.running > 0 or time.monotonic() - self.last_end < within

    async def process(self, events: list[Any]) -> None:
        self.running += 1
        try:
            await self._process(events)
        finally:
            self.running -= 1
            self.last_end = time.monotonic()

    async def _process(self, events: list[Any]) -> None:
        checked = self.order.check(events)
        entries: dict[tuple[str, str], Any] = {}
        dirty: dict[tuple[str, str], Any] = {}  # key -> event of the key's partition
        out: dict[tuple[int, int], list[Any]] = defaultdict(list)
        duplicates = 0
        partition_of = self.partition_of
        for ev in events:
            source = ev.message.partition
            base = ev.message.offset << (_ITEM_BITS + _SUB_BITS)
            items = orjson.loads(ev.message.value)["i"]
            self._prefetch(ev, items, entries)
            for idx, item in enumerate(items):
                key = (table_for(item[0]), item[2])
                entry = entries[key]
                new_entry, deltas = apply_item(entry, item)
                if new_entry is None:
                    duplicates += not deltas
                    entries[key] = entry
                    continue
                entries[key] = new_entry
                dirty[key] = ev
                sub: dict[str, int] = defaultdict(int)
                for cell, delta in deltas:
                    position = base | (idx << _SUB_BITS) | sub[cell]
                    sub[cell] += 1
                    partition = partition_of.get(cell)
                    if partition is None:
                        partition = partition_of[cell] = partition_for(cell, self.partitions)
                    out[(source, partition)].append([cell, position, delta])
        pending: list[Any] = []
        for (source, partition), deltas in sorted(out.items()):
            head = b'{"src":"l%d","d":' % source
            await send_chunked(self.deltas, partition, head, deltas, pending)
        await send_all(pending)
        rows: dict[str, list[tuple[Any, str, bytes]]] = defaultdict(list)
        rows["incidents"] = self.order.rows(checked)
        for key, ev in dirty.items():
            rows[key[0]].append((ev, key[1], orjson.dumps(entries[key])))
        for name, table_rows in rows.items():
            await self.writers[name].write(table_rows)
        if duplicates:
            EVENTS_DUPLICATE.labels(group=self.group, topic="entities").inc(duplicates)

    def _prefetch(self, ev: Any, items: list[Any], entries: dict[tuple[str, str], Any]) -> None:
        """Read the ledger entries of a message's entities not read yet (one multi-get per
        table; all keys of a message live in the message's partition)."""
        wanted: dict[str, list[str]] = defaultdict(list)
        for item in items:
            name = table_for(item[0])
            if (name, item[2]) not in entries:
                entries[(name, item[2])] = _MISSING
                wanted[name].append(item[2])
        for name, keys in wanted.items():
            for key, raw in zip(keys, read_many(self.tables[name], ev, keys), strict=True):
                entries[(name, key)] = None if raw is None else orjson.loads(raw)


#: A cells batch of at least this many deltas comes from a backlog (a backfill, a replay, a
#: burst; live, a batch holds tens): the cells stage then waits for the ledger to catch up
#: before taking the next one (:func:`catch_up`).
BACKLOG_DELTAS = 5_000
#: The longest such wait (seconds), and how recently the ledger must have ended a batch to
#: count as still producing. Why wait: a cell's whole state is encoded, changelogged, sent to
#: the scorer, decoded and merged there once per batch that touches it, however many deltas
#: it took (0.1-0.2 ms of CPU per state in all, measured with ``benchmarks/stream_backfill.py``);
#: while the cells stage waits, the ledger (same process, same core) fills the next batch, so
#: each state is written after more deltas. The wait ends as soon as the ledger has nothing
#: left, so the end of a backlog is not delayed; live batches never wait.
CATCH_UP_LONGEST = 3.0
LEDGER_IDLE = 0.05


async def catch_up(ledger: LedgerStage, deltas: int) -> float:
    """After a cells batch of ``deltas`` deltas: if it came from a backlog, wait while the
    ledger keeps producing (at most ``CATCH_UP_LONGEST``). Returns the seconds waited."""
    if deltas < BACKLOG_DELTAS:
        return 0.0
    started = time.monotonic()
    while ledger.producing(LEDGER_IDLE) and time.monotonic() - started < CATCH_UP_LONGEST:
        await asyncio.sleep(LEDGER_IDLE)
    return time.monotonic() - started


class CellStage:
    """Apply deltas to res-9 cell states; each changed cell is written and sent once."""

    def __init__(self, cells: Table, writer: TableWriter, summaries: faust.types.TopicT) -> None:
        self.cells = cells
        self.writer = writer
        self.summaries = summaries
        self.order = InputOrder(cells, "deltas")

    async def process(self, events: list[Any]) -> int:
        """The batch's deltas, applied; returns how many it held."""
        checked = self.order.check(events)
        states: dict[str, Any] = {}
        count = 0
        event_of: dict[str, Any] = {}
        changed: set[str] = set()
        for ev in events:
            msg = orjson.loads(ev.message.value)
            source = msg["src"]
            count += len(msg["d"])
            fresh = list(dict.fromkeys(d[0] for d in msg["d"] if d[0] not in states))
            for cell, raw in zip(fresh, read_many(self.cells, ev, fresh), strict=True):
                states[cell] = new_state() if raw is None else thaw(decode_state(raw))
                event_of[cell] = ev
            for cell, position, delta in msg["d"]:
                state = states[cell]
                if already_applied(state, source, position):
                    continue
                apply_delta(state, cell, delta)
                mark_applied(state, source, position)
                changed.add(cell)
        if not changed:
            await self.writer.write(self.order.rows(checked))
            return count
        # Each changed state is encoded once: the same bytes go to the scorer and the table.
        summaries: list[bytes] = []
        values: dict[str, bytes] = {}
        for cell in sorted(changed):
            state = states[cell]
            # The state's sequence number for the scorer: the sum of its watermarks, not a
            # counter. A replay after a crash may batch deltas differently; a counter could then
            # give a fuller state a lower number than one sent before the crash, and the scorer
            # would keep the older state for ever. The sum grows with every applied delta.
            state["v"] = max(state["v"] + 1, sum(state["wm"].values()))
            watermarks = state.pop("wm")
            body = dumps(state)
            state["wm"] = watermarks
            summaries.append(encode_summary(cell, state["v"], body))
            values[cell] = b'{"wm":' + dumps(watermarks) + b"," + body[1:]
        pending: list[Any] = []
        await send_lines(self.summaries, 0, summaries, pending)
        await send_all(pending)
        rows = [(event_of[c], c, value) for c, value in values.items()]
        await self.writer.write(rows + self.order.rows(checked))
        return count
