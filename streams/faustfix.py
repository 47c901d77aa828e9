"""A correction to faust-streaming's offset commits that otherwise loses events.

Why: ``Consumer._new_offset`` (faust-streaming 0.15.3) commits up to the end of the first run of
acknowledged offsets, guarding against a hole at the head of that run with
``min(acked) - committed > 1``. Kafka's committed offset is the *next* offset to read, so a run
starting at ``committed + 1`` passes the guard although the message at ``committed`` was never
acknowledged: it is committed without being processed (faust-streaming/faust#606, fix proposed in
#707). Batches taken with ``take_events`` make that more likely the smaller they are: with 10 ms
batch waits the two-kill fault test lost events in 2 of 2 runs before this fix (1 of 3 after:
Faust also delivers a partition's messages out of order after a rebalance, which
``streams.stages.InputOrder`` catches; both together: 4 of 4 runs exact).

:func:`install` replaces the method with the same logic and a correct guard: nothing is
committed while the message at the committed offset is unacknowledged. Gaps that are really in
the log (compaction, transaction markers) are still skipped: Faust records them in ``_gap`` and
they are filled in before the guard, as before.
"""

from __future__ import annotations

from typing import Any

from faust.transport.consumer import Consumer
from faust.utils.functional import consecutive_numbers


def new_offset(self: Any, tp: Any) -> int | None:
    """The offset to commit for ``tp`` (None: nothing new), from the acknowledged offsets."""
    acked: list[int] = self._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gaps = self._gap[tp]
    if gaps:
        holes = sorted(gaps.overlap(0, max_offset), key=lambda entry: entry.begin)
        if holes:
            filled: list[int] = []
            for entry in holes:
                filled.extend(range(entry.begin, entry.end))
            acked.extend(filled)
            gaps.chop(0, max(filled[-1], max_offset + 1))
    acked.sort()
    committed = self._committed_offset[tp]
    if committed is not None and acked[0] > committed:
        return None  # the message at the committed offset is still in flight
    run = next(consecutive_numbers(acked))
    del acked[: len(run)]
    self._acked_index[tp].difference_update(run)
    return run[-1] + 1


def install() -> None:
    """Patch Faust's consumer (idempotent)."""
    Consumer._new_offset = new_offset  # type: ignore[method-assign]
