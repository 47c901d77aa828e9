"""``streams.stages.CellStage`` on in-memory stand-ins for its table, writer and topic: the
count of deltas a batch returns, and the catch-up wait that count decides (after a backlog
batch the cells stage waits while the ledger keeps producing, so the next batch is bigger; a
live batch never waits, and neither does the end of a backlog)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from streams import stages
from streams.scoring.cellstate import decode_state
from streams.stages import BACKLOG_DELTAS, CellStage, LedgerStage, catch_up


class Store:
    """A partition's RocksDB stand-in (``read_many`` multi-gets through it)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, keys: list[bytes]) -> list[bytes | None]:
        return [self.data.get(k) for k in keys]


class Writer:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def write(self, rows: list[tuple[Any, str, bytes]]) -> None:
        for _, key, value in rows:
            self.store.data[key.encode()] = value


class Topic:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, value: bytes, partition: int) -> asyncio.Future[None]:
        self.sent.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def message(offset: int, cells: int, knocks_per_cell: int) -> Any:
    deltas = [
        [f"cell{c}", offset << 24 | c << 6 | k, ["k", 1.7e9 + k, 1]]
        for c in range(cells)
        for k in range(knocks_per_cell)
    ]
    value = orjson.dumps({"src": "l0", "d": deltas})
    return SimpleNamespace(message=SimpleNamespace(partition=0, offset=offset, value=value))


class Ledger:
    """What ``catch_up`` asks of the ledger stage: is it still producing?"""

    def __init__(self, busy_for: float) -> None:
        self.until = time.monotonic() + busy_for

    def producing(self, within: float) -> bool:
        return time.monotonic() < self.until


async def waited(ledger: Any, deltas: int) -> float:
    return await catch_up(ledger, deltas)


def stage() -> tuple[CellStage, Store, Topic]:
    store, topic = Store(), Topic()
    table: Any = SimpleNamespace(data=SimpleNamespace(_db_for_partition=lambda p: store))
    writer: Any = Writer(store)
    return CellStage(table, writer, topic), store, topic  # type: ignore[arg-type]


async def test_a_live_batch_is_counted_and_never_waits() -> None:
    cells, store, topic = stage()
    held = await cells.process([message(0, cells=3, knocks_per_cell=2)])
    assert held == 6
    assert await waited(Ledger(busy_for=60), held) == 0.0
    state = decode_state(store.data[b"cell1"])
    assert state["kn"] == {"a": 2, "n": 2, "t": 1.7e9 + 1}
    assert len(topic.sent) == 1 and topic.sent[0].count(b"\n") == 2  # three summaries


async def test_a_backlog_batch_waits_while_the_ledger_produces_and_replays_still_count() -> None:
    cells, store, _ = stage()
    per_message = BACKLOG_DELTAS // 4 + 1
    batch = [message(offset, cells=per_message, knocks_per_cell=1) for offset in range(4)]
    held = await cells.process(batch)
    assert held == 4 * per_message >= BACKLOG_DELTAS
    took = await waited(Ledger(busy_for=0.3), held)
    assert 0.3 <= took < stages.CATCH_UP_LONGEST
    # The same messages again (a re-delivery after a crash): skipped by the watermarks, but
    # they are still what the batch held.
    assert await cells.process(batch) == held
    assert decode_state(store.data[b"cell0"])["kn"]["n"] == 4
    assert await waited(Ledger(busy_for=60), BACKLOG_DELTAS - 1) == 0.0


async def test_the_wait_ends_with_the_backlog_and_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last batch of a backlog finds the ledger idle: no wait, so the tables are not held
    back; a ledger that never stops producing is waited for ``CATCH_UP_LONGEST`` at most."""
    assert await waited(Ledger(busy_for=0), BACKLOG_DELTAS) < stages.LEDGER_IDLE
    monkeypatch.setattr(stages, "CATCH_UP_LONGEST", 0.2)
    took = await waited(Ledger(busy_for=60), BACKLOG_DELTAS)
    assert 0.2 <= took < 0.2 + 3 * stages.LEDGER_IDLE


async def test_the_ledger_counts_as_producing_during_a_batch_and_just_after() -> None:
    """``LedgerStage.producing``: true while a batch runs (the cells stage only gets the loop
    when the ledger awaits its sends), and for ``within`` seconds after one ended."""
    ledger = LedgerStage.__new__(LedgerStage)
    ledger.running, ledger.last_end = 0, -float("inf")
    release = asyncio.Event()

    async def slow(events: list[Any]) -> None:
        await release.wait()

    ledger._process = slow  # type: ignore[method-assign]
    assert not ledger.producing(0.05)
    task = asyncio.create_task(ledger.process([]))
    await asyncio.sleep(0.1)
    assert ledger.producing(0.05)  # running for 0.1 s: still producing
    release.set()
    await task
    assert ledger.producing(0.05)
    await asyncio.sleep(0.1)
    assert not ledger.producing(0.05)
