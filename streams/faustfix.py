"""Two corrections to faust-streaming: offset commits that otherwise lose events, and a fetch
wait that stalls a partition for up to 1.5 s.

**Offset commits.** Why: ``Consumer._new_offset`` (faust-streaming 0.15.3) commits up to the end of
the first run of acknowledged offsets, guarding against a hole at the head of that run with
``min(acked) - committed > 1``. Kafka's committed offset is the *next* offset to read, so a run
starting at ``committed + 1`` passes the guard although the message at ``committed`` was never
acknowledged: it is committed without being processed (faust-streaming/faust#606, fix proposed in
#707). Batches taken with ``take_events`` make that more likely the smaller they are: with 10 ms
batch waits the two-kill fault test lost events in 2 of 2 runs before this fix (1 of 3 after: Faust
also delivers a partition's messages out of order after a rebalance, which
``streams.stages.InputOrder`` catches; both together: 4 of 4 runs exact).

:func:`install` replaces the method with the same logic and a correct guard: nothing is
committed while the message at the committed offset is unacknowledged. Gaps that are really in
the log (compaction, transaction markers) are still skipped: Faust records them in ``_gap`` and
they are filled in before the guard, as before.

**Fetch wait.** Faust creates its consumers with ``fetch_max_wait_ms=1500`` (hard-coded), and
every Faust consumer is also assigned its group's ``__assignor-__leader`` topic, which never
carries a message. aiokafka sends at most one fetch request per broker at a time, and leaves a
partition out of it while the application has not yet taken that partition's last records. So
when a stage is busy for a moment (the scorer's minutely settle), the next request asks for the
leader topic alone, the broker holds it for the full 1.5 s, and the stage's own partition cannot
be fetched until it returns: the stage sits idle for up to 1.5 s with its input waiting (found
with aiokafka's debug log in the live phase of ``benchmarks/stream_backfill.py``: the scorer
idle in ``select`` while ``summaries`` flowed). :func:`install` makes Faust's consumers wait
:data:`FETCH_MAX_WAIT_MS` at most; an idle consumer then sends ten small requests a second.
"""

from __future__ import annotations

from typing import Any

from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.utils.functional import consecutive_numbers

#: The longest a fetch request waits at the broker for data (ms): the longest a partition can
#: wait behind a request for other, idle partitions.
FETCH_MAX_WAIT_MS = 100


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


_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer


def create_worker_consumer(self: Any, transport: Any) -> Any:
    """Faust's consumer, waiting :data:`FETCH_MAX_WAIT_MS` at most per fetch."""
    consumer = _create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
    return consumer


def install() -> None:
    """Patch Faust's consumer (idempotent)."""
    Consumer._new_offset = new_offset  # type: ignore[method-assign]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
