"""The force's priority tables from its cells' states: components, percentiles, scores, ranks
and explained rows at every level (res 9, 8, 7, ward, local authority, force).

Pure and in memory: the scorer feeds it cell states as they change and asks for the tables at
event time ``as_of``. Per-cell inputs live in numpy columns updated when a cell changes, so
re-ranking the whole force after each batch costs a few vectorised passes, not a Python loop
over every cell. Rows (reasons, streets, counts) are built only for the areas being written.

Determinism: raw values are rounded to 10 significant digits before ranking, so float
summation order (replay, two workers, a restart) cannot reorder areas whose values are equal.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import h3
import numpy as np
import numpy.typing as npt

from streams.scoring import components as comp
from streams.scoring import decay, nearrepeat
from streams.scoring.cellstate import OUTSIDE_FORCE, UNLOCATED, CellState, counts_in_windows
from streams.scoring.config import (
    COMPONENTS,
    CONCERN_HALF_LIFE,
    COUNT_WINDOWS_DAYS,
    DAY,
    HARM_HALF_LIFE,
    HOUSEHOLD_SIZE,
    HOUSEHOLDS_PER_POSTCODE,
    MAX_STREETS,
    MIN_RESPONSES,
    NEAR_REPEAT_WEEKS,
    SHRINK_PSEUDO_RESPONSES,
    SURVEY_CONCERN_SCALE,
    WEIGHTS,
    WEIGHTS_VERSION,
)
from streams.scoring.explain import ComponentView, actions, top_reasons
from streams.scoring.ranking import percentile_ranks, top_cutoff, weighted_score
from streams.scoring.reference import Reference

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

LEVELS: tuple[str, ...] = ("res9", "res8", "res7", "ward", "local_authority", "force")
H3_LEVELS = {"res9": 9, "res8": 8, "res7": 7}

_COLUMNS = (
    "harm_s", "harm_t", "asb_s", "asb_t", "svn_s", "svn_t", "svm_s", "svm_t",
    "cs", "cn", "reg", "knocks", "dep_sum", "dep_w", "households", "t",
)  # fmt: skip


def iso_date(t: float | None) -> str | None:
    if t is None or not math.isfinite(t):
        return None
    return datetime.fromtimestamp(t, UTC).date().isoformat()


def round_sig(values: FloatArray, digits: int = 10) -> FloatArray:
    """Round to ``digits`` significant digits (NaN and 0 kept)."""
    out = values.copy()
    finite = np.isfinite(out) & (out != 0)
    mags = np.floor(np.log10(np.abs(out[finite])))
    scale = 10.0 ** (digits - 1 - mags)
    out[finite] = np.round(out[finite] * scale) / scale
    return out


def _decayed(s: FloatArray, t: FloatArray, now: float, half_life: float) -> FloatArray:
    age = np.maximum(now - np.where(np.isfinite(t), t, now), 0.0)
    return np.where(s == 0.0, 0.0, s * np.exp2(-age / half_life))


@dataclass
class LevelTable:
    """One level's areas at ``as_of``: ids, raw components, percentiles, score, rank."""

    level: str
    ids: list[str]
    raw: dict[str, FloatArray]
    percentile: dict[str, FloatArray]
    score: FloatArray
    rank: IntArray
    top_cutoff: int
    members: list[list[int]] = field(default_factory=list)  # res-9 indices (aggregates)
    _index: dict[str, int] | None = None

    @property
    def in_top(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.rank <= self.top_cutoff)

    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {a: i for i, a in enumerate(self.ids)}
        return self._index


@dataclass
class _Grouping:
    """A level's areas and the cells in each (see ``PriorityModel._grouping``)."""

    layout: int
    ids: list[str]
    pos: dict[str, int]
    group: list[int]
    members: list[list[int]]
    array: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class Tables:
    as_of: float
    levels: dict[str, LevelTable]
    force_rate: float
    force_mean_confidence: float | None
    representation: dict[str, comp.Representation | None]  # per local authority, "" = force


