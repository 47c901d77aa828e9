"""``streams.stages.CellStage`` on in-memory stand-ins for its table, writer and topic: the
count of deltas a batch returns, and the catch-up pause that count decides (a backlog batch
makes the cells stage wait so the next batch is bigger; a live batch never waits)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson

from streams.scoring.cellstate import decode_state
from streams.stages import BACKLOG_DELTAS, CATCH_UP_PAUSE, CellStage, pause_after


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


def stage() -> tuple[CellStage, Store, Topic]:
    store, topic = Store(), Topic()
    table: Any = SimpleNamespace(data=SimpleNamespace(_db_for_partition=lambda p: store))
    writer: Any = Writer(store)
    return CellStage(table, writer, topic), store, topic  # type: ignore[arg-type]


async def test_a_live_batch_is_counted_and_never_pauses() -> None:
    cells, store, topic = stage()
    held = await cells.process([message(0, cells=3, knocks_per_cell=2)])
    assert held == 6
    assert pause_after(held) == 0.0
    state = decode_state(store.data[b"cell1"])
    assert state["kn"] == {"a": 2, "n": 2, "t": 1.7e9 + 1}
    assert len(topic.sent) == 1 and topic.sent[0].count(b"\n") == 2  # three summaries


async def test_a_backlog_batch_pauses_the_stage_and_replays_still_count() -> None:
    cells, store, _ = stage()
    per_message = BACKLOG_DELTAS // 4 + 1
    batch = [message(offset, cells=per_message, knocks_per_cell=1) for offset in range(4)]
    held = await cells.process(batch)
    assert held == 4 * per_message >= BACKLOG_DELTAS
    assert pause_after(held) == CATCH_UP_PAUSE > 0
    # The same messages again (a re-delivery after a crash): skipped by the watermarks, but
    # they are still what the batch held.
    assert await cells.process(batch) == held
    assert decode_state(store.data[b"cell0"])["kn"]["n"] == 4
    assert pause_after(BACKLOG_DELTAS - 1) == 0.0
