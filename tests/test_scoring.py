"""Unit tests of the pure scoring core (no Kafka, no PostgreSQL: it has no I/O to fake)."""

from __future__ import annotations

import itertools
import math
import random
from datetime import UTC, datetime
from pathlib import Path

import h3
import numpy as np
import orjson
import pytest

from schemas.common import CRIME_TYPES
from streams.scoring import cellstate, components, decay, nearrepeat
from streams.scoring.config import (
    BUCKET_PRUNE_DAYS,
    BUCKET_RETENTION_DAYS,
    DAY,
    HARM_HALF_LIFE,
    MAX_COMPONENT_SHARE,
    WEEK,
    WEIGHTS,
    validate_weights,
)
from streams.scoring.explain import actions
from streams.scoring.harm import harm_weight, load_harm_weights
from streams.scoring.model import PriorityModel, Tables
from streams.scoring.ranking import percentile_ranks, top_cutoff
from streams.scoring.reference import LsoaInfo, Reference

CELL = h3.cell_to_parent(h3.latlng_to_cell(53.7445, -0.3328, 10), 9)
T0 = datetime(2026, 1, 15, tzinfo=UTC).timestamp()


def test_harm_weights_come_from_the_shipped_national_file() -> None:
    weights = load_harm_weights()
    assert set(weights) == set(CRIME_TYPES)
    assert weights["Burglary"] == 244.68
    assert weights["Robbery"] == 365.0
    assert weights["Violence and sexual offences"] == 194.21
    # police-generated categories and ASB never raise harm, whatever the file says
    for excluded in ("Drugs", "Possession of weapons", "Anti-social behaviour"):
        assert weights[excluded] == 0.0
        assert harm_weight(excluded) == 0.0


def test_harm_weights_file_missing_a_type_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "w.csv"
    bad.write_text("crime_type,cchi_days\nBurglary,244.68\n")
    with pytest.raises(ValueError, match="no harm weight"):
        load_harm_weights(bad)
    bad.write_text("crime_type,cchi_days\nBurglary,lots\n")
    with pytest.raises(ValueError, match="not a number"):
        load_harm_weights(bad)


def test_weights_are_capped_at_forty_percent() -> None:
    assert max(WEIGHTS.values()) <= MAX_COMPONENT_SHARE
    heavy = dict(WEIGHTS) | {"harm": 0.5, "near_repeat": 0.0, "concern": 0.10}
    with pytest.raises(ValueError, match="allowed"):
        validate_weights(heavy)
    with pytest.raises(ValueError, match="sum to 1"):
        validate_weights(dict(WEIGHTS) | {"harm": 0.2})


def test_decayed_sum_is_exact_in_any_arrival_order() -> None:
    rng = random.Random(7)
    events = [(rng.uniform(1, 400), T0 + rng.uniform(0, 400) * DAY) for _ in range(50)]
    expected_at = max(t for _, t in events) + 10 * DAY
    direct = sum(w * 2 ** (-(expected_at - t) / HARM_HALF_LIFE) for w, t in events)
    for order in (events, sorted(events, key=lambda e: e[1]), list(reversed(events))):
        ds = decay.new()
        for w, t in order:
            decay.add(ds, w, t, HARM_HALF_LIFE)
        assert decay.value_at(ds, expected_at, HARM_HALF_LIFE) == pytest.approx(direct, rel=1e-12)


def test_decayed_sum_halves_every_half_life_and_retracts_to_zero() -> None:
    ds = decay.new()
    decay.add(ds, 100.0, T0, HARM_HALF_LIFE)
    assert decay.value_at(ds, T0 + HARM_HALF_LIFE, HARM_HALF_LIFE) == pytest.approx(50.0)
    decay.add(ds, 7.0, T0 + 3 * DAY, HARM_HALF_LIFE)
    decay.add(ds, -100.0, T0, HARM_HALF_LIFE)
    decay.add(ds, -7.0, T0 + 3 * DAY, HARM_HALF_LIFE)
    assert ds[0] == 0.0  # no float residue left to outrank a real zero


