"""Harm weights: Cambridge Crime Harm Index days per police.uk crime type (DESIGN §5).

The table ships with the project (``lpt/data``), a copy of the national CCHI 2026 file, so a
deployment needs nothing from outside to score. Excluded categories weigh 0 here, whatever the
file says, so no caller can forget the exclusion.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

from lpt.settings import PROJECT_ROOT
from schemas.common import CRIME_TYPES
from streams.scoring.config import EXCLUDED_FROM_HARM

HARM_WEIGHTS_FILE = (
    PROJECT_ROOT / "lpt" / "data" / "cchi2026_days_by_policeuk_crime_type_national.csv"
)


def load_harm_weights(path: Path = HARM_WEIGHTS_FILE) -> MappingProxyType[str, float]:
    """{crime type: CCHI days}; excluded types 0. Raises ValueError on a malformed or
    incomplete file (a missing type would silently score 0)."""
    weights: dict[str, float] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"crime_type", "cchi_days"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns crime_type,cchi_days")
        for line, row in enumerate(reader, start=2):
            name = (row["crime_type"] or "").strip()
            try:
                days = float(row["cchi_days"])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: cchi_days is not a number") from exc
            if days < 0:
                raise ValueError(f"{path}:{line}: cchi_days must not be negative")
            weights[name] = days
    missing = [t for t in CRIME_TYPES if t not in weights and t not in EXCLUDED_FROM_HARM]
    if missing:
        raise ValueError(f"{path}: no harm weight for {missing}")
    return MappingProxyType(
        {t: 0.0 if t in EXCLUDED_FROM_HARM else weights[t] for t in CRIME_TYPES}
    )


@lru_cache(maxsize=1)
def harm_weights() -> MappingProxyType[str, float]:
    return load_harm_weights()


def harm_weight(crime_type: str) -> float:
    """CCHI days of one crime of this type (0 for excluded or unknown types)."""
    return harm_weights().get(crime_type, 0.0)
