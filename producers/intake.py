"""Intake producer API: registrations, survey answers, door knocks, opt-outs and erasures.

The public pages, the officer app and the HTTP endpoints (``api/intake.py``) all call this one
module, so the privacy rules hold whichever way an input arrives (DESIGN §6):

- personal data goes to the identity vault only; events carry the pseudonymous resident id and
  the contact details sealed with the person's own key;
- opt-out is committed to the identity store before the event is published, so it takes effect
  at once even if Kafka is briefly unavailable (retrying re-publishes the same event id);
- erasure shreds the key and identity row first, then publishes the event; the event keeps the
  same id on a retry, so consumers count it once.

A postcode that exists but has no coordinates is accepted and flagged ``unlocated`` (DESIGN §4);
a postcode that does not exist is refused with an error naming the ``postcode`` field.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
import h3
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from identity.crypto import seal
from identity.vault import EmailAlreadyRegistered, IdentityVault, PersonDetails
from lpt.db import create_pool
from lpt.kafka import make_producer, publish
from lpt.logs import get_logger
from lpt.settings import Settings
from reference.lookup import postcode_info
from schemas.common import (
    AgeBand,
    Channel,
    DoorKnockOutcome,
    EthnicGroup,
    Location,
    Pseudonym,
    SurveyPriority,
    normalise_postcode,
)
from schemas.engagement import DoorKnocked, SurveyAnswered, Wave
from schemas.envelope import Envelope, deterministic_id, utcnow
from schemas.residents import ResidentErasureRequested, ResidentOptedOut, ResidentRegistered

log = get_logger(__name__)

#: Source system names written into the envelopes of intake events.
PUBLIC_SOURCE = "public-web"
OFFICER_SOURCE = "officer-app"
#: How far in the future a device clock may be before an event time is refused.
CLOCK_SKEW = timedelta(minutes=5)

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")
_PHONE_STRIP_RE = re.compile(r"[\s().-]")
_PHONE_RE = re.compile(r"^\+?[0-9]{10,15}$")

Text80 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]


# -- errors -----------------------------------------------------------------------------------


class IntakeError(Exception):
    """An input the intake refuses, with the HTTP status and the field it is about."""

    status = 422

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class UnknownPostcode(IntakeError):
    def __init__(self) -> None:
        super().__init__("postcode is not a known postcode in the reference data", "postcode")


class ResidentNotFound(IntakeError):
    status = 404

    def __init__(self) -> None:
        super().__init__("no registered resident with this id", "resident_id")


class AlreadyOptedOut(IntakeError):
    status = 409

    def __init__(self) -> None:
        super().__init__("this resident has opted out", "resident_id")


class AlreadyRegistered(IntakeError):
    status = 409

    def __init__(self) -> None:
        super().__init__("this e-mail address is already registered", "email")


class PublishFailed(IntakeError):
    """Kafka did not acknowledge; the message says what was (not) kept, so retrying is safe."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__(message, None)


# -- inputs -----------------------------------------------------------------------------------


def _postcode(value: str) -> str:
    try:
        return normalise_postcode(value)
    except ValueError:
        raise ValueError("not a valid UK postcode") from None


class Registration(BaseModel):
    """A resident opting in. At least one way to reach them; each channel needs its detail."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    postcode: str = Field(max_length=10)
    channels: list[Channel] = Field(min_length=1, max_length=3)
    consent_version: str = Field(min_length=1, max_length=32)
    email: str | None = Field(default=None, max_length=254, validate_default=True)
    phone: str | None = Field(default=None, max_length=24, validate_default=True)
    name: str | None = Field(default=None, min_length=1, max_length=120)
    address: str | None = Field(default=None, min_length=1, max_length=200)
    age_band: AgeBand | None = None
    #: Area-level representation figures only, never used to select a person (DESIGN §6).
    ethnic_group: EthnicGroup | None = None
    community_groups: list[Text80] = Field(default_factory=list, max_length=20)

    @field_validator("postcode")
    @classmethod
    def _valid_postcode(cls, v: str) -> str:
        return _postcode(v)

    @field_validator("channels")
    @classmethod
    def _distinct_channels(cls, v: list[Channel]) -> list[Channel]:
        if len(set(v)) != len(v):
            raise ValueError("channels must not repeat")
        return v

    # Field validators (not a model validator) so each error names its field for the 422.
    @field_validator("email")
    @classmethod
    def _valid_email(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and v != "":
            if not _EMAIL_RE.match(v):
                raise ValueError("not a valid e-mail address")
            return v
        if "email" in info.data.get("channels", ()):
            raise ValueError("channel 'email' needs an e-mail address")
        return None

    @field_validator("phone")
    @classmethod
    def _valid_phone(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and v != "":
            compact = _PHONE_STRIP_RE.sub("", v)
            if not _PHONE_RE.match(compact):
                raise ValueError("not a valid phone number")
            return compact
        if "sms" in info.data.get("channels", ()):
            raise ValueError("channel 'sms' needs a phone number")
        if "email" in info.data and info.data["email"] is None:
            raise ValueError("give an e-mail address or a phone number")
        return None


class SurveySubmission(BaseModel):
    """One resident's answer to a survey wave."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    resident_id: Pseudonym
    confidence: int = Field(ge=1, le=5)
    priorities: list[SurveyPriority] = Field(default_factory=list, max_length=3)
    #: Free text: personal by nature, so it travels sealed with the resident's key.
    concern: str | None = Field(default=None, max_length=2000)
    wants_contact: bool = False
    #: Defaults to the current quarter.
    wave: Wave | None = None

    @field_validator("priorities")
    @classmethod
    def _distinct(cls, v: list[SurveyPriority]) -> list[SurveyPriority]:
        if len(set(v)) != len(v):
            raise ValueError("priorities must not repeat")
        return v


