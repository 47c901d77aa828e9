"""The optional equality questions, and the area counts that are all we keep of some of them.

Age band and ethnic group are part of the registration event (``ResidentRegistered``), as the
intake defines it, for area-level representation figures. The other questions asked here
(sex, long-term health condition or disability) are kept *only* as counts per ward in
``equality_counts``: nothing ties an answer to a person, so no one can ever be picked, ranked
or filtered by it (DESIGN §6). Every question has "Prefer not to say"; leaving it blank is fine.

Counts are read back only with small numbers suppressed (:data:`MIN_PEOPLE`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg

#: No published figure rests on fewer people than this (DESIGN §6).
MIN_PEOPLE = 10
PREFER_NOT = "prefer_not_to_say"

Choice = tuple[str | None, str, str | None]  # (value, label, hint); value None = divider

AGE_BANDS: Sequence[Choice] = (
    ("0-15", "15 or under", None),
    ("16-24", "16 to 24", None),
    ("25-34", "25 to 34", None),
    ("35-49", "35 to 49", None),
    ("50-64", "50 to 64", None),
    ("65+", "65 or over", None),
    (None, "or", None),
    (PREFER_NOT, "Prefer not to say", None),
)
ETHNIC_GROUPS: Sequence[Choice] = (
    ("asian", "Asian or Asian British", None),
    ("black", "Black, Black British, Caribbean or African", None),
    ("mixed", "Mixed or multiple ethnic groups", None),
    ("white", "White", None),
    ("other", "Another ethnic group", None),
    (None, "or", None),
    (PREFER_NOT, "Prefer not to say", None),
)
SEX: Sequence[Choice] = (
    ("female", "Female", None),
    ("male", "Male", None),
    (None, "or", None),
    (PREFER_NOT, "Prefer not to say", None),
)
DISABILITY: Sequence[Choice] = (
    ("yes", "Yes", None),
    ("no", "No", None),
    (None, "or", None),
    (PREFER_NOT, "Prefer not to say", None),
)
#: The questions kept only as area counts: form field -> allowed answers.
COUNTED: Mapping[str, Sequence[Choice]] = {"sex": SEX, "disability": DISABILITY}


def allowed(choices: Sequence[Choice]) -> set[str]:
    return {v for v, _, _ in choices if v is not None}


async def add_answers(
    conn: asyncpg.Connection | asyncpg.Pool, ward_code: str | None, answers: Mapping[str, str]
) -> None:
    """Add one person's answers to their ward's counts (answers already validated)."""
    items = [(q, a) for q, a in answers.items() if q in COUNTED and a]
    if not items:
        return
    await conn.execute(
        """INSERT INTO equality_counts (ward_code, question, answer, residents)
           SELECT $1, q, a, 1 FROM unnest($2::text[], $3::text[]) AS u(q, a)
           ON CONFLICT (ward_code, question, answer)
           DO UPDATE SET residents = equality_counts.residents + 1""",
        ward_code or "",
        [q for q, _ in items],
        [a for _, a in items],
    )


@dataclass(frozen=True)
class Count:
    ward_code: str | None
    answer: str
    #: None when fewer than :data:`MIN_PEOPLE` (suppressed, never shown).
    residents: int | None


async def counts(conn: asyncpg.Connection | asyncpg.Pool, question: str) -> list[Count]:
    """Counts per ward and answer for one question, small numbers suppressed."""
    rows = await conn.fetch(
        """SELECT ward_code, answer, residents FROM equality_counts
           WHERE question = $1 ORDER BY ward_code, answer""",
        question,
    )
    return [
        Count(
            r["ward_code"] or None,
            r["answer"],
            r["residents"] if r["residents"] >= MIN_PEOPLE else None,
        )
        for r in rows
    ]
