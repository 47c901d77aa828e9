"""The corrections of ``streams.faustfix``: the offset commit (faust-streaming#606), on Faust's
own consumer bookkeeping structures, and the fetch wait, on a consumer Faust creates."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from intervaltree import IntervalTree  # type: ignore[import-untyped]

from lpt.settings import Settings
from streams.app import faust_app
from streams.faustfix import FETCH_MAX_WAIT_MS, new_offset

TP = "deltas-0"


def consumer(committed: int | None, acked: list[int], gaps: IntervalTree | None = None) -> Any:
    return SimpleNamespace(
        _acked={TP: list(acked)},
        _acked_index={TP: set(acked)},
        _gap={TP: gaps if gaps is not None else IntervalTree()},
        _committed_offset={TP: committed},
    )


def test_nothing_is_committed_past_an_unacknowledged_head() -> None:
    # The case Faust gets wrong: the message at the committed offset is still being processed.
    c = consumer(2585, [2586, 2587, 2588, 2589])
    assert new_offset(c, TP) is None
    c._acked[TP].append(2585)
    assert new_offset(c, TP) == 2590
    assert c._acked[TP] == [] and c._acked_index[TP] == set()


def test_a_contiguous_run_commits_to_its_end_and_keeps_the_rest() -> None:
    c = consumer(10, [10, 11, 12, 14, 15])
    assert new_offset(c, TP) == 13
    assert c._acked[TP] == [14, 15]
    assert new_offset(c, TP) is None  # 13 not acknowledged yet


def test_gaps_in_the_log_are_skipped_and_a_first_commit_has_no_head() -> None:
    c = consumer(100, [100, 101, 104, 105], IntervalTree.from_tuples([(102, 104)]))
    assert new_offset(c, TP) == 106  # 102-103 do not exist (compacted away)
    assert new_offset(consumer(None, [0, 1, 2]), TP) == 3
    assert new_offset(consumer(5, []), TP) is None


async def test_faust_consumers_fetch_with_a_short_broker_wait(
    stack: Settings, tmp_path: Path
) -> None:
    """A request for idle partitions (the assignor topic) must not hold the broker for Faust's
    hard-coded 1.5 s: the stage's own partitions wait behind it."""
    app = faust_app("faustfix-fetch-wait", stack, tmp_path)
    thread: Any = app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._create_worker_consumer(app.transport)
    await consumer.start()
    try:
        assert consumer._fetcher._fetch_max_wait_ms == FETCH_MAX_WAIT_MS <= 100
    finally:
        await consumer.stop()