def test_near_repeat_ring_weights_and_eight_week_window() -> None:
    ring = nearrepeat.ring_cells(CELL)
    assert ring[0] == (CELL, 0)
    assert len(ring) == 7 and {r for _, r in ring[1:]} == {1}
    assert nearrepeat.weight(0, 0) == 1.0
    assert nearrepeat.weight(1, 0) == 0.5
    assert nearrepeat.weight(0, WEEK + 1) == 0.5
    assert nearrepeat.weight(1, 3 * WEEK) == pytest.approx(1 / 2 / 4)
    assert nearrepeat.weight(0, 8 * WEEK) == 0.0
    entries: list[list[float]] = []
    nearrepeat.add(entries, T0, 0, +1)
    nearrepeat.add(entries, T0, 1, +1)
    assert nearrepeat.value_at(entries, T0 + 2 * WEEK) == pytest.approx(1 / 3 + 0.5 / 3)
    nearrepeat.add(entries, T0 + 5 * WEEK, 1, +1)
    nearrepeat.prune(entries, T0 + 8 * WEEK)  # exactly 8 weeks: no longer counts
    assert entries == [[T0 + 5 * WEEK, 1.0, 1.0]]
    nearrepeat.prune(entries, T0 + 9 * WEEK)
    assert entries == [[T0 + 5 * WEEK, 1.0, 1.0]]
    nearrepeat.prune(entries, T0 + 14 * WEEK)
    assert entries == []


def test_near_repeat_entries_match_a_plain_count_in_any_order() -> None:
    """Adds and retractions in any order leave the sorted entries a plain count gives."""
    rng = random.Random(11)
    events = [(T0 - rng.randint(0, 20) * DAY, rng.randint(0, 1)) for _ in range(300)]
    retracted = rng.sample(events, 100)
    ops = [(t, r, +1) for t, r in events] + [(t, r, -1) for t, r in retracted]
    rng.shuffle(ops)
    ops.sort(key=lambda op: op[2] < 0)  # every retraction after its burglary was added
    entries: list[nearrepeat.Entry] = []
    for t, ring, sign in ops:
        nearrepeat.add(entries, t, ring, sign)
    counts: dict[tuple[float, int], int] = {}
    for t, ring, sign in ops:
        counts[(t, ring)] = counts.get((t, ring), 0) + sign
    expected = [[t, float(r), float(n)] for (t, r), n in sorted(counts.items()) if n > 0]
    assert entries == expected


def test_near_repeat_value_span_holds_the_value_until_a_week_boundary() -> None:
    rng = random.Random(7)
    for _ in range(200):
        entries = [
            [T0 + rng.uniform(-3, 10) * WEEK, float(rng.randint(0, 1)), float(rng.randint(1, 3))]
            for _ in range(rng.randint(0, 5))
        ]
        t = T0 + rng.uniform(0, 9) * WEEK
        value, start, end = nearrepeat.value_span(entries, t)
        assert start <= t < end
        assert value == pytest.approx(nearrepeat.value_at(entries, t))
        # The same value anywhere inside the span, a different one just past its end.
        for probe in (start, (max(start, t - WEEK) + t) / 2, min(end, t + 20 * WEEK) - 1e-3):
            if math.isfinite(probe):
                assert nearrepeat.value_at(entries, probe) == pytest.approx(value)
        if math.isfinite(end) and any(e[0] <= end < e[0] + 8 * WEEK for e in entries):
            assert nearrepeat.value_at(entries, end + 1e-3) != pytest.approx(value)


