"""Audience resolution on real PostgreSQL: areas at any H3 resolution, wards, community groups,
set-ups and named residents; opted-out and erased residents never selected; and no audience
ever selected by ethnicity, religion or other special-category data (DESIGN §6)."""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import asyncpg
import h3
import pytest
from pydantic import ValidationError
from test_notifications_support import (
    BEVERLEY,
    HULL,
    HULL_NEAR,
    NOON,
    WARD_BEVERLEY,
    WARD_HULL,
    add_people,
)

from consumers.notifications import audience as audience_module
from consumers.notifications.audience import (
    AUDIENCE_SQL,
    COLUMNS_READ,
    AudienceError,
    criteria_for,
    resolve,
)
from consumers.notifications.setups import apply_setup_event
from identity.crypto import load_master_key
from identity.vault import IdentityVault
from lpt.settings import Settings
from schemas.notifications import Audience
from schemas.setups import SetupArchived, SetupCreated

ROOT = Path(__file__).resolve().parent.parent
GROUP = "Hull Tenants Association"
#: Words that would betray selection on special-category data (UK GDPR art. 9) or on the
#: equality questions residents answer only for area-level figures.
SPECIAL = re.compile(
    r"ethnic|religio|faith|belief|\brace\b|racial|age_band|disab|sexual|gender|health|trade_union",
    re.IGNORECASE,
)


