"""The synthetic generator: reproducible, valid, realistic enough, and it lands on Kafka.

The checks read the reference files themselves (not the generator's loader) where they judge
realism, so a bug in the loader cannot hide behind itself.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import get_args

import pytest
from aiokafka import AIOKafkaConsumer

from identity.crypto import unseal
from lpt.settings import Settings
from producers.synthetic import (
    SyntheticConfig,
    SyntheticGenerator,
    cli,
    generate,
    publish_synthetic,
    synthetic_key,
    write_jsonl,
)
from producers.synthetic_geo import HUMBERSIDE_LAS, load_geography
from schemas.common import AgeBand, normalise_postcode
from schemas.engagement import DoorKnocked, SurveyAnswered
from schemas.registry import encode, parse_event
from schemas.residents import ResidentRegistered
from schemas.setups import SetupCreated
from schemas.topics import DOORKNOCKS, RESIDENTS, SETUPS, SURVEYS, event_key, topic_for


def _by_upper_age(labels: Iterable[str]) -> list[str]:
    """Age-band labels youngest first, by their last number ("65+" and "65 and over": 65)."""
    return sorted(labels, key=lambda label: int(re.findall(r"\d+", label)[-1]))


def _age_bands() -> list[str]:
    """The AgeBand literal's age bands (whatever their spelling), youngest first."""
    return _by_upper_age(b for b in get_args(AgeBand) if re.search(r"\d", b))


def _config(data_dir: Path, **kw: object) -> SyntheticConfig:
    base: dict[str, object] = {
        "residents": 400,
        "seed": 11,
        "waves": 2,
        "start": date(2026, 1, 1),
        "data_dir": data_dir,
    }
    base.update(kw)
    return SyntheticConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def nspl(data_dir: Path) -> dict[str, tuple[float, float] | None]:
    """Every NSPL postcode with its coordinates (None when NSPL has none), read directly."""
    out: dict[str, tuple[float, float] | None] = {}
    for path in sorted((data_dir / "postcodes").glob("nspl_*_latlon_*.csv")):
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                pc = normalise_postcode(row["Postcode"])
                out[pc] = (float(row["lat"]), float(row["long"])) if row["lat"] else None
    return out