class DoorKnockReport(BaseModel):
    """An officer's visit to an address (the address within a postcode, never a person)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    officer_id: Pseudonym
    postcode: str = Field(max_length=10)
    outcome: DoorKnockOutcome
    address_ref: str | None = Field(default=None, min_length=1, max_length=80)
    setup_id: str | None = Field(default=None, min_length=1, max_length=64)
    #: When the knock happened (the app may sync later); defaults to now.
    occurred_at: AwareDatetime | None = None

    @field_validator("postcode")
    @classmethod
    def _valid_postcode(cls, v: str) -> str:
        return _postcode(v)

    @field_validator("occurred_at")
    @classmethod
    def _not_future(cls, v: datetime | None) -> datetime | None:
        if v is not None and v > utcnow() + CLOCK_SKEW:
            raise ValueError("must not be in the future")
        return v


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    resident_id: str
    event_id: UUID
    postcode: str
    unlocated: bool
    cell: str | None


@dataclass(frozen=True)
class Published:
    """An event the intake published (id for idempotency, cell for the caller's own display)."""

    event_id: UUID
    cell: str | None


@dataclass(frozen=True)
class OptedOut:
    resident_id: str
    event_id: UUID
    opted_out_at: datetime


@dataclass(frozen=True)
class ErasureDone:
    resident_id: str
    event_id: UUID
    requested_at: datetime


@dataclass(frozen=True)
class PostcodeInfo:
    postcode: str
    location: Location | None
    ward_code: str | None
    local_authority_code: str | None

    @property
    def unlocated(self) -> bool:
        return self.location is None


# -- helpers ----------------------------------------------------------------------------------


async def lookup_postcode(db: asyncpg.Pool | asyncpg.Connection, postcode: str) -> PostcodeInfo:
    """The reference row of a normalised postcode; :class:`UnknownPostcode` if there is none."""
    info = await postcode_info(db, postcode)
    if info is None:
        raise UnknownPostcode()
    return PostcodeInfo(info.postcode, info.location, info.ward_code, info.local_authority_code)


def cell_location(cell: str | None) -> Location | None:
    """A location standing for a whole street cell (its centre): no finer than the cell."""
    if not cell:
        return None
    lat, lng = h3.cell_to_latlng(cell)
    return Location(lat=lat, lng=lng)


def current_wave(now: datetime | None = None) -> str:
    now = now or utcnow()
    return f"{now.year}Q{(now.month - 1) // 3 + 1}"


def contact_plaintext(reg: Registration) -> str:
    """What the notification workers need to reach the person; the address stays behind."""
    contact = {"email": reg.email, "phone": reg.phone, "name": reg.name}
    return json.dumps({k: v for k, v in contact.items() if v is not None}, sort_keys=True)


# -- the producer API -------------------------------------------------------------------------


class Intake:
    """Validated intake onto Kafka, with personal data kept in the identity vault."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        vault: IdentityVault,
        settings: Settings,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.vault = vault
        self.settings = settings

    async def _publish(self, event: Envelope) -> None:
        await publish(self.producer, [event], self.settings)

    async def register_resident(
        self, registration: Registration, source: str = PUBLIC_SOURCE
    ) -> Registered:
        """Opt a resident in: identity row + key, then ``resident.registered`` with sealed contact.

        The publish happens inside the identity transaction: if Kafka refuses, nothing is kept
        and the caller may simply retry.
        """
        reg = registration
        info = await lookup_postcode(self.pool, reg.postcode)
        cell = info.location.cell if info.location else None
        details = PersonDetails(
            postcode=info.postcode,
            channels=tuple(reg.channels),
            consent_version=reg.consent_version,
            email=reg.email,
            phone=reg.phone,
            name=reg.name,
            address=reg.address,
            cell=cell,
            unlocated=info.unlocated,
            ward_code=info.ward_code,
            local_authority_code=info.local_authority_code,
            community_groups=tuple(reg.community_groups),
        )
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                key = await self.vault.create_person(details, conn=conn)
            except EmailAlreadyRegistered:
                raise AlreadyRegistered() from None
            event = ResidentRegistered(
                event_id=deterministic_id("resident.registered", key.resident_id),
                occurred_at=utcnow(),
                source=source,
                resident_id=key.resident_id,
                location=info.location,
                postcode=info.postcode,
                unlocated=info.unlocated,
                ward_code=info.ward_code,
                local_authority_code=info.local_authority_code,
                channels=list(reg.channels),
                contact=seal(key.key, key.key_id, contact_plaintext(reg)),
                age_band=reg.age_band,
                ethnic_group=reg.ethnic_group,
                community_groups=list(reg.community_groups),
                consent_version=reg.consent_version,
            )
            try:
                await self._publish(event)
            except KafkaError as exc:
                log.warning("intake.publish_failed", type=event.type, error=type(exc).__name__)
                raise PublishFailed("registration not saved: event bus unavailable") from None
        log.info(
            "intake.registered",
            resident_id=key.resident_id,
            unlocated=info.unlocated,
            event_id=str(event.event_id),
        )
        return Registered(key.resident_id, event.event_id, info.postcode, info.unlocated, cell)

    async def record_survey_answer(
        self, answer: SurveySubmission, source: str = PUBLIC_SOURCE
    ) -> Published:
        """Publish a survey answer located at the resident's street cell; concern sealed."""
        person = await self.vault.get_person(answer.resident_id)
        if person is None:
            raise ResidentNotFound()
        if person.opted_out_at is not None:
            raise AlreadyOptedOut()
        concern = None
        if answer.concern:
            concern = await self.vault.seal_for(answer.resident_id, answer.concern)
        event = SurveyAnswered(
            occurred_at=utcnow(),
            source=source,
            resident_id=answer.resident_id,
            wave=answer.wave or current_wave(),
            location=cell_location(person.details.cell),
            confidence=answer.confidence,
            priorities=list(answer.priorities),
            concern=concern,
            wants_contact=answer.wants_contact,
        )
        try:
            await self._publish(event)
        except KafkaError:
            raise PublishFailed("survey answer not saved: event bus unavailable") from None
        log.info("intake.survey", resident_id=answer.resident_id, event_id=str(event.event_id))
        return Published(event.event_id, person.details.cell)

    async def record_door_knock(
        self, report: DoorKnockReport, source: str = OFFICER_SOURCE
    ) -> Published:
        """Publish a door-knock visit located at its postcode (unlocated postcodes kept)."""
        info = await lookup_postcode(self.pool, report.postcode)
        event = DoorKnocked(
            occurred_at=report.occurred_at or utcnow(),
            source=source,
            officer_id=report.officer_id,
            postcode=info.postcode,
            address_ref=report.address_ref,
            location=info.location,
            outcome=report.outcome,
            setup_id=report.setup_id,
        )
        try:
            await self._publish(event)
        except KafkaError:
            raise PublishFailed("door knock not saved: event bus unavailable") from None
        log.info("intake.doorknock", officer_id=report.officer_id, event_id=str(event.event_id))
        return Published(event.event_id, info.location.cell if info.location else None)

    async def opt_out(
        self,
        resident_id: str,
        reason: Literal["unsubscribe_link", "preferences", "officer", "other"] = (
            "unsubscribe_link"
        ),
        source: str = PUBLIC_SOURCE,
    ) -> OptedOut:
        """Opt out now: the identity store is updated first, then the event is published.

        Repeating the call is harmless: the first opt-out time is kept and the event is
        re-published with the same id (so a call that failed on Kafka can simply be retried).
        """
        marked = await self.vault.mark_opted_out(resident_id)
        if marked is None:
            raise ResidentNotFound()
        opted_out_at, cell = marked
        event = ResidentOptedOut(
            event_id=deterministic_id("resident.opted_out", resident_id, opted_out_at.isoformat()),
            occurred_at=opted_out_at,
            source=source,
            resident_id=resident_id,
            location=cell_location(cell),
            reason=reason,
        )
        try:
            await self._publish(event)
        except KafkaError:
            raise PublishFailed(
                "opt-out is in effect; its event could not be published yet, please retry"
            ) from None
        return OptedOut(resident_id, event.event_id, opted_out_at)

    async def request_erasure(self, resident_id: str, source: str = PUBLIC_SOURCE) -> ErasureDone:
        """Erase a resident: shred key and identity row, then publish the erasure event."""
        erasure = await self.vault.shred(resident_id)
        if erasure is None:
            raise ResidentNotFound()
        event = ResidentErasureRequested(
            event_id=deterministic_id("resident.erasure_requested", resident_id),
            occurred_at=erasure.requested_at,
            source=source,
            resident_id=resident_id,
            location=cell_location(erasure.cell),
        )
        try:
            await self._publish(event)
        except KafkaError:
            raise PublishFailed(
                "erasure is done; its event could not be published yet, please retry"
            ) from None
        return ErasureDone(resident_id, event.event_id, erasure.requested_at)


@asynccontextmanager
async def open_intake(settings: Settings, **producer_options: Any) -> AsyncIterator[Intake]:
    """An :class:`Intake` with its own pool and producer, for scripts and tools."""
    pool = await create_pool(settings, min_size=1, max_size=4)
    producer = make_producer(settings, **producer_options)
    try:
        await producer.start()
        yield Intake(pool, producer, IdentityVault.from_settings(pool, settings), settings)
    finally:
        await producer.stop()
        await pool.close()