def test_crime_deltas_route_harm_near_repeat_and_exclusions() -> None:
    burglary = cellstate.crime_deltas(CELL, True, 1, T0, "Burglary", "On or near X", None)
    assert [(c, d[0]) for c, d in burglary][:2] == [(CELL, "c"), (CELL, "n")]
    assert len(burglary) == 1 + 7
    assert len({c for c, d in burglary if d[0] == "n"}) == 7
    assert cellstate.crime_deltas(None, True, 1, T0, "Burglary", None, None) == [
        (cellstate.UNLOCATED, ["c", 1, T0, "Burglary", None, None])
    ]
    outside = cellstate.crime_deltas(CELL, False, 1, T0, "Robbery", "On or near Y", None)
    assert outside == [(cellstate.OUTSIDE_FORCE, ["c", 1, T0, "Robbery", None, None])]

    state = cellstate.new_state()
    for kind in ("Drugs", "Possession of weapons", "Anti-social behaviour"):
        cellstate.apply_delta(state, CELL, ["c", 1, T0, kind, "On or near Z", None])
    assert "h" not in state  # no harm from police-found crime or ASB
    assert state["a"][0] == 1.0  # ASB feeds concern
    assert state["tot"] == {"Drugs": 1, "Possession of weapons": 1, "Anti-social behaviour": 1}
    pseudo = cellstate.new_state()
    cellstate.apply_delta(pseudo, cellstate.OUTSIDE_FORCE, ["c", 1, T0, "Robbery", None, None])
    assert "h" not in pseudo and pseudo["tot"] == {"Robbery": 1}


def test_crime_update_retracts_the_earlier_contribution() -> None:
    state = cellstate.new_state()
    cellstate.apply_delta(state, CELL, ["c", 1, T0, "Robbery", "On or near A", "E01012756:2011"])
    cellstate.apply_delta(state, CELL, ["c", -1, T0, "Robbery", "On or near A", "E01012756:2011"])
    cellstate.apply_delta(state, CELL, ["c", 1, T0, "Shoplifting", "On or near A", None])
    assert state["h"][0] == pytest.approx(1.0)
    assert state["tot"] == {"Shoplifting": 1}
    assert "ls" not in state or state["ls"] == {}
    assert cellstate.counts_in_windows(state, T0 + DAY, (30, 90)) == {"Shoplifting": [1, 1]}
    assert cellstate.counts_in_windows(state, T0 + 40 * DAY, (30, 90)) == {"Shoplifting": [0, 1]}


def test_summary_lines_name_their_cell_and_sequence_without_decoding() -> None:
    state = _state(["c", 1, T0, "Burglary", "On or near A, B", None])
    for cell in (CELL, cellstate.OUTSIDE_FORCE):
        line = cellstate.encode_summary(cell, 12345, orjson.dumps(state))
        assert cellstate.summary_head(line) == (cell, 12345)
        assert cellstate.decode_state(line) == [cell, 12345, orjson.loads(orjson.dumps(state))]


def test_watermark_recognises_a_redelivered_delta() -> None:
    state = cellstate.new_state()
    assert not cellstate.already_applied(state, "p3", 17)
    cellstate.mark_applied(state, "p3", 17)
    assert cellstate.already_applied(state, "p3", 17)
    assert cellstate.already_applied(state, "p3", 5)
    assert not cellstate.already_applied(state, "p3", 18)
    assert not cellstate.already_applied(state, "p4", 1)


def test_component_formulas() -> None:
    # shrinkage: 2 respondents naming 3 priorities each are pulled most of the way to the mean
    assert components.shrunk_rate(6, 2, 1.0) == pytest.approx((6 + 10) / 12)
    assert components.shrunk_rate(0, 0, 0.7) == pytest.approx(0.7)
    assert components.concern(4.0, 0, 0, 0.7) == pytest.approx(4.0)  # no survey: ASB only
    assert components.trust_gap(36, 9, 3.5) is None  # fewer than 10 responses
    assert components.trust_gap(30, 10, 3.5) == pytest.approx(0.5)
    assert components.engagement_gap(0, 0, 0) == 0.0
    assert components.engagement_gap(5, 0, 10) == pytest.approx(0.75)
    assert components.deprivation({0.1: 3, 0.5: 1}) == pytest.approx((0.9 * 3 + 0.5) / 4)
    assert components.deprivation({}) is None
    pop = {"16-24": 100, "25-34": 100, "prefer_not_to_say": 0}
    assert components.representation_gap({"25-34": 9}, pop) is None  # fewer than 10 people
    rep = components.representation_gap({"25-34": 10, "prefer_not_to_say": 4}, pop)
    assert rep is not None and rep.gap == pytest.approx(0.5) and rep.group == "16-24"
    assert rep.registered_share == 0.0 and rep.population_share == 0.5