class PriorityModel:
    """Holds the latest state of every cell and scores the force on demand."""

    def __init__(self, reference: Reference) -> None:
        self.ref = reference
        self.states: dict[str, CellState] = {}
        self.seqs: dict[str, int] = {}
        self.pseudo: dict[str, CellState] = {}
        self.cells: list[str] = []
        self.index: dict[str, int] = {}
        self.cols: dict[str, FloatArray] = {c: np.zeros(0) for c in _COLUMNS}
        self.la_of: list[str | None] = []
        self.ward_of: list[str | None] = []
        self.parent_of: dict[int, list[str]] = {8: [], 7: []}
        self.nr_cells: set[int] = set()
        #: Near-repeat value per cell with the span of time it holds for (nearrepeat.value_span).
        self._nr_values: dict[int, tuple[float, float, float]] = {}
        #: Crime counts per window of each current cell state (``_counts``), by id(state).
        self._count_cache: dict[int, tuple[CellState, int, dict[str, list[int]]]] = {}
        self.la_reg_age: dict[str, Counter[str]] = {}
        self.la_reg_eth: dict[str, Counter[str]] = {}
        self._cell_reg: dict[int, tuple[str | None, dict[str, int], dict[str, int]]] = {}
        self._cap = 0
        #: Bumped when a cell changes area: the cached groupings are rebuilt. (Cells added since
        #: a grouping was built are appended to it.)
        self._layout = 0
        self._layout_cache: dict[str, _Grouping] = {}
        for cell in sorted(reference.cell_postcodes):
            self._ensure(cell)

    # ------------------------------------------------------------------ updates

    def _grow(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = max(need, 2 * self._cap, 1024)
        for name, arr in self.cols.items():
            grown = np.zeros(cap)
            if name.endswith("_t") or name == "t":
                grown[:] = -np.inf
            grown[: len(arr)] = arr
            self.cols[name] = grown
        self._cap = cap

    def _ensure(self, cell: str) -> int:
        i = self.index.get(cell)
        if i is not None:
            return i
        i = len(self.cells)
        self._grow(i + 1)
        self.cells.append(cell)
        self.index[cell] = i
        self.la_of.append(self.ref.cell_local_authority.get(cell))
        self.ward_of.append(self.ref.cell_ward.get(cell))
        for res, parents in self.parent_of.items():
            parents.append(str(h3.cell_to_parent(cell, res)))
        postcodes = self.ref.cell_postcodes.get(cell, 0)
        self.cols["households"][i] = self._households(postcodes, self.la_of[i])
        return i

    def _households(self, postcodes: int, la: str | None) -> float:
        per = self.ref.residents_per_postcode.get(la or "")
        if per is None:
            return postcodes * HOUSEHOLDS_PER_POSTCODE
        return postcodes * per / HOUSEHOLD_SIZE

    def merge(self, cell: str, seq: int, state: CellState) -> bool:
        """Take a cell's newer state; False (ignored) if an equal-or-newer one was seen before
        is newer (``seq`` lower). Equal ``seq`` replaces: it is the same state re-sent."""
        if seq < self.seqs.get(cell, -1):
            return False
        self.seqs[cell] = seq
        if cell.startswith("_"):
            self.pseudo[cell] = state
            return True
        old = self.states.get(cell)
        if old is not None:
            self._count_cache.pop(id(old), None)
        self.states[cell] = state
        i = self._ensure(cell)
        c = self.cols
        for key, s_col, t_col in (("h", "harm_s", "harm_t"), ("a", "asb_s", "asb_t")):
            ds = state.get(key)
            c[s_col][i], c[t_col][i] = (ds[0], ds[1]) if ds else (0.0, -np.inf)
        sv = state.get("sv")
        if sv:
            c["svn_s"][i], c["svn_t"][i] = sv["n"]
            c["svm_s"][i], c["svm_t"][i] = sv["m"]
            c["cs"][i], c["cn"][i] = sv["cs"], sv["cn"]
        rg = state.get("rg") or {}
        c["reg"][i] = rg.get("n", 0)
        c["knocks"][i] = (state.get("kn") or {}).get("a", 0)
        c["t"][i] = state.get("t", -np.inf)
        dep_sum = dep_w = 0.0
        for counts in (state.get("ls") or {}, state.get("rls") or {}):
            for key, n in counts.items():
                info = self.ref.imd(key)
                if info is not None:
                    dep_sum += (1.0 - info.fraction) * n
                    dep_w += n
        c["dep_sum"][i], c["dep_w"][i] = dep_sum, dep_w
        self._nr_values.pop(i, None)
        if state.get("nr"):
            self.nr_cells.add(i)
        else:
            self.nr_cells.discard(i)
        if self.la_of[i] is None:
            la = self.ref.local_authority_of(cell, state.get("ls"))
            if la:
                self.la_of[i] = la
                self._layout += 1
                c["households"][i] = self._households(self.ref.cell_postcodes.get(cell, 0), la)
        self._track_registrations(i, rg)
        return True

    def _track_registrations(self, i: int, rg: Mapping[str, Any]) -> None:
        old = self._cell_reg.get(i)
        if old is None and not rg:
            return  # no registrations before or now (most cells during a crime backfill)
        if old is not None:
            la, age, eth = old
            self.la_reg_age.setdefault(la or "", Counter()).subtract(age)
            self.la_reg_eth.setdefault(la or "", Counter()).subtract(eth)
        la = self.la_of[i]
        age, eth = dict(rg.get("age") or {}), dict(rg.get("eth") or {})
        self.la_reg_age.setdefault(la or "", Counter()).update(age)
        self.la_reg_eth.setdefault(la or "", Counter()).update(eth)
        self._cell_reg[i] = (la, age, eth)

    def as_of(self) -> float | None:
        times = [s.get("t", -math.inf) for s in self.pseudo.values()]
        n = len(self.cells)
        if n:
            times.append(float(np.max(self.cols["t"][:n])))
        best = max(times, default=-math.inf)
        return best if math.isfinite(best) else None

    # ------------------------------------------------------------------ scoring

    def representation(self) -> dict[str, comp.Representation | None]:
        """Per local authority ("" = the whole force): the larger of the age and ethnic gaps."""
        out: dict[str, comp.Representation | None] = {}
        las = set(self.ref.population_age) | set(self.ref.population_ethnic)
        total_age: Counter[str] = Counter()
        total_eth: Counter[str] = Counter()
        pop_age: Counter[str] = Counter()
        pop_eth: Counter[str] = Counter()
        for la in sorted(las):
            reg_age = +self.la_reg_age.get(la, Counter())
            reg_eth = +self.la_reg_eth.get(la, Counter())
            total_age.update(reg_age)
            total_eth.update(reg_eth)
            pop_age.update(self.ref.population_age.get(la, {}))
            pop_eth.update(self.ref.population_ethnic.get(la, {}))
            out[la] = _worse(
                comp.representation_gap(reg_age, self.ref.population_age.get(la, {})),
                comp.representation_gap(reg_eth, self.ref.population_ethnic.get(la, {})),
            )
        out[""] = _worse(
            comp.representation_gap(total_age, pop_age),
            comp.representation_gap(total_eth, pop_eth),
        )
        return out

    def compute(self, as_of: float | None = None) -> Tables:
        now = as_of if as_of is not None else (self.as_of() or 0.0)
        n = len(self.cells)
        c = {k: v[:n] for k, v in self.cols.items()}
        harm = _decayed(c["harm_s"], c["harm_t"], now, HARM_HALF_LIFE)
        asb = _decayed(c["asb_s"], c["asb_t"], now, CONCERN_HALF_LIFE)
        svn = _decayed(c["svn_s"], c["svn_t"], now, CONCERN_HALF_LIFE)
        svm = _decayed(c["svm_s"], c["svm_t"], now, CONCERN_HALF_LIFE)
        nr = np.zeros(n)
        cached = self._nr_values
        for i in self.nr_cells:
            hit = cached.get(i)
            if hit is None or not hit[1] <= now < hit[2]:
                hit = cached[i] = nearrepeat.value_span(self.states[self.cells[i]]["nr"], now)
            nr[i] = hit[0]
        n_total, m_total = float(svn.sum()), float(svm.sum())
        force_rate = m_total / n_total if n_total > 0 else 0.0
        cn_total = float(c["cn"].sum())
        force_mean = float(c["cs"].sum()) / cn_total if cn_total > 0 else None
        reps = self.representation()
        rep_of_la = {la: (r.gap if r else math.nan) for la, r in reps.items()}
        rep_cell = np.array([rep_of_la.get(la or "\0", math.nan) for la in self.la_of])
        sums = {
            "harm": harm, "nr": nr, "asb": asb, "svn": svn, "svm": svm, "cs": c["cs"],
            "cn": c["cn"], "reg": c["reg"], "knocks": c["knocks"], "dep_sum": c["dep_sum"],
            "dep_w": c["dep_w"], "households": c["households"],
        }  # fmt: skip
        levels: dict[str, LevelTable] = {}
        levels["res9"] = self._level(
            "res9", list(self.cells), sums, rep_cell, force_rate, force_mean, members=None
        )
        for level in ("res8", "res7", "ward", "local_authority", "force"):
            ids, group, members = self._grouping(level)
            inside = group >= 0
            agg = {
                k: np.bincount(group[inside], weights=v[inside], minlength=len(ids)).astype(
                    np.float64
                )
                for k, v in sums.items()
            }
            has_rep = np.isfinite(rep_cell) & (group >= 0)
            rep_n = np.bincount(group[has_rep], minlength=len(ids)).astype(float)
            rep_sum = np.bincount(group[has_rep], weights=rep_cell[has_rep], minlength=len(ids))
            with np.errstate(invalid="ignore", divide="ignore"):
                rep = np.where(rep_n > 0, rep_sum / np.maximum(rep_n, 1), math.nan)
            if level == "local_authority":
                rep = np.array([rep_of_la.get(a, math.nan) for a in ids])
            elif level == "force":
                r = reps.get("")
                rep = np.array([r.gap if r else math.nan])
            levels[level] = self._level(
                level, ids, agg, rep, force_rate, force_mean, members=members
            )
        return Tables(now, levels, force_rate, force_mean, reps)

    def _grouping(self, level: str) -> tuple[list[str], IntArray, list[list[int]]]:
        """A level's area ids, each cell's area index (-1: none) and each area's cells, cached
        (re-grouping every batch cost more than ranking): rebuilt when a cell moves area,
        extended when cells are added (a live force gains a few new cells a minute)."""
        g = self._layout_cache.get(level)
        if g is None or g.layout != self._layout:
            keys = self._keys(level)
            ids = sorted({k for k in keys if k})
            g = _Grouping(
                self._layout, ids, {k: i for i, k in enumerate(ids)}, [], [[] for _ in ids]
            )
            self._layout_cache[level] = g
        if len(g.group) < len(self.cells):
            # New lists, not appends: tables computed earlier hold the old ones.
            keys = self._keys(level)
            ids, members = list(g.ids), list(g.members)
            for i in range(len(g.group), len(self.cells)):
                key = keys[i]
                if not key:
                    g.group.append(-1)
                    continue
                at = g.pos.get(key)
                if at is None:
                    at = g.pos[key] = len(ids)
                    ids.append(key)
                    members.append([])
                members[at] = [*members[at], i]
                g.group.append(at)
            g.ids, g.members = ids, members
            g.array = np.array(g.group, dtype=np.int64)
        return g.ids, g.array, g.members

    def _keys(self, level: str) -> list[str | None]:
        """Each cell's area id at ``level`` (None: outside every area of the level)."""
        if level == "force":
            return [self.ref.force_name] * len(self.cells)
        if level in ("res8", "res7"):
            return list(self.parent_of[H3_LEVELS[level]])
        if level == "ward":
            return list(self.ward_of)
        return list(self.la_of)

    def _level(
        self,
        level: str,
        ids: list[str],
        s: Mapping[str, FloatArray],
        rep: FloatArray,
        force_rate: float,
        force_mean: float | None,
        members: list[list[int]] | None,
    ) -> LevelTable:
        k = SHRINK_PSEUDO_RESPONSES
        shrunk = (s["svm"] + k * force_rate) / (s["svn"] + k)
        concern = np.maximum(s["asb"] + SURVEY_CONCERN_SCALE * (shrunk - force_rate), 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            local_mean = s["cs"] / np.where(s["cn"] > 0, s["cn"], 1)
            trust = np.where(
                (s["cn"] >= MIN_RESPONSES) & (force_mean is not None),
                (force_mean or 0.0) - local_mean,
                math.nan,
            )
            hh = s["households"]
            cover = (
                np.minimum(s["reg"] / np.where(hh > 0, hh, 1), 1.0)
                + np.minimum(s["knocks"] / np.where(hh > 0, hh, 1), 1.0)
            ) / 2
            engagement = np.where(hh > 0, 1.0 - cover, 0.0)
            deprivation = np.where(s["dep_w"] > 0, s["dep_sum"] / s["dep_w"], math.nan)
        raw = {
            "harm": s["harm"],
            "near_repeat": s["nr"],
            "concern": concern,
            "trust_gap": trust,
            "engagement_gap": engagement,
            "deprivation": deprivation,
            "representation_gap": rep,
        }
        raw = {name: round_sig(np.asarray(v, dtype=np.float64)) for name, v in raw.items()}
        pct = {name: percentile_ranks(v) for name, v in raw.items()}
        score = np.round(weighted_score(pct), 12)
        # Highest score first, ties by area id (lexsort: the last key is the primary one).
        order = np.lexsort((np.asarray(ids, dtype=np.str_), -score))
        rank = np.empty(len(ids), dtype=np.int64)
        rank[order] = np.arange(1, len(ids) + 1)
        return LevelTable(level, ids, raw, pct, score, rank, top_cutoff(len(ids)), members or [])

    # ------------------------------------------------------------------ rows

    def row(self, tables: Tables, level: str, i: int) -> dict[str, Any]:
        """One area's full row: score, rank, components, reasons, actions, streets, counts."""
        builder = self.row_builder(tables, level, i)
        builder.add()
        return builder.finish()

    def row_builder(self, tables: Tables, level: str, i: int) -> RowBuilder:
        """A row built a slice of member cells at a time (:class:`RowBuilder`)."""
        t = tables.levels[level]
        members = [i] if level == "res9" else t.members[i]
        states = [self.states.get(self.cells[m], {}) for m in members]
        return RowBuilder(self, tables, level, i, members, states)

    def _finish_row(
        self, tables: Tables, level: str, i: int, members: list[int], sums: _Sums
    ) -> dict[str, Any]:
        t = tables.levels[level]
        now = tables.as_of
        views: dict[str, ComponentView] = {}
        details = self._details(level, t.ids[i], members, tables, sums)
        for name in COMPONENTS:
            raw = float(t.raw[name][i])
            views[name] = ComponentView(
                None if math.isnan(raw) else raw,
                float(t.percentile[name][i]),
                details["dates"].get(name),
                details.get(name, {}),
            )
        reasons = top_reasons(views)
        streets = _streets(sums.streets)
        counts = sums.counts
        cell = t.ids[i]
        row: dict[str, Any] = {
            "level": level,
            "area_id": cell,
            "resolution": H3_LEVELS.get(level),
            "score": float(t.score[i]),
            "rank": int(t.rank[i]),
            "areas_ranked": len(t.ids),
            "in_top": bool(t.rank[i] <= t.top_cutoff),
            "components": {
                name: {
                    "raw": views[name].raw,
                    "percentile": round(views[name].percentile, 6),
                    "data_date": views[name].data_date,
                    "weight": WEIGHTS[name],
                }
                for name in COMPONENTS
            },
            "reasons": reasons,
            "actions": actions(reasons, [s["street"] for s in streets]),
            "streets": streets,
            "counts": {
                k: dict(zip((f"{w}d" for w in COUNT_WINDOWS_DAYS), v, strict=True))
                for k, v in sorted(counts.items())
            },
            "survey": details["survey"],
            "engagement": details["engagement"],
            "ward_code": None,
            "local_authority_code": None,
            "as_of": now,
            "weights_version": WEIGHTS_VERSION,
        }
        if level == "res9":
            row["ward_code"] = self.ward_of[i]
            row["local_authority_code"] = self.la_of[i]
            row["parents"] = {
                "res8": h3.cell_to_parent(cell, 8),
                "res7": h3.cell_to_parent(cell, 7),
            }
        elif level in ("res8", "res7"):
            row["local_authority_code"] = _dominant(self.la_of[m] for m in members)
            row["ward_code"] = _dominant(self.ward_of[m] for m in members)
        elif level == "ward":
            row["ward_code"] = cell
            row["local_authority_code"] = _dominant(self.la_of[m] for m in members)
        elif level == "local_authority":
            row["local_authority_code"] = cell
            row["name"] = self.ref.local_authority_names.get(cell)
        else:
            row["context"] = self._force_context()
        return row

    def _counts(self, state: CellState, now: float) -> dict[str, list[int]]:
        """``counts_in_windows`` of one cell state, cached per state and day (coarse rows sum
        thousands of cells: the force row would otherwise count every cell's crimes again)."""
        if not state.get("d"):
            return {}
        today = int(now // DAY)
        hit = self._count_cache.get(id(state))
        if hit is not None and hit[0] is state and hit[1] == today:
            return hit[2]
        counts = counts_in_windows(state, now, COUNT_WINDOWS_DAYS)
        self._count_cache[id(state)] = (state, today, counts)
        return counts

    def _details(
        self,
        level: str,
        area: str,
        members: list[int],
        tables: Tables,
        sums: _Sums,
    ) -> dict[str, Any]:
        by_type, priorities, deciles = sums.by_type, sums.priorities, sums.deciles
        asb, cs, cn, reg, knocks = sums.asb, sums.cs, sums.cn, sums.reg, sums.knocks
        dates = sums.dates
        households = float(sums.households)
        top_type = max(by_type, key=lambda k: (by_type[k], k)) if by_type else None
        survey = None
        if cn >= MIN_RESPONSES:
            survey = {
                "responses": cn,
                "mean_confidence": round(cs / cn, 3),
                "priority_share": {p: round(n / cn, 3) for p, n in sorted(priorities.items())},
            }
        la = None
        if level == "local_authority":
            la = area
        elif members:
            la = _dominant(self.la_of[m] for m in members)
        rep = tables.representation.get("" if level == "force" else (la or "\0"))
        return {
            "dates": {k: iso_date(v) for k, v in dates.items()},
            "harm": {"top_type": top_type},
            "near_repeat": {"weeks": NEAR_REPEAT_WEEKS},
            "concern": {
                "asb": asb,
                "top_priority": (
                    max(priorities, key=lambda p: (priorities[p], p))
                    if cn >= MIN_RESPONSES and priorities
                    else None
                ),
            },
            "trust_gap": {
                "local_mean": cs / cn if cn else 0.0,
                "force_mean": tables.force_mean_confidence or 0.0,
                "responses": cn,
            },
            "engagement_gap": {"households": households},
            "deprivation": {
                "income_decile": min(deciles, key=lambda d: (-deciles[d], d)) if deciles else None
            },
            "representation_gap": (
                {
                    "group": rep.group,
                    "registered_share": rep.registered_share,
                    "population_share": rep.population_share,
                    "area": self.ref.local_authority_names.get(la or "", la or "the force area")
                    if level != "force"
                    else self.ref.force_name,
                }
                if rep
                else {}
            ),
            "survey": survey,
            "engagement": {
                "registered": reg,
                "addresses_visited": knocks,
                "households_estimated": round(households, 1),
            },
        }

    def _force_context(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, name in ((OUTSIDE_FORCE, "outside_force_area"), (UNLOCATED, "unlocated")):
            st = self.pseudo.get(key) or {}
            out[name] = dict(sorted((st.get("tot") or {}).items()))
            if key == UNLOCATED:
                out["unlocated_registrations"] = (st.get("rg") or {}).get("n", 0)
        return out


@dataclass
class _Sums:
    """What an area's row sums over its member cells, added a slice of cells at a time (in
    member order, so the float sums are the same however the cells are sliced)."""

    now: float
    by_type: dict[str, float] = field(default_factory=dict)
    asb: float = 0.0
    cs: float = 0.0
    cn: float = 0.0
    priorities: Counter[str] = field(default_factory=Counter)
    reg: int = 0
    knocks: int = 0
    dates: dict[str, float] = field(default_factory=dict)
    households: float = 0.0
    deciles: Counter[int] = field(default_factory=Counter)
    streets: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, list[int]] = field(default_factory=dict)

    def newest(self, name: str, t: float | None) -> None:
        if t is not None and math.isfinite(t) and t > self.dates.get(name, -math.inf):
            self.dates[name] = t

    def add(self, model: PriorityModel, states: list[CellState], members: list[int]) -> None:
        now, by_type, newest = self.now, self.by_type, self.newest
        for st in states:
            for crime_type, ds in (st.get("ht") or {}).items():
                by_type[crime_type] = by_type.get(crime_type, 0.0) + decay.value_at(
                    ds, now, HARM_HALF_LIFE
                )
            if st.get("h"):
                newest("harm", st["h"][1])
            if st.get("a"):
                self.asb += decay.value_at(st["a"], now, CONCERN_HALF_LIFE)
                newest("concern", st["a"][1])
            newest("near_repeat", nearrepeat.newest_burglary(st.get("nr") or []))
            sv = st.get("sv")
            if sv:
                self.cs += sv["cs"]
                self.cn += sv["cn"]
                self.priorities.update({p: n for p, n in sv["p"].items() if n > 0})
                newest("concern", sv.get("t"))
                newest("trust_gap", sv.get("t"))
            rg = st.get("rg")
            if rg:
                self.reg += rg["n"]
                newest("engagement_gap", rg.get("t"))
                newest("representation_gap", rg.get("t"))
            kn = st.get("kn")
            if kn:
                self.knocks += kn["a"]
                newest("engagement_gap", kn.get("t"))
            if st.get("ls") or st.get("rls"):
                newest("deprivation", st.get("t"))
            for key, n in (st.get("ls") or {}).items():
                info = model.ref.imd(key)
                if info:
                    self.deciles[info.decile] += n
            for street, (s, t, n) in (st.get("st") or {}).items():
                acc = self.streets.setdefault(street, [0.0, 0.0])
                acc[0] += decay.value_at([s, t], now, HARM_HALF_LIFE)
                acc[1] += n
            for crime_type, vals in model._counts(st, now).items():
                total = self.counts.setdefault(crime_type, [0] * len(COUNT_WINDOWS_DAYS))
                for j, v in enumerate(vals):
                    total[j] += v
        households = model.cols["households"]
        for m in members:
            self.households += households[m]


class RowBuilder:
    """One area's row from a snapshot of its member cells' states, built a slice at a time.

    Why: a coarse row sums every member cell (the force row reads them all: about half a
    second with a year of state), and the scorer must not hold up a batch that long. It adds
    slices between batches and finishes the row from the snapshot, consistent with the
    ``tables`` it was taken with (states are replaced, never changed, when cells merge)."""

    def __init__(
        self,
        model: PriorityModel,
        tables: Tables,
        level: str,
        i: int,
        members: list[int],
        states: list[CellState],
    ) -> None:
        self.model, self.tables, self.level, self.i = model, tables, level, i
        self.members, self.states = members, states
        self.sums = _Sums(tables.as_of)
        self.done = 0

    @property
    def complete(self) -> bool:
        return self.done >= len(self.members)

    def add(self, cells: int | None = None) -> None:
        """Sum the next ``cells`` member cells (all that are left by default)."""
        end = len(self.members) if cells is None else min(len(self.members), self.done + cells)
        self.sums.add(self.model, self.states[self.done : end], self.members[self.done : end])
        self.done = end

    def finish(self) -> dict[str, Any]:
        assert self.complete, "add() every member first"
        return self.model._finish_row(self.tables, self.level, self.i, self.members, self.sums)


def _streets(merged: dict[str, list[float]]) -> list[dict[str, Any]]:
    ordered = sorted(merged.items(), key=lambda kv: (-round(kv[1][0], 9), -kv[1][1], kv[0]))
    return [
        {"street": street, "harm": round(h, 6), "crimes": int(n)}
        for street, (h, n) in ordered[:MAX_STREETS]
    ]


def _worse(
    a: comp.Representation | None, b: comp.Representation | None
) -> comp.Representation | None:
    if a is None or b is None:
        return a or b
    return a if a.gap >= b.gap else b


def _dominant(values: Iterable[str | None]) -> str | None:
    counts = Counter(v for v in values if v)
    if not counts:
        return None
    return min(counts, key=lambda k: (-counts[k], k))
