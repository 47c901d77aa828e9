"""The message budget as pure decisions (DESIGN §6): no database, no Kafka, the clock injected.

Why pure: the rules residents rely on ("at most one ordinary message a week, nothing at night,
the rest in a weekly digest, safety alerts always") must be testable exactly, at any instant
(midnight, DST changes), without running anything. The database side (:mod:`.outbox`) only
supplies the counts and records the outcome.

Rules, in order:

1. Urgent safety alerts go now, whatever the budget or the hour; they are not charged to the
   budget and the worker logs every one of them.
2. A resident who wants no ordinary messages (``max_per_week == 0``) gets none.
3. When the resident already had ``max_per_week`` messages in the last seven days (a rolling
   window, so "once a week" means it), the message is held for the weekly digest.
4. Inside quiet hours (default 21:00-08:00 in the resident's time zone) it is scheduled for
   the end of the quiet hours, and charged now so that nothing else takes its slot.
5. Otherwise it goes now.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

#: The budget window: charges younger than this count.
WINDOW = timedelta(days=7)
DEFAULT_QUIET_START = time(21, 0)
DEFAULT_QUIET_END = time(8, 0)
DEFAULT_TIMEZONE = "Europe/London"
DEFAULT_MAX_PER_WEEK = 1

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class Action(enum.StrEnum):
    SEND_URGENT = "send_urgent"
    SEND = "send"
    SCHEDULE = "schedule"  # quiet hours: send at release_at
    HOLD = "hold"  # budget used: wait for the weekly digest
    SKIP = "skip"  # resident takes no ordinary messages


@dataclass(frozen=True, slots=True)
class Preferences:
    quiet_start: time = DEFAULT_QUIET_START
    quiet_end: time = DEFAULT_QUIET_END
    timezone: str = DEFAULT_TIMEZONE
    max_per_week: int = DEFAULT_MAX_PER_WEEK


DEFAULT_PREFERENCES = Preferences()


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    #: When a scheduled message may go (UTC); None unless ``action`` is SCHEDULE.
    release_at: datetime | None = None
    #: Whether the decision uses one unit of the weekly budget.
    charged: bool = False
    #: For the urgent log: what the alert overrode.
    over_budget: bool = False
    in_quiet_hours: bool = False


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def in_quiet_hours(now: datetime, prefs: Preferences) -> bool:
    """Is ``now`` (aware) inside the resident's quiet hours, in their own time zone?"""
    start, end = prefs.quiet_start, prefs.quiet_end
    if start == end:
        return False
    local = now.astimezone(_zone(prefs.timezone)).time()
    if start < end:
        return start <= local < end
    return local >= start or local < end  # wraps midnight (the usual 21:00-08:00)


def quiet_hours_end(now: datetime, prefs: Preferences) -> datetime:
    """The next end of quiet hours after ``now``, in UTC (DST-safe: built from local dates)."""
    zone = _zone(prefs.timezone)
    local = now.astimezone(zone)
    day: date = local.date()
    for offset in range(2):
        candidate = datetime.combine(day + timedelta(days=offset), prefs.quiet_end, zone)
        # A wall time skipped by a spring-forward change normalises to the next real instant.
        candidate = candidate.astimezone(UTC).astimezone(zone)
        if candidate > local:
            return candidate.astimezone(UTC)
    raise AssertionError("quiet hours end within two days")  # pragma: no cover


def decide(
    now: datetime,
    *,
    urgent: bool,
    charges_in_window: int,
    prefs: Preferences = DEFAULT_PREFERENCES,
) -> Decision:
    """What to do with one message for one resident at ``now`` (aware datetime).

    ``charges_in_window`` is the number of budget charges the resident has in the seven days
    before ``now`` (including messages scheduled for the morning).
    """
    quiet = in_quiet_hours(now, prefs)
    over = charges_in_window >= prefs.max_per_week
    if urgent:
        return Decision(Action.SEND_URGENT, over_budget=over, in_quiet_hours=quiet)
    if prefs.max_per_week <= 0:
        return Decision(Action.SKIP)
    if over:
        return Decision(Action.HOLD)
    if quiet:
        return Decision(Action.SCHEDULE, release_at=quiet_hours_end(now, prefs), charged=True)
    return Decision(Action.SEND, charged=True)


def digest_due(now: datetime, *, charges_in_window: int, prefs: Preferences) -> bool:
    """May a resident's held messages go out as a digest now? (One budget unit, not at night.)"""
    return (
        prefs.max_per_week > 0
        and charges_in_window < prefs.max_per_week
        and not in_quiet_hours(now, prefs)
    )