def test_percentile_ranks_ties_zeros_and_missing() -> None:
    pct = percentile_ranks(np.array([0.0, 0.0, 5.0, 10.0, math.nan]))
    assert pct.tolist() == [0.25, 0.25, 0.75, 1.0, 0.0]
    assert percentile_ranks(np.array([3.0])).tolist() == [0.0]
    assert top_cutoff(0) == 0 and top_cutoff(5) == 1 and top_cutoff(11) == 2


def _state(*deltas: list[object]) -> cellstate.CellState:
    state = cellstate.new_state()
    for d in deltas:
        cellstate.apply_delta(state, CELL, list(d))
    return state


def _neighbours(n: int) -> list[str]:
    return sorted(h3.grid_disk(CELL, 3))[:n]


def test_model_scores_ranks_and_explains() -> None:
    cells = _neighbours(12)
    model = PriorityModel(Reference(force_name="Test Police"))
    for k, cell in enumerate(cells):
        st = cellstate.new_state()
        for j in range(k):
            cellstate.apply_delta(st, cell, ["c", 1, T0 - j * DAY, "Violence and sexual offences",
                                             f"On or near Street {j % 3}", None])  # fmt: skip
        model.merge(cell, 1, st)
    tables = model.compute()
    res9 = tables.levels["res9"]
    idx = res9.index()
    top = cells[-1]
    assert res9.rank[idx[top]] == 1 and res9.in_top[idx[top]]
    assert res9.rank[idx[cells[0]]] == len(cells)
    row = model.row(tables, "res9", idx[top])
    assert row["reasons"][0]["component"] == "harm"
    assert row["reasons"][0]["data_date"] == "2026-01-15"
    assert "harm-days" in row["reasons"][0]["text"]
    assert row["reasons"][0]["raw_value"] == pytest.approx(
        sum(194.21 * 2 ** (-(j * DAY) / HARM_HALF_LIFE) for j in range(11)), rel=1e-9
    )
    assert row["actions"][0].startswith("Short visible patrols")
    assert [s["street"] for s in row["streets"]] == [
        "On or near Street 0", "On or near Street 1", "On or near Street 2"
    ]  # fmt: skip
    assert row["counts"]["Violence and sexual offences"] == {"30d": 11, "90d": 11}
    assert row["survey"] is None
    force = model.row(tables, "force", 0)
    assert force["area_id"] == "Test Police"
    assert force["components"]["harm"]["raw"] == pytest.approx(float(res9.raw["harm"].sum()))
    res8 = tables.levels["res8"]
    assert sum(len(m) for m in res8.members) == len(cells)


def test_survey_aggregates_are_suppressed_below_ten_responses() -> None:
    model = PriorityModel(Reference())
    answers = [["s", 1, T0, 2, ["burglary"]] for _ in range(9)]
    model.merge(CELL, 1, _state(*answers))
    tables = model.compute()
    row = model.row(tables, "res9", 0)
    assert row["survey"] is None
    assert row["components"]["trust_gap"]["raw"] is None
    model.merge(CELL, 2, _state(*answers, ["s", 1, T0, 4, ["drugs"]]))
    other = _neighbours(2)[1]
    model.merge(other, 1, _state(*[["s", 1, T0, 5, []] for _ in range(10)]))
    tables = model.compute()
    row = model.row(tables, "res9", tables.levels["res9"].index()[CELL])
    assert row["survey"] == {
        "responses": 10,
        "mean_confidence": 2.2,
        "priority_share": {"burglary": 0.9, "drugs": 0.1},
    }
    assert row["components"]["trust_gap"]["raw"] == pytest.approx(3.6 - 2.2)


