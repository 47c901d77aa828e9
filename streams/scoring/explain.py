"""Plain-English reasons and recommended actions (DESIGN §5).

A reason names a component, its raw value and the event date of the newest input behind it;
the text says what that means for an officer. Actions follow from the reasons; they are advice
about places and activities, never about individuals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams.scoring.config import COMPONENTS, WEIGHTS


@dataclass(frozen=True)
class ComponentView:
    """One component of one area, as the reasons need it."""

    raw: float | None
    percentile: float
    data_date: str | None  # ISO date of the newest input behind the value
    detail: Mapping[str, Any]


def _pct(x: float) -> str:
    return f"{round(100 * x)}%"


def _floor_pct(x: float) -> str:
    """ "Higher than 99%" must not be rounded up to a claim about every area."""
    return f"{math.floor(100 * x + 1e-9)}%"


def reason_text(component: str, view: ComponentView) -> str:
    d = view.detail
    higher = f"higher than {_floor_pct(view.percentile)} of the force's areas"
    raw = view.raw or 0.0
    if component == "harm":
        top = d.get("top_type")
        mostly = f", mostly {top.lower()}" if top else ""
        return f"Crime harm of {raw:,.0f} harm-days (recent crimes count most){mostly}; {higher}"
    if component == "near_repeat":
        return (
            f"Burglary within about 400 m in the last {d.get('weeks', 8)} weeks "
            f"(near-repeat risk {raw:.2f}); {higher}"
        )
    if component == "concern":
        parts = []
        asb = d.get("asb", 0.0)
        if asb >= 0.5:
            parts.append(f"{asb:,.0f} recent anti-social behaviour reports")
        top = d.get("top_priority")
        if top:
            parts.append(f"residents name {str(top).replace('_', ' ')} as a priority")
        what = " and ".join(parts) or "local concern"
        return f"{what[0].upper()}{what[1:]} (concern {raw:.1f}); {higher}"
    if component == "trust_gap":
        return (
            f"Confidence in local police {d.get('local_mean', 0):.1f}/5 against a force average "
            f"of {d.get('force_mean', 0):.1f}/5 ({d.get('responses', 0)} responses)"
        )
    if component == "engagement_gap":
        return (
            f"Only {_pct(1 - raw)} of an estimated {d.get('households', 0):,.0f} households "
            f"registered or visited"
        )
    if component == "deprivation":
        decile = d.get("income_decile")
        where = f" (income decile {decile}, 1 = most deprived 10%)" if decile else ""
        return f"Income deprivation higher than {_pct(raw)} of England's areas{where}"
    if component == "representation_gap":
        group = str(d.get("group", "")).replace("_", " ")
        return (
            f"Sign-ups in {d.get('area', 'this area')} under-represent {group} "
            f"({_pct(d.get('registered_share', 0))} of sign-ups vs "
            f"{_pct(d.get('population_share', 0))} of residents)"
        )
    raise ValueError(f"unknown component {component!r}")


def top_reasons(
    views: Mapping[str, ComponentView], weights: Mapping[str, float] = WEIGHTS, limit: int = 3
) -> list[dict[str, Any]]:
    """The components contributing most to the score (weight x percentile > 0), best first."""
    scored = [
        (weights[c] * views[c].percentile, c)
        for c in COMPONENTS
        if c in views and views[c].percentile > 0 and views[c].raw is not None
    ]
    scored.sort(key=lambda x: (-x[0], COMPONENTS.index(x[1])))
    out: list[dict[str, Any]] = []
    for _, c in scored[:limit]:
        v = views[c]
        out.append(
            {
                "component": c,
                "raw_value": round(float(v.raw or 0.0), 6),
                "data_date": v.data_date or "",
                "text": reason_text(c, v)[:300],
            }
        )
    return out


ACTIONS: Mapping[str, str] = {
    "near_repeat": (
        "Short visible patrols and crime-prevention visits within 400 m of the burglary "
        "within two weeks"
    ),
    "harm": "Short visible patrols at the streets with the most harm, at the times crimes occur",
    "concern": (
        "Non-enforcement engagement visits on the issues residents raise, then a "
        "'you said, we did' update"
    ),
    "trust_gap": (
        "Non-enforcement engagement visits and a 'you said, we did' update to rebuild confidence"
    ),
    "engagement_gap": "Door-knock the streets not yet visited and invite residents to register",
    "representation_gap": (
        "Outreach through community groups and key contacts to reach under-represented residents"
    ),
    "deprivation": "Work with partner agencies (council, housing, health) on prevention",
}


def actions(reasons: Sequence[Mapping[str, Any]], streets: Sequence[str] = ()) -> list[str]:
    """Recommended actions, one per reason, in the reasons' order, without repeats."""
    out: list[str] = []
    for r in reasons:
        text = ACTIONS[str(r["component"])]
        if r["component"] in ("harm", "near_repeat") and streets:
            text += f" (start with {', '.join(streets[:3])})"
        if text not in out:
            out.append(text)
    return out
