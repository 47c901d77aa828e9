"""Collection held during batches (streams/gcpause.py): pure, no Kafka."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from streams import gcpause


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_overlapping_batches_hold_the_collector_until_the_last_one_ends() -> None:
    first = gcpause.collector_held()
    second = gcpause.collector_held()
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second batch still runs
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_failing_batch_releases_the_hold() -> None:
    with pytest.raises(RuntimeError), gcpause.collector_held():
        raise RuntimeError("batch failed")
    assert gc.isenabled()


def test_a_process_that_disabled_the_collector_is_left_alone() -> None:
    gc.disable()
    with gcpause.collector_held():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_a_long_hold_collects_the_young_generations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcpause, "MAX_HOLD_SECONDS", 0.0)
    collected: list[int] = []

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collected.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        outer = gcpause.collector_held()
        outer.__enter__()
        with gcpause.collector_held():
            pass  # ends while the outer batch runs, after the (zero) longest hold
        assert collected == [1]
        outer.__exit__(None, None, None)
    finally:
        gc.callbacks.remove(seen)
    assert gc.isenabled()
