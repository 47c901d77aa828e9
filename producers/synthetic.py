"""Seeded synthetic residents, survey waves and door-knock campaigns on real Humberside postcodes.

For demos and benchmarks: ``lpt generate --residents N --seed S --waves W --start YYYY-MM-DD``
publishes to Kafka (or writes JSON lines with ``--out``). The same seed and parameters give
byte-identical output: event ids come from :func:`deterministic_id`, every timestamp (including
``produced_at``) is derived from the seed and the start date, never from the wall clock, and
re-publishing a run is therefore idempotent for every consumer.

How it stays fast and small at 1,000,000 residents: nothing is held per resident. Resident ``i``
is a pure function of ``(seed, i)`` (its own ``random.Random``), so a survey wave re-derives the
residents it needs instead of remembering them. Every stream (registrations, each wave, set-ups,
each campaign's knocks) is generated in event-time order and the streams are merged lazily, so
the output is chronological and memory stays flat.

What a run contains (assumptions in :mod:`producers.synthetic_params`, places in
:mod:`producers.synthetic_geo`):

- ``resident.registered``: spread over the period with a launch surge; placed on postcodes in
  proportion to Census population times a registration propensity that falls with income
  deprivation; aged 16+ following the Census 2021 age structure of the (estimated) LSOA; a
  share states an ethnic group (Census TS021 of its MSOA), used for area-level representation
  only; a small share lives on real postcodes without coordinates (``unlocated``).
- ``survey.answered``: one wave per calendar quarter (fieldwork weeks 7-9), answered by a
  deprivation-dependent share of the residents registered by then.
- ``setup.created`` + ``doorknock.recorded``: a few four-week campaigns over deprived wards.

Sealing: contact details and concerns are sealed (AES-256-GCM, the layout of
:mod:`identity.crypto`) with a per-resident key derived from the seed (:func:`synthetic_key`),
and nonces derived from the key and the field. That is acceptable **only for synthetic data**:
it makes runs reproducible and lets a demo unseal its own residents. Real registrations use
``identity.crypto.new_key``/``seal`` (random keys and nonces, keys wrapped in the identity
store). The generator writes nothing to the identity store.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import heapq
import json
import random
import sys
import time as wallclock
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tqdm import tqdm

from identity.crypto import KEY_BYTES, NONCE_BYTES
from lpt.logs import get_logger
from lpt.settings import Settings, get_settings
from producers import synthetic_params as P
from producers.synthetic_geo import Geography, Place, cumulative, load_geography, pick
from schemas.common import EncryptedField
from schemas.engagement import DoorKnocked, SurveyAnswered
from schemas.envelope import Envelope, deterministic_id
from schemas.registry import encode
from schemas.residents import ResidentRegistered
from schemas.setups import SetupCreated
from schemas.topics import event_key, topic_for

log = get_logger(__name__)

SOURCE = "lpt-synthetic"
CONSENT_VERSION = "synthetic-1"
#: Days of fieldwork per survey wave, and when in its quarter a wave opens.
WAVE_WINDOW_DAYS = 21
WAVE_OPENS_AFTER_DAYS = 42
#: Period without waves (``--waves 0``): one quarter of registrations and knocks.
QUARTER_DAYS = 91
#: Registrations by hour of day (UTC): evenings and lunchtimes are when people fill in forms.
_HOUR_WEIGHTS = (1, 1, 1, 1, 1, 1, 2, 4, 6, 7, 8, 8, 10, 9, 7, 7, 8, 10, 12, 14, 14, 11, 6, 3)
_TWO32 = float(1 << 32)
_TWO64 = float(1 << 64)
_PRIORITY_COUNT_CUM = tuple(cumulative(P.PRIORITY_COUNT_WEIGHTS))
#: Kafka publishing: events per flush (all topics together).
PUBLISH_CHUNK = 20_000
_YIELD_EVERY = 500


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of a run; equal configs give byte-identical output."""

    residents: int = 10_000
    seed: int = 42
    waves: int = 2
    start: date = date(2026, 1, 1)
    #: Share of residents on real postcodes that have no coordinates (flagged ``unlocated``).
    unlocated_share: float = 0.005
    knocks_per_resident: float = P.KNOCKS_PER_RESIDENT
    #: Door-knock campaigns; None = 2 + one per 100,000 residents (at most 12).
    campaigns: int | None = None
    #: Reference data; None = ``settings.data_dir``.
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.residents < 1:
            raise ValueError("residents must be at least 1")
        if not 0 <= self.waves <= 40:
            raise ValueError("waves must be between 0 and 40")
        if not 0.0 <= self.unlocated_share <= 1.0:
            raise ValueError("unlocated_share must be between 0 and 1")
        if self.knocks_per_resident < 0:
            raise ValueError("knocks_per_resident must not be negative")
        if self.campaigns is not None and self.campaigns < 0:
            raise ValueError("campaigns must not be negative")

    @property
    def campaign_count(self) -> int:
        if self.campaigns is not None:
            return self.campaigns
        return min(P.MAX_CAMPAIGNS, 2 + self.residents // 100_000)


@dataclass
class Summary:
    """What a run produced; printed at the end and returned to callers."""

    residents: int = 0
    unlocated: int = 0
    surveys: int = 0
    knocks: int = 0
    setups: int = 0
    seconds: float = 0.0
    by_topic: Counter[str] = field(default_factory=Counter)

    @property
    def events(self) -> int:
        return self.residents + self.surveys + self.knocks + self.setups

    def count(self, event: Envelope, topic: str) -> None:
        self.by_topic[topic] += 1
        if isinstance(event, ResidentRegistered):
            self.residents += 1
            self.unlocated += event.unlocated
        elif isinstance(event, SurveyAnswered):
            self.surveys += 1
        elif isinstance(event, DoorKnocked):
            self.knocks += 1
        elif isinstance(event, SetupCreated):
            self.setups += 1

    def line(self, destination: str) -> str:
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        return (
            f"generated {self.residents:,} residents ({self.unlocated:,} unlocated), "
            f"{self.surveys:,} survey answers, {self.knocks:,} door knocks, "
            f"{self.setups:,} set-ups: {self.events:,} events in {self.seconds:.1f} s "
            f"({rate:,.0f} events/s) -> {destination}"
        )


# --------------------------------------------------------------------------- determinism


def _h(*parts: object) -> int:
    """A 64-bit integer from the parts: seeds for per-item random generators."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


class _Hasher:
    """``_h(seed, tag, index)`` for the hot loops: the prefix is encoded once, same result."""

    __slots__ = ("_prefix",)

    def __init__(self, *parts: object) -> None:
        self._prefix = ("\x1f".join(str(p) for p in parts) + "\x1f").encode()

    def __call__(self, index: int) -> int:
        digest = hashlib.blake2b(self._prefix + str(index).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")


def _hex(nbytes: int, *parts: object) -> str:
    text = "\x1f".join(str(p) for p in parts).encode()
    return hashlib.blake2b(text, digest_size=nbytes).hexdigest()


def resident_id(seed: int, index: int) -> str:
    """Pseudonymous id of synthetic resident ``index`` (distinct per seed)."""
    return "syn" + _hex(10, "resident-id", seed, index)


def synthetic_key(seed: int, rid: str) -> tuple[bytes, str]:
    """(key, key_id) of a synthetic resident, derived from the seed: synthetic data only.

    Lets a demo unseal its own residents' contact details with ``identity.crypto.unseal``.
    """
    root = hashlib.blake2b(f"lpt-synthetic-key\x1f{seed}".encode(), digest_size=32).digest()
    key = hashlib.blake2b(rid.encode(), key=root, digest_size=KEY_BYTES).digest()
    key_id = (
        "ksyn" + hashlib.blake2b(b"id\x1f" + rid.encode(), key=root, digest_size=10).hexdigest()
    )
    return key, key_id


def _seal(key: bytes, key_id: str, purpose: str, plaintext: str) -> EncryptedField:
    """``identity.crypto.seal`` with a nonce derived from (key, purpose) instead of random.

    Each (key, purpose) pair seals exactly one plaintext, so a nonce is never reused with a
    different message under one key.
    """
    nonce = hashlib.blake2b(purpose.encode(), key=key, digest_size=NONCE_BYTES).digest()
    ct = AESGCM(key).encrypt(nonce, plaintext.encode(), key_id.encode())
    return EncryptedField(
        key_id=key_id,
        nonce=base64.b64encode(nonce).decode(),
        ciphertext=base64.b64encode(ct).decode(),
    )


def _at(day: date, seconds: int) -> datetime:
    return datetime.combine(day, time(0), UTC) + timedelta(seconds=seconds)


# --------------------------------------------------------------------------- timeline


@dataclass(frozen=True)
class Wave:
    label: str
    opens: date


def _quarter_start(year: int, quarter: int) -> date:
    return date(year, 3 * (quarter - 1) + 1, 1)


def survey_waves(start: date, waves: int) -> list[Wave]:
    """One wave per calendar quarter, opening six weeks in, the first at least 2 weeks after
    ``start`` (so residents have registered before they are asked)."""
    year, quarter = start.year, (start.month - 1) // 3 + 1
    if _quarter_start(year, quarter) + timedelta(days=WAVE_OPENS_AFTER_DAYS) < start + timedelta(
        days=14
    ):
        year, quarter = (year + 1, 1) if quarter == 4 else (year, quarter + 1)
    out: list[Wave] = []
    for _ in range(waves):
        opens = _quarter_start(year, quarter) + timedelta(days=WAVE_OPENS_AFTER_DAYS)
        out.append(Wave(f"{year}Q{quarter}", opens))
        year, quarter = (year + 1, 1) if quarter == 4 else (year, quarter + 1)
    return out


@dataclass(frozen=True)
class _Campaign:
    number: int
    setup_id: str
    ward_code: str
    starts_on: date
    knocks: int
    officers: tuple[str, ...]


def _allocate(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` near-equal integers that sum exactly to it."""
    return [(total * (k + 1)) // parts - (total * k) // parts for k in range(parts)]


# --------------------------------------------------------------------------- the generator


@dataclass(frozen=True, slots=True)
class _Resident:
    index: int
    rid: str
    place: Place
    age_band: str | None
    ethnic_group: str | None
    channels: tuple[str, ...]
    community_groups: tuple[str, ...]
    #: Uniform draw fixing this resident's baseline confidence (quantile in the local curve).
    trust: float


_Item = tuple[int, Envelope]  # (event time in seconds since start, event)


class SyntheticGenerator:
    """One run's streams. Build once per config; iterate :meth:`events` as often as needed."""

    def __init__(self, config: SyntheticConfig, geography: Geography | None = None) -> None:
        self.config = config
        self.geo = geography or load_geography(config.data_dir or get_settings().data_dir)
        self.seed = config.seed
        self._h_place = _Hasher(self.seed, "place")
        self._h_resident = _Hasher(self.seed, "resident")
        self._h_trust = _Hasher(self.seed, "trust")
        self._weights = cumulative(
            p.population * P.registration_propensity(p.income_decile) for p in self.geo.located
        )
        self.waves = survey_waves(config.start, config.waves)
        self.registration_days = (
            (self.waves[-1].opens - config.start).days if self.waves else QUARTER_DAYS
        )
        last = self.waves[-1].opens + timedelta(days=WAVE_WINDOW_DAYS) if self.waves else None
        self.period_days = (last - config.start).days if last else QUARTER_DAYS
        self.campaigns = self._plan_campaigns()

    # ------------------------------------------------------------------ residents

    def registered_by_day(self, day: int) -> int:
        """Residents registered before day ``day`` (launch surge: density falls linearly)."""
        d = min(max(day, 0), self.registration_days)
        x = d / self.registration_days
        return round(self.config.residents * (1 - (1 - x) ** 2))

    def place_of(self, index: int) -> Place:
        """Where resident ``index`` lives: one hash, no generator (survey waves ask a lot)."""
        h = self._h_place(index)
        u_unlocated, u_place = (h >> 32) / _TWO32, (h & 0xFFFFFFFF) / _TWO32
        geo = self.geo
        if geo.unlocated and u_unlocated < self.config.unlocated_share:
            return geo.unlocated[int(u_place * len(geo.unlocated))]
        return geo.located[pick(self._weights, u_place)]

    def resident(self, index: int) -> _Resident:
        """Resident ``index`` of this seed: the same answer every time it is asked."""
        place = self.place_of(index)
        rng = random.Random(self._h_resident(index))
        draw = rng.random
        age: str | None = None
        if draw() < P.AGE_ANSWER_RATE:
            if draw() < P.PREFER_NOT_TO_SAY_RATE:
                age = "prefer_not_to_say"
            else:
                age = self.geo.age_distribution(place).draw(draw())
        ethnic: str | None = None
        if draw() < P.ETHNIC_ANSWER_RATE:
            edist = self.geo.ethnic_distribution(place)
            if draw() < P.PREFER_NOT_TO_SAY_RATE or edist is None:
                ethnic = "prefer_not_to_say"
            else:
                ethnic = edist.draw(draw())
        channels = tuple(c for c, rate in P.CHANNEL_RATES.items() if draw() < rate)
        groups: tuple[str, ...] = ()
        if draw() < P.COMMUNITY_GROUP_RATE:
            groups = (P.COMMUNITY_GROUPS[int(draw() * len(P.COMMUNITY_GROUPS))],)
        return _Resident(
            index=index,
            rid=resident_id(self.seed, index),
            place=place,
            age_band=age,
            ethnic_group=ethnic,
            channels=channels or ("email",),
            community_groups=groups,
            trust=self.trust_of(index),
        )

    def trust_of(self, index: int) -> float:
        """Resident ``index``'s baseline-confidence quantile (a hash: waves need only this)."""
        return self._h_trust(index) / _TWO64

    def _registered(self, r: _Resident, at: datetime) -> ResidentRegistered:
        key, key_id = synthetic_key(self.seed, r.rid)
        contact: dict[str, str] = {"email": f"resident{r.index}.s{self.seed}@example.invalid"}
        if "sms" in r.channels:
            # Ofcom's range reserved for drama: never a real number.
            contact["phone"] = f"07700 900{r.index % 1000:03d}"
        place = r.place
        return ResidentRegistered(
            event_id=deterministic_id(SOURCE, str(self.seed), "resident.registered", r.rid),
            occurred_at=at,
            produced_at=at + timedelta(seconds=1),
            source=SOURCE,
            resident_id=r.rid,
            location=place.location,
            postcode=place.postcode,
            unlocated=place.location is None,
            lsoa_code=place.lsoa_code,
            ward_code=place.ward_code,
            local_authority_code=place.la_code,
            channels=list(r.channels),
            contact=_seal(key, key_id, "contact", json.dumps(contact, sort_keys=True)),
            age_band=r.age_band,
            ethnic_group=r.ethnic_group,
            community_groups=list(r.community_groups),
            consent_version=CONSENT_VERSION,
        )

    def registrations(self) -> Iterator[_Item]:
        start = self.config.start
        index = 0
        weights = list(_HOUR_WEIGHTS)
        for day in range(self.registration_days):
            n = self.registered_by_day(day + 1) - self.registered_by_day(day)
            if n <= 0:
                continue
            rng = random.Random(_h(self.seed, "registration-day", day))
            hours = rng.choices(range(24), weights=weights, k=n)
            seconds = sorted(h * 3600 + rng.randrange(3600) for h in hours)
            for sec in seconds:
                at = _at(start + timedelta(days=day), sec)
                yield day * 86400 + sec, self._registered(self.resident(index), at)
                index += 1

    # ------------------------------------------------------------------ surveys

    def _confidence(self, place: Place, trust: float, rng: random.Random) -> int:
        """The resident's baseline level in the local curve, drifting a point now and then."""
        weights = P.confidence_weights(place.income_decile)
        target = trust * sum(weights)
        level, acc = 5, 0.0
        for i, w in enumerate(weights):
            acc += w
            if target < acc:
                level = i + 1
                break
        if rng.random() < P.CONFIDENCE_DRIFT:
            level += 1 if rng.random() < 0.5 else -1
        return min(5, max(1, level))

    def _priorities(self, place: Place, rng: random.Random) -> list[str]:
        """Up to three distinct priorities, weighted draws without replacement."""
        names = P.PRIORITY_NAMES
        weights = list(P.priority_weights(place.income_decile, place.la_code))
        count = rng.choices(range(4), cum_weights=_PRIORITY_COUNT_CUM)[0]
        chosen: list[str] = []
        for _ in range(count):
            i = rng.choices(range(len(names)), weights=weights)[0]
            chosen.append(names[i])
            weights[i] = 0.0
        return chosen

    def survey_wave(self, number: int) -> Iterator[_Item]:
        """Answers to wave ``number``, in time order.

        Respondent ``i`` of the ``K`` residents registered when the wave opens answers at
        ``opens + window * (i + u) / K``: increasing in ``i``, so the stream needs no sort.
        """
        wave = self.waves[number]
        open_day = (wave.opens - self.config.start).days
        eligible = self.registered_by_day(open_day)
        window = WAVE_WINDOW_DAYS * 86400
        survey_hash = _Hasher(self.seed, "survey", number)
        for index in range(eligible):
            h = survey_hash(index)
            place = self.place_of(index)
            if (h >> 32) / _TWO32 >= P.survey_response_rate(place.income_decile):
                continue
            rng = random.Random(h)
            rid = resident_id(self.seed, index)
            offset = int(window * (index + (h & 0xFFFFFFFF) / _TWO32) / eligible)
            at = _at(wave.opens, offset)
            confidence = self._confidence(place, self.trust_of(index), rng)
            priorities = self._priorities(place, rng)
            concern: EncryptedField | None = None
            if rng.random() < P.CONCERN_RATE:
                topic = priorities[0] if priorities else rng.choice(sorted(P.CONCERNS))
                texts = P.CONCERNS[topic]
                key, key_id = synthetic_key(self.seed, rid)
                concern = _seal(
                    key, key_id, f"concern\x1f{wave.label}", texts[rng.randrange(len(texts))]
                )
            contact_rate = P.WANTS_CONTACT_LOW_CONFIDENCE if confidence <= 2 else 0.0
            wants_contact = rng.random() < P.WANTS_CONTACT_RATE + contact_rate
            event = SurveyAnswered(
                event_id=deterministic_id(
                    SOURCE, str(self.seed), "survey.answered", rid, wave.label
                ),
                occurred_at=at,
                produced_at=at + timedelta(seconds=1),
                source=SOURCE,
                resident_id=rid,
                wave=wave.label,
                location=place.location,
                confidence=confidence,
                priorities=priorities,
                concern=concern,
                wants_contact=wants_contact,
            )
            yield open_day * 86400 + offset, event

    def expected_surveys(self) -> int:
        """Expected answers over all waves (for the progress bar; the run gives the truth)."""
        total_weight = self._weights[-1]
        mean_rate = 0.0
        prev = 0.0
        for p, cum in zip(self.geo.located, self._weights, strict=True):
            mean_rate += (cum - prev) / total_weight * P.survey_response_rate(p.income_decile)
            prev = cum
        eligible = sum(
            self.registered_by_day((w.opens - self.config.start).days) for w in self.waves
        )
        return round(eligible * mean_rate)

    # ------------------------------------------------------------------ campaigns

    def _plan_campaigns(self) -> list[_Campaign]:
        """Campaigns over the most income-deprived wards (where registration is lowest)."""
        count = self.config.campaign_count
        wards = [
            (sum(self.geo.located[i].income_decile for i in idx) / len(idx), code)
            for code, idx in self.geo.ward_places.items()
            if len(idx) >= 30
        ]
        if not count or not wards:
            return []
        wards.sort()
        rng = random.Random(_h(self.seed, "campaigns"))
        candidates = [code for _, code in wards[: max(2 * count, 6)]]
        chosen = rng.sample(candidates, min(count, len(candidates)))
        total = round(self.config.knocks_per_resident * self.config.residents)
        knocks = _allocate(total, len(chosen))
        span = max(0, self.period_days - 3 - P.CAMPAIGN_DAYS)
        out: list[_Campaign] = []
        for c, ward in enumerate(chosen):
            offset = 3 + (span * c) // max(1, len(chosen) - 1) if len(chosen) > 1 else 3
            officers = tuple(
                "off" + _hex(6, "officer", self.seed, c, j) for j in range(P.OFFICERS_PER_CAMPAIGN)
            )
            out.append(
                _Campaign(
                    number=c + 1,
                    setup_id=f"syn-{_hex(4, 'setup', self.seed)}-{c + 1:02d}",
                    ward_code=ward,
                    starts_on=self.config.start + timedelta(days=offset),
                    knocks=knocks[c],
                    officers=officers,
                )
            )
        return out

    def setups(self) -> Iterator[_Item]:
        items: list[_Item] = []
        for c in self.campaigns:
            places = [self.geo.located[i] for i in self.geo.ward_places[c.ward_code]]
            cells = sorted({p.location.score_cell for p in places if p.location is not None})
            created = datetime.combine(c.starts_on - timedelta(days=2), time(9, 0), UTC)
            event = SetupCreated(
                event_id=deterministic_id(SOURCE, str(self.seed), "setup.created", c.setup_id),
                occurred_at=created,
                produced_at=created + timedelta(seconds=1),
                source=SOURCE,
                setup_id=c.setup_id,
                name=f"Door-knocking campaign {c.number}: ward {c.ward_code}",
                goal=(
                    "Knock on every door in the ward: invite residents to register for "
                    "community messages and hear their local priorities."
                ),
                area_cells=cells[:5000],
                ward_codes=[c.ward_code],
                starts_on=c.starts_on,
                ends_on=c.starts_on + timedelta(days=P.CAMPAIGN_DAYS - 1),
                created_by="sup" + _hex(6, "supervisor", self.seed),
            )
            items.append((int((created - self._start_dt).total_seconds()), event))
        items.sort(key=lambda item: item[0])
        yield from items

    @property
    def _start_dt(self) -> datetime:
        return datetime.combine(self.config.start, time(0), UTC)

    def knocks(self, campaign: _Campaign) -> Iterator[_Item]:
        """A campaign's knocks, Monday to Saturday, 10:00-19:00, in time order."""
        ward = self.geo.ward_places[campaign.ward_code]
        days = [
            campaign.starts_on + timedelta(days=d)
            for d in range(P.CAMPAIGN_DAYS)
            if (campaign.starts_on + timedelta(days=d)).weekday() != 6
        ]
        seq = 0
        for day, n in zip(days, _allocate(campaign.knocks, len(days)), strict=True):
            rng = random.Random(_h(self.seed, "knock-day", campaign.number, day.isoformat()))
            seconds = sorted(36000 + rng.randrange(9 * 3600) for _ in range(n))
            base = (day - self.config.start).days * 86400
            for sec in seconds:
                place = self.geo.located[ward[rng.randrange(len(ward))]]
                outcome = rng.choices(
                    P.KNOCK_OUTCOMES, weights=P.knock_outcome_weights(place.income_decile)
                )[0]
                at = _at(day, sec)
                event = DoorKnocked(
                    event_id=deterministic_id(
                        SOURCE, str(self.seed), "doorknock.recorded", campaign.setup_id, str(seq)
                    ),
                    occurred_at=at,
                    # The officer app syncs within a few minutes.
                    produced_at=at + timedelta(seconds=30 + rng.randrange(300)),
                    source=SOURCE,
                    officer_id=campaign.officers[rng.randrange(len(campaign.officers))],
                    postcode=place.postcode,
                    address_ref=str(1 + rng.randrange(150)),
                    location=place.location,
                    outcome=outcome,
                    setup_id=campaign.setup_id,
                )
                seq += 1
                yield base + sec, event

    # ------------------------------------------------------------------ all together

    def expected_events(self) -> int:
        return (
            self.config.residents
            + self.expected_surveys()
            + len(self.campaigns)
            + sum(c.knocks for c in self.campaigns)
        )

    def events(self) -> Iterator[Envelope]:
        """Every event of the run, in event-time order (ties: registrations first)."""
        streams: list[Iterator[_Item]] = [self.registrations(), self.setups()]
        streams += [self.survey_wave(w) for w in range(len(self.waves))]
        streams += [self.knocks(c) for c in self.campaigns]
        for _, event in heapq.merge(*streams, key=lambda item: item[0]):
            yield event


def generate(config: SyntheticConfig, geography: Geography | None = None) -> Iterator[Envelope]:
    """The typed library entry point: a run's events, chronologically, lazily."""
    return SyntheticGenerator(config, geography).events()


def encoded(
    config: SyntheticConfig, geography: Geography | None = None
) -> Iterator[tuple[str, bytes, bytes, Envelope]]:
    """(topic name without prefix, partition key, JSON bytes, event) for every event."""
    return _encode(SyntheticGenerator(config, geography))


def _encode(gen: SyntheticGenerator) -> Iterator[tuple[str, bytes, bytes, Envelope]]:
    for event in gen.events():
        yield topic_for(event).name, event_key(event), encode(event), event


# --------------------------------------------------------------------------- sinks


def _progress(total: int, enabled: bool) -> tqdm:
    return tqdm(
        total=total,
        unit="ev",
        unit_scale=True,
        desc="generate",
        file=sys.stderr,
        disable=not enabled,
        mininterval=0.5,
    )


def _finish(bar: tqdm) -> None:
    bar.total = bar.n  # the survey count was an estimate
    bar.refresh()
    bar.close()


def write_jsonl(
    config: SyntheticConfig,
    out: Path,
    progress: bool = False,
    geography: Geography | None = None,
) -> Summary:
    """Write the run as JSON lines (one event per line, chronological)."""
    gen = SyntheticGenerator(config, geography)
    summary = Summary()
    started = wallclock.perf_counter()
    bar = _progress(gen.expected_events(), progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb", buffering=1 << 20) as fh:
        since = 0
        for event in gen.events():
            summary.count(event, topic_for(event).name)
            fh.write(encode(event))
            fh.write(b"\n")
            since += 1
            if since == 2000:
                bar.update(since)
                since = 0
        bar.update(since)
    summary.seconds = wallclock.perf_counter() - started
    _finish(bar)
    return summary


async def publish_synthetic(
    config: SyntheticConfig,
    settings: Settings | None = None,
    progress: bool = False,
    geography: Geography | None = None,
) -> Summary:
    """Publish the run to its catalogue topics, pre-encoded, in partition batches."""
    from lpt.kafka import ensure_topics, make_producer, publish_raw

    settings = settings or get_settings()
    await ensure_topics(settings)
    gen = SyntheticGenerator(config, geography)
    summary = Summary()
    started = wallclock.perf_counter()
    bar = _progress(gen.expected_events(), progress)
    prefix = settings.topic_prefix
    producer = make_producer(settings)
    await producer.start()

    async def send(chunk: dict[str, list[tuple[bytes | None, bytes]]], count: int) -> None:
        await asyncio.gather(
            *(publish_raw(producer, prefix + name, msgs) for name, msgs in chunk.items())
        )
        bar.update(count)

    # One chunk in flight while the next is generated: the loop gets a turn every
    # ``_YIELD_EVERY`` events so the client sends and collects acks meanwhile. Chunks go out
    # one after another, so each partition keeps the generator's (event-time) order.
    inflight: asyncio.Task[None] | None = None
    try:
        buffers: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        pending = 0
        for name, key, value, event in _encode(gen):
            buffers[name].append((key, value))
            summary.count(event, name)
            pending += 1
            if pending % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if pending >= PUBLISH_CHUNK:
                if inflight is not None:
                    await inflight
                inflight = asyncio.create_task(send(buffers, pending))
                buffers, pending = defaultdict(list), 0
        if inflight is not None:
            await inflight
            inflight = None
        await send(buffers, pending)
    finally:
        if inflight is not None:
            inflight.cancel()
        await producer.stop()
    summary.seconds = wallclock.perf_counter() - started
    _finish(bar)
    return summary


def cli(args: argparse.Namespace) -> int:
    """``lpt generate``: see the module docstring."""
    try:
        start = date.fromisoformat(args.start)
    except ValueError:
        print(f"--start: not a date (YYYY-MM-DD): {args.start!r}", file=sys.stderr)
        return 2
    try:
        config = SyntheticConfig(
            residents=args.residents, seed=args.seed, waves=args.waves, start=start
        )
    except ValueError as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return 2
    progress = not args.no_progress
    log.info(
        "synthetic.start",
        residents=config.residents,
        seed=config.seed,
        waves=config.waves,
        start=str(config.start),
        out=str(args.out) if args.out else None,
    )
    runner: Callable[[], Summary]
    if args.out:
        out = Path(args.out)

        def runner() -> Summary:
            return write_jsonl(config, out, progress=progress)

        destination = str(out)
    else:
        settings = get_settings()

        def runner() -> Summary:
            return asyncio.run(publish_synthetic(config, settings, progress=progress))

        destination = f"Kafka {settings.bootstrap_servers} ({settings.topic_prefix}* topics)"
    summary = runner()
    print(summary.line(destination))
    log.info("synthetic.done", events=summary.events, seconds=round(summary.seconds, 2))
    return 0
