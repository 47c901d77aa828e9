"""``streams.stages.InputOrder``: a stage batch that skips a message of its input partition
restarts the worker instead of being processed (the cells' watermarks need offset order)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from streams import stages
from streams.stages import NEXT_KEY, InputOrder


class Skipped(Exception):
    pass


def event(partition: int, offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(partition=partition, offset=offset))


def table(stored: dict[int, int]) -> Any:
    dbs = {p: {NEXT_KEY.encode(): b"%d" % n} for p, n in stored.items()}

    class DB:
        def __init__(self, data: dict[bytes, bytes]) -> None:
            self.data = data

        def get(self, keys: list[bytes]) -> list[bytes | None]:
            return [self.data.get(k) for k in keys]

    store = SimpleNamespace(_db_for_partition=lambda p: DB(dbs.get(p, {})))
    return SimpleNamespace(data=store)


@pytest.fixture(autouse=True)
def no_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    def restart() -> None:
        raise Skipped

    monkeypatch.setattr(stages, "restart_process", restart)


def test_in_order_batches_and_replays_pass_and_store_the_next_offset() -> None:
    order = InputOrder(table({0: 10}), "deltas")
    checked = order.check([event(0, 8), event(0, 9), event(0, 10), event(0, 11), event(1, 4)])
    assert {p: nxt for p, (_, nxt) in checked.items()} == {0: 12, 1: 5}
    assert sorted(key for _, key, _ in order.rows(checked)) == [NEXT_KEY, NEXT_KEY]
    assert {value for _, _, value in order.rows(checked)} == {b"12", b"5"}
    # A batch of messages processed before (a replay) does not move the stored offset back.
    assert order.check([event(0, 3)])[0][1] == 10


def test_a_skipped_message_restarts_before_anything_is_processed() -> None:
    with pytest.raises(Skipped):
        InputOrder(table({0: 10}), "entities").check([event(0, 12)])  # offset 10, 11 missing
    with pytest.raises(Skipped):
        InputOrder(table({}), "entities").check([event(2, 5), event(2, 7)])  # 6 missing