def test_model_is_independent_of_merge_order_and_uses_reference() -> None:
    cells = _neighbours(8)
    ref = Reference(
        lsoa={("E01012756", 2011): LsoaInfo(0.05, 1, "Hull 025A", "E06000010")},
        cell_postcodes={c: 3 for c in cells[:4]},
        cell_local_authority={c: "E06000010" for c in cells[:4]},
    )
    rng = random.Random(3)
    states = {}
    for cell in cells:
        deltas = [
            ["c", 1, T0 - rng.randint(0, 200) * DAY, rng.choice(CRIME_TYPES), "On or near A",
             "E01012756:2011"]
            for _ in range(rng.randint(1, 6))
        ]  # fmt: skip
        states[cell] = _state(*deltas)
    results = []
    for perm in itertools.islice(itertools.permutations(cells), 0, 200, 50):
        model = PriorityModel(ref)
        for cell in perm:
            model.merge(cell, 1, states[cell])
        tables = model.compute()
        res9 = tables.levels["res9"]
        pairs = zip(res9.score.tolist(), res9.rank.tolist(), strict=True)
        results.append(dict(zip(res9.ids, pairs, strict=True)))
    assert all(r == results[0] for r in results)
    model = PriorityModel(ref)
    for cell in cells:
        model.merge(cell, 1, states[cell])
    tables = model.compute()
    row = model.row(tables, "res9", tables.levels["res9"].index()[cells[0]])
    assert row["components"]["deprivation"]["raw"] == pytest.approx(0.95)
    assert row["local_authority_code"] == "E06000010"
    assert row["engagement"]["households_estimated"] > 0


def test_cells_added_between_computes_give_the_tables_of_one_compute() -> None:
    """The coarse levels' groupings are extended as cells arrive (not rebuilt each batch):
    the result must equal a model that saw every cell before its first compute, and tables
    computed earlier must keep their own areas."""
    cells = sorted(h3.grid_disk(CELL, 4))
    rng = random.Random(5)

    def burglaries() -> list[list[object]]:
        n = rng.randint(1, 4)
        return [["c", 1, T0 - rng.randint(0, 60) * DAY, "Burglary", None, None] for _ in range(n)]

    states = {cell: _state(*burglaries()) for cell in cells}
    ref = Reference(cell_local_authority={c: "E06000010" for c in cells[::3]})
    growing = PriorityModel(ref)
    first = None
    for k, cell in enumerate(rng.sample(cells, len(cells))):
        growing.merge(cell, 1, states[cell])
        tables = growing.compute(T0)
        if k == 0:
            first = tables
    whole = PriorityModel(ref)
    for cell in cells:
        whole.merge(cell, 1, states[cell])
    expected = whole.compute(T0)

    def by_area(
        model: PriorityModel, t: Tables, level: str
    ) -> dict[str, tuple[float, int, list[str]]]:
        lt = t.levels[level]
        members = lt.members or [[i] for i in range(len(lt.ids))]
        return {
            a: (float(lt.score[i]), int(lt.rank[i]), sorted(model.cells[m] for m in members[i]))
            for i, a in enumerate(lt.ids)
        }

    for level in ("res9", "res8", "res7", "local_authority", "force"):
        assert by_area(growing, tables, level) == by_area(whole, expected, level), level
    assert first is not None and len(first.levels["res8"].ids) == 1
    assert sum(len(m) for m in first.levels["res8"].members) == 1


