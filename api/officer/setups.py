"""Targeted set-ups (priority campaigns): create, update, archive, read, progress report.

Every change, targets included, is first published to ``setups.lifecycle`` (the truth, which
the notification worker and the stream processors also read) and then applied to the app's
projection at once; a replay of the topic therefore rebuilds set-ups and their targets.
Archiving makes a set-up read-only; nothing about it is ever deleted, so its report stays.
"""

from __future__ import annotations

import secrets
from datetime import date
from typing import Annotated, Any, Self

import h3
from aiohttp import web
from aiokafka.errors import KafkaError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from api.context import RESOURCES
from api.http import HTTPProblem, parse_body
from api.officer.access import MANAGERS, READERS, forbid_out_of_scope, require
from api.officer.accounts import Account
from api.officer.areas import AreaIndex
from api.officer.projection import apply_setup
from api.officer.state import officer_state
from lpt.kafka import publish
from lpt.logs import get_logger
from schemas.envelope import Envelope, utcnow
from schemas.setups import SetupArchived, SetupCreated, SetupTargets, SetupUpdated

log = get_logger(__name__)

SOURCE = "officer-app"
Code = Annotated[str, StringConstraints(pattern=r"^[A-Z][0-9]{8}$")]


class Targets(SetupTargets):
    """The request body's targets: the event's model, so the limits are stated once."""

    model_config = ConfigDict(extra="forbid")

    def for_event(self) -> SetupTargets:
        return SetupTargets.model_validate(self.model_dump())


class SetupIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=120)
    goal: str = Field(min_length=1, max_length=2000)
    area_cells: list[str] = Field(default_factory=list, max_length=5000)
    ward_codes: list[Code] = Field(default_factory=list, max_length=200)
    community_group: str | None = Field(default=None, min_length=1, max_length=120)
    starts_on: date
    ends_on: date
    revisit_registered: bool = False
    targets: Targets = Field(default_factory=Targets)

    @field_validator("area_cells")
    @classmethod
    def _cells(cls, v: list[str]) -> list[str]:
        for cell in v:
            if not h3.is_valid_cell(cell) or h3.get_resolution(cell) != 9:
                raise ValueError("area cells must be H3 cells of resolution 9")
        return sorted(set(v))

    @field_validator("ends_on")
    @classmethod
    def _dates(cls, v: date, info: Any) -> date:
        starts = info.data.get("starts_on")
        if starts is not None and v < starts:
            raise ValueError("ends_on is before starts_on")
        return v

    @model_validator(mode="after")
    def _area(self) -> Self:
        if not (self.area_cells or self.ward_codes or self.community_group):
            raise ValueError("a set-up needs area cells, wards or a community group")
        return self


class SetupPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=120)
    goal: str | None = Field(default=None, min_length=1, max_length=2000)
    ends_on: date | None = None
    revisit_registered: bool | None = None
    targets: Targets | None = None


def setup_in_scope(index: AreaIndex, account: Account, row: dict[str, Any]) -> bool:
    scope = account.scope
    if scope.force_wide:
        return True
    if not row["area_cells"] and not row["ward_codes"]:
        return True  # a community-group set-up has no area to restrict it
    return any(index.ward_in_scope(w, scope) for w in row["ward_codes"]) or any(
        index.cell_in_scope(c, scope) for c in row["area_cells"]
    )