@pytest.fixture(scope="module")
def run_lines(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    out = tmp_path_factory.mktemp("syn") / "run.jsonl"
    write_jsonl(_config(data_dir), out)
    return out.read_bytes().splitlines()


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(
    data_dir: Path, tmp_path: Path
) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    write_jsonl(_config(data_dir, residents=300), a)
    write_jsonl(_config(data_dir, residents=300), b)
    write_jsonl(_config(data_dir, residents=300, seed=12), c)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    ids_a = {json.loads(line)["event_id"] for line in a.read_bytes().splitlines()}
    ids_c = {json.loads(line)["event_id"] for line in c.read_bytes().splitlines()}
    assert not ids_a & ids_c, "different seeds must not share event ids"
    # The library iterator and the file are the same events.
    lib = [encode(e) for e in generate(_config(data_dir, residents=300))]
    assert lib == a.read_bytes().splitlines()


def test_every_event_validates_after_a_json_round_trip(
    run_lines: list[bytes], data_dir: Path
) -> None:
    kinds: Counter[str] = Counter()
    last = ""
    for line in run_lines:
        event = parse_event(json.loads(line))
        assert encode(event) == line  # nothing lost or reshaped by the round trip
        assert event.source == "lpt-synthetic"
        assert event.produced_at >= event.occurred_at
        stamp = event.occurred_at.isoformat()
        assert stamp >= last, "output is chronological"
        last = stamp
        kinds[type(event).__name__] += 1
    gen = SyntheticGenerator(_config(data_dir))
    assert kinds["ResidentRegistered"] == 400
    assert kinds["SetupCreated"] == len(gen.campaigns) == 2
    assert kinds["DoorKnocked"] == round(0.3 * 400)
    assert kinds["SurveyAnswered"] > 50


def test_contents_surveys_knocks_and_sealing(run_lines: list[bytes]) -> None:
    events = [parse_event(json.loads(line)) for line in run_lines]
    residents = {e.resident_id: e for e in events if isinstance(e, ResidentRegistered)}
    surveys = [e for e in events if isinstance(e, SurveyAnswered)]
    setups = {e.setup_id: e for e in events if isinstance(e, SetupCreated)}
    knocks = [e for e in events if isinstance(e, DoorKnocked)]

    for r in list(residents.values())[:50]:
        key, key_id = synthetic_key(11, r.resident_id)
        assert r.contact.key_id == key_id
        contact = json.loads(unseal(key, r.contact))
        assert contact["email"].endswith("@example.invalid")
        assert "sms" not in r.channels or contact["phone"].startswith("07700 900")
        assert r.age_band != _age_bands()[0]  # under-16s do not register themselves
        with pytest.raises(ValueError):  # another resident's key cannot open it
            unseal(synthetic_key(11, "someone-else")[0], r.contact)

    assert {s.wave for s in surveys} == {"2026Q1", "2026Q2"}
    by_wave: dict[str, set[str]] = defaultdict(set)
    for s in surveys:
        reg = residents[s.resident_id]
        assert reg.occurred_at < s.occurred_at, "answers come after registration"
        assert s.location == reg.location
        assert s.resident_id not in by_wave[s.wave], "one answer per resident per wave"
        by_wave[s.wave].add(s.resident_id)
        if s.concern is not None:
            assert unseal(synthetic_key(11, s.resident_id)[0], s.concern)
    assert any(s.concern for s in surveys) and any(s.wants_contact for s in surveys)
    assert Counter(len(s.priorities) for s in surveys).keys() >= {1, 2, 3}

    outcomes = Counter(k.outcome for k in knocks)
    assert set(outcomes) >= {"no_answer", "spoke", "registered", "declined", "leaflet_left"}
    assert outcomes.most_common(1)[0][0] == "no_answer"
    for k in knocks:
        setup = setups[k.setup_id]
        assert setup.occurred_at < k.occurred_at
        assert setup.starts_on <= k.occurred_at.date() <= setup.ends_on
        assert k.location is not None and k.location.score_cell in setup.area_cells


def test_postcodes_are_real_and_unlocated_ones_are_flagged(
    data_dir: Path, nspl: dict[str, tuple[float, float] | None]
) -> None:
    config = _config(data_dir, residents=1500, waves=0, unlocated_share=0.05)
    unlocated = 0
    for event in generate(config):
        postcode = getattr(event, "postcode", None)
        if postcode is None:
            continue
        assert postcode in nspl, f"{postcode} is not a real postcode"
        coords = nspl[postcode]
        if isinstance(event, ResidentRegistered):
            assert event.local_authority_code in HUMBERSIDE_LAS
            assert event.unlocated == (coords is None)
            if event.unlocated:
                unlocated += 1
                assert event.location is None and event.ward_code is None
                assert event_key(event) == event.resident_id.encode()
                continue
        assert coords is not None
        assert event.location is not None  # type: ignore[attr-defined]
        assert (event.location.lat, event.location.lng) == coords  # type: ignore[attr-defined]
    # 5% of 1,500 = 75 expected; binomial sd about 8.4.
    assert 45 <= unlocated <= 105


def test_age_bands_follow_census_2021(data_dir: Path) -> None:
    """Registrants' age bands match the Census 2021 shares of Humberside's 16+ population."""
    census: Counter[str] = Counter()
    with (data_dir / "census2021" / "census2021_age6_lsoa21_humberside.csv").open() as fh:
        for row in csv.DictReader(fh):
            census[row["age_group"]] += int(row["usual_residents"])
    labels = dict(zip(_by_upper_age(census)[1:], _age_bands()[1:], strict=True))
    adults = sum(census[k] for k in labels)
    expected = {band: census[label] / adults for label, band in labels.items()}

    config = _config(data_dir, residents=5000, waves=0, knocks_per_resident=0)
    gen = SyntheticGenerator(config)
    bands = Counter(ev.age_band for _, ev in gen.registrations())
    stated = sum(n for band, n in bands.items() if band in expected)
    assert stated > 4500
    assert set(bands) <= set(expected) | {"prefer_not_to_say", None}
    for band, share in expected.items():
        # Sampling sd is under 0.7 points; deprivation weighting shifts bands by up to ~1.5.
        assert abs(bands[band] / stated - share) < 0.03, (band, bands[band] / stated, share)


def test_deprivation_shapes_registration_response_and_confidence(data_dir: Path) -> None:
    geo = load_geography(data_dir)
    decile_of = {p.postcode: p.income_decile for p in geo.located}
    population: Counter[int] = Counter()
    for p in geo.located:
        population[p.income_decile] += int(p.population)
    registered: Counter[int] = Counter()
    answered: Counter[int] = Counter()
    confidence: dict[int, list[int]] = defaultdict(list)
    resident_decile: dict[str, int] = {}
    for event in generate(_config(data_dir, residents=3000, waves=1, knocks_per_resident=0)):
        if isinstance(event, ResidentRegistered) and event.postcode in decile_of:
            resident_decile[event.resident_id] = decile_of[event.postcode]
            registered[decile_of[event.postcode]] += 1
        elif isinstance(event, SurveyAnswered) and event.resident_id in resident_decile:
            d = resident_decile[event.resident_id]
            answered[d] += 1
            confidence[d].append(event.confidence)

    def group(deciles: range, counter: Counter[int]) -> int:
        return sum(counter[d] for d in deciles)

    poor, rich = range(1, 3), range(9, 11)
    assert group(poor, registered) / group(poor, population) < 0.75 * (
        group(rich, registered) / group(rich, population)
    )
    assert group(poor, answered) / group(poor, registered) < group(rich, answered) / group(
        rich, registered
    )

    def mean(deciles: range) -> float:
        values = [c for d in deciles for c in confidence[d]]
        return sum(values) / len(values)

    assert mean(poor) < mean(rich) - 0.3


def test_cli_writes_json_lines_and_prints_a_summary(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.jsonl"
    args = argparse.Namespace(
        residents=120, seed=3, waves=1, start="2026-04-01", out=out, no_progress=True
    )
    assert cli(args) == 0
    printed = capsys.readouterr().out
    lines = out.read_bytes().splitlines()
    assert "generated 120 residents" in printed and f"{len(lines):,} events" in printed
    assert {json.loads(x)["wave"] for x in lines if b"survey.answered" in x} == {"2026Q2"}
    bad = argparse.Namespace(
        residents=10, seed=3, waves=1, start="April", out=out, no_progress=True
    )
    assert cli(bad) == 2
    assert "--start" in capsys.readouterr().err


async def test_publish_lands_the_right_counts_on_the_right_topics(
    isolated_settings: Settings, data_dir: Path
) -> None:
    config = _config(data_dir, residents=500, waves=1)
    summary = await publish_synthetic(config, isolated_settings)
    expected = {
        RESIDENTS.name: summary.residents,
        SURVEYS.name: summary.surveys,
        DOORKNOCKS.name: summary.knocks,
        SETUPS.name: summary.setups,
    }
    assert summary.residents == 500 and summary.setups == 2 and summary.knocks == 150
    assert summary.surveys > 0

    prefix = isolated_settings.topic_prefix
    consumer = AIOKafkaConsumer(
        *(prefix + name for name in expected),
        bootstrap_servers=isolated_settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: Counter[str] = Counter()
    try:
        total = sum(expected.values())
        for _ in range(60):
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    event = parse_event(json.loads(record.value))
                    assert record.key == event_key(event)
                    assert tp.topic == prefix + topic_for(event).name
                    seen[tp.topic] += 1
            if sum(seen.values()) >= total:
                break
    finally:
        await consumer.stop()
    assert seen == Counter({prefix + name: n for name, n in expected.items()})
    assert summary.by_topic == Counter(expected)
