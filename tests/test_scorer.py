"""The scorer's write policy against real PostgreSQL (no Kafka: the scorer is handed summaries
directly, as its Faust agent does)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import h3
import pytest

from lpt.settings import Settings
from schemas.envelope import Envelope
from streams import scorer as sc
from streams.scoring import cellstate
from streams.scoring import model as model_module
from streams.scoring.config import DAY

T0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
CELLS = [h3.cell_to_parent(h3.latlng_to_cell(lat, -0.33, 10), 9) for lat in (53.70, 53.74, 53.78)]


def _state(cell: str, *days: float) -> cellstate.CellState:
    state = cellstate.new_state()
    for day in days:
        cellstate.apply_delta(state, cell, ["c", 1, T0 + day * DAY, "Burglary", "Main St", None])
    return state


async def _as_of(settings: Settings) -> dict[str, Any]:
    conn = await asyncpg.connect(settings.dsn)
    try:
        rows = await conn.fetch("SELECT area_id, as_of FROM priority_areas WHERE level = 'res9'")
        settled = await conn.fetchval("SELECT settled FROM priority_status WHERE id = 'scorer'")
    finally:
        await conn.close()
    return {r["area_id"]: r["as_of"] for r in rows} | {"settled": settled}


async def _no_publish(events: Sequence[Envelope]) -> None:
    """The scorer's Kafka output, unused here."""


async def _settle(scorer: sc.Scorer) -> None:
    for _ in range(50):
        await scorer.tick()
    await scorer._flush()


async def test_decay_only_rows_wait_for_the_drift_spacing_then_settle(
    isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later event moves the force's ``as_of``: its own cell's row is written at once; the
    other rows (only their decay changed) wait until ``next_drift``, and the status says
    unsettled meanwhile; then they are brought to the new ``as_of`` and it says settled."""
    settings = isolated_settings
    monkeypatch.setattr(sc, "QUIET_SECONDS", 0.0)
    monkeypatch.setattr(sc, "IDLE_SECONDS", 0.0)

    scorer = sc.Scorer(settings, _no_publish)
    try:
        # Ranked by harm, CELLS[0] first; its next burglary moves nobody's rank.
        days = {CELLS[0]: (0, 0, 0), CELLS[1]: (0, 0), CELLS[2]: (0,)}
        await scorer.activate((c, 1, _state(c, *days[c])) for c in CELLS)
        await _settle(scorer)
        first = await _as_of(settings)
        assert first["settled"] is True
        assert {first[c] for c in CELLS} == {datetime.fromtimestamp(T0, UTC)}

        scorer.next_drift = math.inf  # a drift pass just happened (its spacing not yet over)
        await scorer.on_batch([(CELLS[0], 2, _state(CELLS[0], 0, 0, 0, 1))])
        await _settle(scorer)
        later = await _as_of(settings)
        t1 = datetime.fromtimestamp(T0 + DAY, UTC)
        assert later[CELLS[0]] == t1
        assert later[CELLS[1]] == later[CELLS[2]] == first[CELLS[1]]
        assert later["settled"] is False

        scorer.next_drift = 0.0
        await _settle(scorer)
        final = await _as_of(settings)
        assert {final[c] for c in CELLS} == {t1}
        assert final["settled"] is True
        # The pass took time, so the next one may not start at once.
        assert scorer.next_drift > 0.0
        assert scorer.drift_cost == 0.0
    finally:
        await scorer.close()


async def test_a_pause_counts_as_quiet_only_once_the_stages_upstream_have_drained(
    isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a backfill the cells stage waits seconds between its big batches
    (``stages.catch_up``): such a gap, with the stages still holding a backlog, is not quiet,
    so the scorer does not rewrite its deferred rows at every gap. Once upstream has drained,
    the same pause settles every row as usual. Upstream is asked only after input paused, and
    not at every settle step."""
    settings = isolated_settings
    monkeypatch.setattr(sc, "UPSTREAM_CHECK_SECONDS", 0.0)
    backlog = {"busy": True, "asked": 0}

    async def upstream_busy() -> bool:
        backlog["asked"] += 1
        return bool(backlog["busy"])

    scorer = sc.Scorer(settings, _no_publish, upstream_busy)
    try:
        await scorer.activate((c, 1, _state(c, 0)) for c in CELLS)
        await scorer.on_batch([(CELLS[0], 2, _state(CELLS[0], 0, 1))])
        await _settle(scorer)
        assert backlog["asked"] == 0  # input has not paused yet: nobody asked
        scorer.last_batch = time.monotonic() - max(sc.QUIET_SECONDS, sc.IDLE_SECONDS) - 0.1
        await _settle(scorer)
        assert backlog["asked"] > 0
        paused = await _as_of(settings)
        assert paused["settled"] is not True
        assert paused.get(CELLS[1]) != datetime.fromtimestamp(T0 + DAY, UTC)

        backlog["busy"] = False
        await _settle(scorer)
        quiet = await _as_of(settings)
        assert quiet["settled"] is True
        assert {quiet[c] for c in CELLS} == {datetime.fromtimestamp(T0 + DAY, UTC)}
    finally:
        await scorer.close()


async def test_a_coarse_row_is_built_in_slices_without_holding_the_lock(
    isolated_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The force row sums every cell (half a second with a year of state): the settle builds
    it a slice at a time with the lock free, so a batch waiting for the lock goes between
    slices; the row written is the one built in one go."""
    settings = isolated_settings
    monkeypatch.setattr(sc, "QUIET_SECONDS", 0.0)
    monkeypatch.setattr(sc, "IDLE_SECONDS", 0.0)
    monkeypatch.setattr(sc, "SETTLE_CHUNK", 1)

    scorer = sc.Scorer(settings, _no_publish)
    locked: list[bool] = []
    add = model_module.RowBuilder.add

    def spy(self: model_module.RowBuilder, cells: int | None = None) -> None:
        locked.append(scorer.lock.locked())
        add(self, cells)

    monkeypatch.setattr(model_module.RowBuilder, "add", spy)
    try:
        await scorer.activate((c, 1, _state(c, 0, 1)) for c in CELLS)
        await _settle(scorer)
        assert scorer.model is not None and scorer.tables is not None
        want = scorer.model.row(scorer.tables, "force", 0)
        conn = await asyncpg.connect(settings.dsn)
        try:
            got = await conn.fetchrow(
                "SELECT score, streets, counts FROM priority_areas WHERE level = 'force'"
            )
        finally:
            await conn.close()
    finally:
        await scorer.close()
    # Three member cells, one per slice, none of them under the lock (the res-9 rows, one
    # cell each, are built whole under it and never reach RowBuilder.add in slices).
    assert locked.count(False) >= len(CELLS)
    assert got is not None and got["score"] == want["score"]
    assert json.loads(got["streets"]) == want["streets"]
    assert json.loads(got["counts"]) == want["counts"]


async def test_the_lock_names_where_its_holder_waits() -> None:
    """What ``streams.scorer_batch_waiting`` logs: the holder's await chain, outermost first."""
    lock = sc.TracedLock()
    release = asyncio.Event()

    async def write_rows() -> None:
        await release.wait()

    async def settle() -> None:
        async with lock:
            await write_rows()

    task = asyncio.create_task(settle())
    await asyncio.sleep(0)
    chain = lock.holder_chain()
    assert [c.split(":")[0] for c in chain[:2]] == ["settle", "write_rows"]
    release.set()
    await task
    assert lock.holder is None and lock.holder_chain() == []