def _row_json(row: dict[str, Any], targets: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "setup_id": row["setup_id"],
        "name": row["name"],
        "goal": row["goal"],
        "area_cells": list(row["area_cells"]),
        "ward_codes": list(row["ward_codes"]),
        "community_group": row["community_group"],
        "starts_on": row["starts_on"].isoformat(),
        "ends_on": row["ends_on"].isoformat(),
        "revisit_registered": row["revisit_registered"],
        "created_by": row["created_by"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "archived": row["archived_at"] is not None,
        "archived_at": row["archived_at"].isoformat() if row["archived_at"] else None,
        "targets": targets or {"doors": None, "registrations": None, "survey_responses": None},
    }


async def load_setup(request: web.Request, account: Account, setup_id: str) -> dict[str, Any]:
    """The set-up row, 404 when unknown, 403 when outside the account's scope."""
    state = officer_state(request)
    row = await state.pool.fetchrow("SELECT * FROM officer_setups WHERE setup_id = $1", setup_id)
    if row is None:
        raise HTTPProblem(404, "no such set-up", "setup_id")
    data = dict(row)
    forbid_out_of_scope(setup_in_scope(await state.areas.get(), account, data))
    return data


async def _targets(request: web.Request, setup_id: str) -> dict[str, Any] | None:
    row = await officer_state(request).pool.fetchrow(
        "SELECT doors, registrations, survey_responses FROM officer_setup_targets "
        "WHERE setup_id = $1",
        setup_id,
    )
    return dict(row) if row else None


async def _publish(request: web.Request, event: Envelope) -> None:
    res = request.app[RESOURCES]
    try:
        await publish(res.producer, [event], officer_state(request).settings)
    except KafkaError as exc:
        log.warning("officer.setup_publish_failed", type=event.type, error=type(exc).__name__)
        raise HTTPProblem(503, "not saved: the event bus is unavailable, try again") from None
    await apply_setup(officer_state(request).pool, event)


async def create_setup(request: web.Request, account: Account, data: SetupIn) -> dict[str, Any]:
    index = await officer_state(request).areas.get()
    if not account.scope.force_wide:
        for ward in data.ward_codes:
            forbid_out_of_scope(index.ward_in_scope(ward, account.scope))
        for cell in data.area_cells:
            forbid_out_of_scope(index.cell_in_scope(cell, account.scope))
    setup_id = "su-" + secrets.token_urlsafe(9)
    event = SetupCreated(
        occurred_at=utcnow(),
        source=SOURCE,
        setup_id=setup_id,
        name=data.name,
        goal=data.goal,
        area_cells=data.area_cells,
        ward_codes=list(data.ward_codes),
        community_group=data.community_group,
        starts_on=data.starts_on,
        ends_on=data.ends_on,
        revisit_registered=data.revisit_registered,
        created_by=account.account_id,
        targets=data.targets.for_event(),  # in the event: a replay of the topic keeps them
    )
    await _publish(request, event)
    log.info("officer.setup_created", setup_id=setup_id, by=account.account_id)
    return await setup_json(request, account, setup_id)


async def update_setup(
    request: web.Request, account: Account, setup_id: str, patch: SetupPatch
) -> dict[str, Any]:
    row = await load_setup(request, account, setup_id)
    if row["archived_at"] is not None:
        raise HTTPProblem(409, "this set-up is archived and read-only", "setup_id")
    if patch.ends_on is not None and patch.ends_on < row["starts_on"]:
        raise HTTPProblem(422, "ends_on is before starts_on", "ends_on")
    if any(
        v is not None
        for v in (patch.name, patch.goal, patch.ends_on, patch.revisit_registered, patch.targets)
    ):
        await _publish(
            request,
            SetupUpdated(
                occurred_at=utcnow(),
                source=SOURCE,
                setup_id=setup_id,
                name=patch.name,
                goal=patch.goal,
                ends_on=patch.ends_on,
                revisit_registered=patch.revisit_registered,
                targets=patch.targets.for_event() if patch.targets is not None else None,
            ),
        )
    return await setup_json(request, account, setup_id)


async def archive_setup(request: web.Request, account: Account, setup_id: str) -> dict[str, Any]:
    row = await load_setup(request, account, setup_id)
    if row["archived_at"] is not None:
        raise HTTPProblem(409, "this set-up is already archived", "setup_id")
    await _publish(
        request,
        SetupArchived(
            occurred_at=utcnow(), source=SOURCE, setup_id=setup_id, archived_by=account.account_id
        ),
    )
    return await setup_json(request, account, setup_id)


async def setup_json(request: web.Request, account: Account, setup_id: str) -> dict[str, Any]:
    row = await load_setup(request, account, setup_id)
    return _row_json(row, await _targets(request, setup_id))


async def setups_for(request: web.Request, account: Account) -> list[dict[str, Any]]:
    state = officer_state(request)
    index = await state.areas.get()
    rows = await state.pool.fetch(
        """SELECT s.*, t.doors, t.registrations AS t_reg, t.survey_responses AS t_surv
           FROM officer_setups s LEFT JOIN officer_setup_targets t USING (setup_id)
           ORDER BY s.archived_at IS NOT NULL, s.starts_on DESC, s.name"""
    )
    out = []
    for r in rows:
        data = dict(r)
        if setup_in_scope(index, account, data):
            targets = {
                "doors": data["doors"],
                "registrations": data["t_reg"],
                "survey_responses": data["t_surv"],
            }
            out.append(_row_json(data, targets))
    return out


# -- handlers ---------------------------------------------------------------------------------


async def list_handler(request: web.Request) -> web.Response:
    account = await require(request, READERS)
    items = await setups_for(request, account)
    archived = request.query.get("archived")
    if archived in ("0", "false"):
        items = [i for i in items if not i["archived"]]
    elif archived in ("1", "true"):
        items = [i for i in items if i["archived"]]
    return web.json_response({"count": len(items), "items": items})


async def create_handler(request: web.Request) -> web.Response:
    account = await require(request, MANAGERS)
    data = await parse_body(request, SetupIn)
    return web.json_response(await create_setup(request, account, data), status=201)


async def get_handler(request: web.Request) -> web.Response:
    account = await require(request, READERS)
    return web.json_response(await setup_json(request, account, request.match_info["setup_id"]))


async def patch_handler(request: web.Request) -> web.Response:
    account = await require(request, MANAGERS)
    patch = await parse_body(request, SetupPatch)
    return web.json_response(
        await update_setup(request, account, request.match_info["setup_id"], patch)
    )


async def archive_handler(request: web.Request) -> web.Response:
    account = await require(request, MANAGERS)
    return web.json_response(await archive_setup(request, account, request.match_info["setup_id"]))


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/setups", list_handler)
    app.router.add_post("/api/v1/setups", create_handler)
    app.router.add_get("/api/v1/setups/{setup_id}", get_handler)
    app.router.add_patch("/api/v1/setups/{setup_id}", patch_handler)
    app.router.add_post("/api/v1/setups/{setup_id}/archive", archive_handler)
