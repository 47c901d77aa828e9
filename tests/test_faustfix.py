"""The corrected offset commit of ``streams.faustfix`` (faust-streaming#606), on Faust's own
consumer bookkeeping structures."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from intervaltree import IntervalTree  # type: ignore[import-untyped]

from streams.faustfix import new_offset

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
