"""Cyclic garbage collection between batches, not during them.

Why: a stage's batch builds hundreds of thousands of short-lived containers (items, ledger
entries, deltas, cell states) and frees them when it ends. Python's collector runs every
``threshold`` net allocations, so in the middle of a batch it scanned the batch's live working
set, promoted it, and scanned it again in the older generation (measured on the ledger's
loop: 31% of its CPU at a threshold of 50,000, 44% at Python's default). Reference counting
frees almost all of it anyway; only reference cycles need the collector, and the stages make
few. So the collector is held off while any batch runs, and runs (if its thresholds say so)
at the first allocation after the last batch in progress ends.

Batches of the two stages of a process can overlap for long stretches in a backfill, so a
hold never lasts longer than ``MAX_HOLD_SECONDS``: a batch ending after that collects the
young generations itself.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

MAX_HOLD_SECONDS = 10.0

_active = 0
_held_since = 0.0


@contextmanager
def collector_held() -> Iterator[None]:
    """Hold automatic collection for the duration of one batch (nestable, any number of
    overlapping batches; a process that disabled the collector itself is left alone)."""
    global _active, _held_since
    if _active == 0:
        if not gc.isenabled():
            yield
            return
        gc.disable()
        _held_since = time.monotonic()
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        if _active == 0:
            gc.enable()
        elif time.monotonic() - _held_since > MAX_HOLD_SECONDS:
            gc.collect(1)
            _held_since = time.monotonic()