@pytest.fixture
async def pool(isolated_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(isolated_settings.dsn, min_size=1, max_size=3)
    yield p
    await p.close()


async def selected(pool: asyncpg.Pool, audience: Audience) -> set[str]:
    async with pool.acquire() as conn:
        criteria = await criteria_for(conn, audience)
        return {r.resident_id for r in await resolve(conn, criteria, "m-test", NOON)}


async def test_sql_parent_is_exactly_h3_cell_to_parent(pool: asyncpg.Pool) -> None:
    cells = [h3.latlng_to_cell(53.70 + i * 0.013, -0.45 + i * 0.021, 10) for i in range(40)]
    expr = audience_module._PARENT.format(h=audience_module._H3_INT, r="r")
    rows = await pool.fetch(
        f"""SELECT p.cell, r, {expr} AS parent
            FROM unnest($1::text[]) AS p(cell) CROSS JOIN generate_series(0, 10) AS r""",
        cells,
    )
    assert len(rows) == 40 * 11
    for row in rows:
        assert h3.int_to_str(row["parent"]) == h3.cell_to_parent(row["cell"], row["r"])


async def test_areas_groups_setups_and_named_residents(
    isolated_settings: Settings, pool: asyncpg.Pool
) -> None:
    a, b, c, d, e = await add_people(
        pool,
        isolated_settings,
        [(HULL, WARD_HULL), (HULL_NEAR, WARD_HULL), (BEVERLEY, WARD_BEVERLEY), (None, WARD_HULL),
         (BEVERLEY, WARD_BEVERLEY)],
        groups=[[GROUP], [], ["hull tenants association"], [], []],
    )  # fmt: skip
    ids = {p.resident_id: p for p in (a, b, c, d, e)}

    def who(*people: object) -> set[str]:
        return {p.resident_id for p in people}  # type: ignore[attr-defined]

    # Cells at several resolutions select the residents whose street cell lies under them.
    for res in (5, 7, 8, 9):
        expected = {
            rid
            for rid, p in ids.items()
            if p.cell and h3.cell_to_parent(p.cell, res) == h3.cell_to_parent(HULL, res)
        }
        assert await selected(pool, Audience(cells=[h3.cell_to_parent(HULL, res)])) == expected
    assert await selected(pool, Audience(cells=[HULL])) == who(a)
    assert await selected(pool, Audience(cells=[h3.cell_to_children(HULL, 12)[3]])) == who(a)
    assert await selected(pool, Audience(cells=[HULL, BEVERLEY])) == who(a, c, e)
    # Wards (the unlocated resident is reached by ward), groups (case-insensitive), both.
    assert await selected(pool, Audience(ward_codes=[WARD_HULL])) == who(a, b, d)
    assert await selected(pool, Audience(community_group=GROUP.upper())) == who(a, c)
    assert await selected(pool, Audience(ward_codes=[WARD_HULL], community_group=GROUP)) == who(a)
    assert await selected(pool, Audience(resident_ids=[e.resident_id])) == who(e)
    assert await selected(
        pool, Audience(ward_codes=[WARD_BEVERLEY], resident_ids=[a.resident_id])
    ) == who(a, c, e)

    # A targeted set-up contributes its own area and group.
    setup = SetupCreated(
        occurred_at=NOON, source="officer-app", setup_id="su-1", name="Beverley tenants",
        goal="Meet the tenants", area_cells=[h3.cell_to_parent(BEVERLEY, 7)],
        community_group=GROUP, starts_on=date(2026, 3, 1), ends_on=date(2026, 6, 1),
        created_by="sgt-1",
    )  # fmt: skip
    await apply_setup_event(pool, setup)
    assert await selected(pool, Audience(setup_id="su-1")) == who(c)
    await apply_setup_event(
        pool,
        SetupArchived(occurred_at=NOON, source="officer-app", setup_id="su-1", archived_by="x"),
    )
    with pytest.raises(AudienceError) as err:
        await selected(pool, Audience(setup_id="su-1"))
    assert err.value.field == "audience.setup_id" and "archived" in err.value.reason
    with pytest.raises(AudienceError) as err:
        await selected(pool, Audience(setup_id="su-unknown"))
    assert err.value.field == "audience.setup_id"
    with pytest.raises(AudienceError) as err:
        await selected(pool, Audience(cells=["not-a-cell"]))
    assert err.value.field == "audience.cells"


async def test_opted_out_and_erased_residents_are_never_selected(
    isolated_settings: Settings, pool: asyncpg.Pool
) -> None:
    vault = IdentityVault(pool, load_master_key(isolated_settings.master_key_file))
    stay, leave, erased = await add_people(pool, isolated_settings, [(HULL, WARD_HULL)] * 3)
    await vault.mark_opted_out(leave.resident_id)
    await vault.shred(erased.resident_id)
    for audience in (
        Audience(cells=[HULL]),
        Audience(ward_codes=[WARD_HULL]),
        # Even named explicitly.
        Audience(resident_ids=[stay.resident_id, leave.resident_id, erased.resident_id]),
    ):
        assert await selected(pool, audience) == {stay.resident_id}


def test_audience_model_has_no_special_category_field() -> None:
    assert not [f for f in Audience.model_fields if SPECIAL.search(f)]
    for field in ("ethnic_group", "religion", "age_band"):
        with pytest.raises(ValidationError) as err:
            Audience.model_validate({"cells": [HULL], field: "x"})
        assert field in str(err.value)


def test_no_code_path_reads_special_category_data() -> None:
    # The resolver's query reads only the identity columns it declares ...
    referenced = set(re.findall(r"\bp\.([a-z_]+)", AUDIENCE_SQL))
    assert referenced and referenced <= COLUMNS_READ
    assert not [c for c in COLUMNS_READ if SPECIAL.search(c)]
    # ... and no identifier, SQL text or other string in the notification code or its
    # migration names such data (comments and docstrings may explain the rule, so are skipped).
    offending = [
        (path.name, word)
        for path in sorted((ROOT / "consumers" / "notifications").glob("*.py"))
        for word in code_words(path.read_text())
        if SPECIAL.search(word)
    ]
    sql = (ROOT / "lpt" / "migrations" / "006_notifications.sql").read_text()
    sql_code = "\n".join(line.split("--")[0] for line in sql.splitlines())
    offending += [("006_notifications.sql", m) for m in SPECIAL.findall(sql_code)]
    assert offending == []


def code_words(source: str) -> list[str]:
    """Identifiers and non-docstring string constants of a module."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    words: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.append(node.id)
        elif isinstance(node, ast.Attribute):
            words.append(node.attr)
        elif isinstance(node, ast.arg) or (isinstance(node, ast.keyword) and node.arg):
            words.append(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            words.append(node.name)
        elif isinstance(node, ast.alias):
            words.append(node.asname or node.name)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            words.append(node.value)
    return words


async def test_ethnic_group_changes_nothing_in_who_is_selected(
    isolated_settings: Settings, pool: asyncpg.Pool
) -> None:
    """Residents registered through the real intake with different ethnic groups (or none) in
    one area are selected alike; the identity store does not even keep the answer."""
    from producers.intake import Registration, open_intake

    await pool.execute(
        """INSERT INTO ref_postcodes (postcode, lat, lng, cell, unlocated, ward_code,
               local_authority_code)
           VALUES ('HU1 1AA', 53.74406, -0.33280, $1, false, $2, 'E06000010')
           ON CONFLICT (postcode) DO NOTHING""",
        HULL,
        WARD_HULL,
    )
    registered: dict[str, str | None] = {}
    async with open_intake(isolated_settings) as intake:
        for i, group in enumerate(["asian", "black", "white", "prefer_not_to_say", None]):
            done = await intake.register_resident(
                Registration(
                    postcode="hu1 1aa",
                    channels=["email"],
                    consent_version="v1",
                    email=f"eq{i}@example.org",
                    ethnic_group=group,  # type: ignore[arg-type]
                    age_band="25-34" if i % 2 else "65+",
                )
            )
            registered[done.resident_id] = group
    everyone = set(registered)
    # E-mail goes only to confirmed addresses: confirm them all, as their sign-up links would.
    await pool.execute("UPDATE identity_people SET email_confirmed_at = now()")
    assert await selected(pool, Audience(cells=[HULL])) == everyone
    assert await selected(pool, Audience(ward_codes=[WARD_HULL])) == everyone
    assert await selected(pool, Audience(cells=[h3.cell_to_parent(HULL, 7)])) == everyone
    columns = {
        r["column_name"]
        for r in await pool.fetch(
            """SELECT column_name FROM information_schema.columns
               WHERE table_name = 'identity_people' OR table_name LIKE 'notification%'
                  OR table_name LIKE 'reply%'"""
        )
    }
    assert not [c for c in columns if SPECIAL.search(c)]