def test_older_state_never_replaces_a_newer_one() -> None:
    model = PriorityModel(Reference())
    new = _state(["c", 1, T0, "Robbery", None, None])
    assert model.merge(CELL, 5, new)
    assert not model.merge(CELL, 4, _state())
    assert model.states[CELL] is new
    assert model.merge(CELL, 5, new)  # same state re-sent after a crash: accepted


def test_actions_follow_reasons_without_repeats() -> None:
    reasons = [{"component": "near_repeat"}, {"component": "trust_gap"}, {"component": "concern"}]
    out = actions(reasons, ["On or near High Street"])
    assert out[0].startswith("Short visible patrols and crime-prevention visits within 400 m")
    assert "On or near High Street" in out[0]
    assert len(out) == 3 and "you said, we did" in out[1]


def test_registrations_reach_the_representation_gap_of_their_local_authority() -> None:
    """The model keeps each authority's registrations by age and ethnic group from the cells'
    states: a cell's newer state replaces its earlier counts (an opt-out removes them), and a
    cell with no registrations adds nothing."""
    la = "E06000010"
    ref = Reference(
        cell_local_authority={CELL: la},
        population_age={la: {"16-24": 500, "65+": 500}},
        population_ethnic={la: {"white": 500, "asian": 500}},
    )
    model = PriorityModel(ref)
    registered = cellstate.new_state()
    for i in range(12):
        age, eth = ("16-24", "white") if i < 9 else ("65+", "asian")
        cellstate.apply_delta(registered, CELL, ["r", 1, T0 + i, age, eth, None])
    neighbour = h3.grid_disk(CELL, 1)[1]
    model.merge(neighbour, 1, _state(["c", 1, T0, "Burglary", "On or near A", None]))
    model.merge(CELL, 1, registered)
    rep = model.representation()[la]
    assert rep is not None and rep.registered == 12
    assert rep.group == "65+" and rep.registered_share == pytest.approx(3 / 12)
    assert model.representation()[""] is not None

    opted_out = cellstate.new_state()
    model.merge(CELL, 2, opted_out)
    assert model.representation()[la] is None  # fewer than 10 registered: not shown


def test_day_buckets_are_the_same_whatever_the_arrival_order() -> None:
    """Crimes over eight months in time order (an import, live input), reversed and shuffled:
    the cell keeps the same day buckets (whole ``BUCKET_PRUNE_DAYS`` periods, see
    ``cellstate.bucket_horizon``), none older than the retention, and the 30/90-day counts
    equal a plain count over the same crimes."""
    rng = random.Random(3)
    crimes = [
        (T0 + rng.uniform(0, 240) * DAY, rng.choice(["Burglary", "Shoplifting", "Robbery"]))
        for _ in range(400)
    ]
    ordered = sorted(crimes)
    orders = [ordered, ordered[::-1], rng.sample(crimes, len(crimes))]
    deltas: list[list[list[object]]] = [
        [["c", 1, t, kind, None, None] for t, kind in order] for order in orders
    ]
    states = [_state(*order) for order in deltas]
    assert states[0]["d"] == states[1]["d"] == states[2]["d"]
    newest = ordered[-1][0]
    oldest_kept = min(int(day) for buckets in states[0]["d"].values() for day in buckets)
    assert oldest_kept >= cellstate.bucket_horizon(newest)
    assert int(newest // DAY) - oldest_kept <= BUCKET_RETENTION_DAYS + BUCKET_PRUNE_DAYS
    for now in (newest, newest + 10 * DAY, newest + 60 * DAY):
        expected: dict[str, list[int]] = {}
        for t, kind in crimes:
            age = int(now // DAY) - int(t // DAY)
            counts = [int(0 <= age < w) for w in (30, 90)]
            if any(counts):
                total = expected.setdefault(kind, [0, 0])
                total[0] += counts[0]
                total[1] += counts[1]
        for state in states:
            assert cellstate.counts_in_windows(state, now, (30, 90)) == expected
