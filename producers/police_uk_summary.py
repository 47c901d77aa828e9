"""What a police.uk import did, per file and in total: the printed summary and ``import_runs``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from producers.police_uk_rows import EXAMPLE_LINES


@dataclass
class FileSummary:
    """One file's counts. ``by_crime_type`` maps a type to rows / published /
    already_published / out_of_area / unlocated."""

    file: str
    sha256: str = ""
    rows: int = 0
    published: int = 0
    already_published: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_lines: dict[str, list[int]] = field(default_factory=dict)
    out_of_area: int = 0
    unlocated: int = 0
    out_of_area_by_lsoa: Counter[str] = field(default_factory=Counter)
    by_crime_type: dict[str, Counter[str]] = field(default_factory=dict)
    error: str | None = None

    def flagged(self) -> dict[str, Any]:
        """The ``import_runs.flagged`` document."""
        return {
            "already_published": self.already_published,
            "out_of_area": self.out_of_area,
            "unlocated": self.unlocated,
            "out_of_area_by_lsoa": dict(self.out_of_area_by_lsoa),
            "by_crime_type": {k: dict(v) for k, v in sorted(self.by_crime_type.items())},
            "skipped_lines": self.skipped_lines,
            **({"error": self.error} if self.error else {}),
        }


@dataclass
class ImportSummary:
    files: list[FileSummary] = field(default_factory=list)
    seconds: float = 0.0

    def _total(self, attr: str) -> int:
        return sum(int(getattr(f, attr)) for f in self.files)

    @property
    def rows(self) -> int:
        return self._total("rows")

    @property
    def published(self) -> int:
        return self._total("published")

    @property
    def already_published(self) -> int:
        return self._total("already_published")

    @property
    def out_of_area(self) -> int:
        return self._total("out_of_area")

    @property
    def unlocated(self) -> int:
        return self._total("unlocated")

    @property
    def skipped(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.skipped)
        return total

    @property
    def by_crime_type(self) -> dict[str, Counter[str]]:
        total: dict[str, Counter[str]] = {}
        for f in self.files:
            for crime_type, counts in f.by_crime_type.items():
                total.setdefault(crime_type, Counter()).update(counts)
        return total

    @property
    def errors(self) -> list[FileSummary]:
        return [f for f in self.files if f.error]

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def render(self) -> str:
        """The summary ``lpt import police-uk`` prints."""
        out = [
            f"police.uk import: {len(self.files)} file(s), {self.rows:,} rows in "
            f"{self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s)",
            "",
            f"{'file':34} {'rows':>8} {'published':>10} {'already':>8} {'skipped':>8} "
            f"{'out-of-area':>11} {'unlocated':>9}",
        ]
        for f in self.files:
            name = f.file if len(f.file) <= 34 else "..." + f.file[-31:]
            if f.error:
                out.append(f"{name:34} NOT IMPORTED: {f.error}")
                continue
            out.append(
                f"{name:34} {f.rows:>8,} {f.published:>10,} {f.already_published:>8,} "
                f"{sum(f.skipped.values()):>8,} {f.out_of_area:>11,} {f.unlocated:>9,}"
            )
        out.append(
            f"{'total':34} {self.rows:>8,} {self.published:>10,} {self.already_published:>8,} "
            f"{sum(self.skipped.values()):>8,} {self.out_of_area:>11,} {self.unlocated:>9,}"
        )
        out.append("")
        skipped = self.skipped
        if skipped:
            out.append("skipped rows by reason (first lines):")
            for reason, n in skipped.most_common():
                lines = [
                    f"{f.file}:{ln}" for f in self.files for ln in f.skipped_lines.get(reason, [])
                ]
                out.append(f"  {reason:28} {n:>8,}   {', '.join(lines[:EXAMPLE_LINES])}")
        else:
            out.append("skipped rows: none")
        if self.out_of_area:
            areas: Counter[str] = Counter()
            for f in self.files:
                areas.update(f.out_of_area_by_lsoa)
            top = ", ".join(f"{a} {n}" for a, n in areas.most_common(6))
            out.append(
                f"outside the force area (published flagged in_force_area=false, kept out of the "
                f"force's tables): {self.out_of_area:,} [{top}]"
            )
        if self.unlocated:
            out.append(f"without coordinates (published unlocated): {self.unlocated:,}")
        out += [
            "",
            f"{'crime type':32} {'rows':>8} {'published':>10} {'already':>8} {'out-of-area':>11}"
            f" {'unlocated':>9}",
        ]
        for crime_type, c in sorted(self.by_crime_type.items()):
            out.append(
                f"{crime_type:32} {c['rows']:>8,} {c['published']:>10,} "
                f"{c['already_published']:>8,} {c['out_of_area']:>11,} {c['unlocated']:>9,}"
            )
        return "\n".join(out)
