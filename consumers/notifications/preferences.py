"""Residents' own message settings: channels, kinds of message, quiet hours, weekly maximum.

The preference pages (and ``resident.updated`` events) call :func:`set_preferences`; the
audience query reads the table directly. Validation lives here so that whichever way a change
arrives, an impossible setting (an unknown time zone, eight messages a week) is refused with
the field named, never stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import time
from typing import get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from consumers.notifications.budget import DEFAULT_PREFERENCES, Preferences
from schemas.common import Channel
from schemas.notifications import NotificationRequested
from schemas.residents import ResidentUpdated

CHANNELS: tuple[str, ...] = Channel.__args__  # type: ignore[attr-defined]

#: The kinds of message a resident may turn off (safety alerts marked urgent always come).
KINDS: tuple[str, ...] = get_args(NotificationRequested.model_fields["kind"].annotation)


class PreferenceError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _check(
    channels: Sequence[str] | None,
    topics: Sequence[str] | None,
    timezone: str | None,
    max_per_week: int | None,
) -> None:
    if channels is not None and (not channels or any(c not in CHANNELS for c in channels)):
        raise PreferenceError(f"choose one or more of {', '.join(CHANNELS)}", "channels")
    if topics is not None and any(t not in KINDS for t in topics):
        raise PreferenceError(f"topics are among {', '.join(KINDS)}", "topics")
    if max_per_week is not None and not 0 <= max_per_week <= 7:
        raise PreferenceError("between 0 (urgent alerts only) and 7", "max_per_week")
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PreferenceError("unknown time zone", "timezone") from None


async def set_preferences(
    conn: asyncpg.Connection | asyncpg.Pool,
    resident_id: str,
    *,
    channels: Sequence[str] | None = None,
    topics: Sequence[str] | None = None,
    quiet_hours: tuple[time, time] | None = None,
    timezone: str | None = None,
    max_per_week: int | None = None,
) -> Preferences:
    """Change the given settings (None = leave as is); returns the budget-relevant result."""
    _check(channels, topics, timezone, max_per_week)
    d = DEFAULT_PREFERENCES
    row = await conn.fetchrow(
        """INSERT INTO notification_preferences AS p (resident_id, channels, topics,
               quiet_start, quiet_end, timezone, max_per_week, updated_at)
           SELECT $1, $2::text[], $3::text[], COALESCE($4, $8::time), COALESCE($5, $9::time),
                  COALESCE($6, $10), COALESCE($7, $11::smallint), now()
           WHERE EXISTS (SELECT 1 FROM identity_people WHERE resident_id = $1)
           ON CONFLICT (resident_id) DO UPDATE SET
               channels = COALESCE($2::text[], p.channels),
               topics = COALESCE($3::text[], p.topics),
               quiet_start = COALESCE($4, p.quiet_start),
               quiet_end = COALESCE($5, p.quiet_end),
               timezone = COALESCE($6, p.timezone),
               max_per_week = COALESCE($7, p.max_per_week),
               updated_at = now()
           RETURNING quiet_start, quiet_end, timezone, max_per_week""",
        resident_id,
        list(channels) if channels is not None else None,
        list(topics) if topics is not None else None,
        quiet_hours[0] if quiet_hours else None,
        quiet_hours[1] if quiet_hours else None,
        timezone,
        max_per_week,
        d.quiet_start,
        d.quiet_end,
        d.timezone,
        d.max_per_week,
    )
    if row is None:
        raise PreferenceError("no registered resident with this id", "resident_id")
    return Preferences(row["quiet_start"], row["quiet_end"], row["timezone"], row["max_per_week"])


async def get_preferences(conn: asyncpg.Connection | asyncpg.Pool, resident_id: str) -> Preferences:
    row = await conn.fetchrow(
        """SELECT quiet_start, quiet_end, timezone, max_per_week
           FROM notification_preferences WHERE resident_id = $1""",
        resident_id,
    )
    if row is None:
        return DEFAULT_PREFERENCES
    return Preferences(row["quiet_start"], row["quiet_end"], row["timezone"], row["max_per_week"])


async def apply_resident_update(
    conn: asyncpg.Connection | asyncpg.Pool, event: ResidentUpdated
) -> bool:
    """Apply the preference part of a ``resident.updated`` event (quiet hours are whole hours
    there). False when the resident no longer exists (erased) or nothing relevant changed."""
    if event.channels is None and event.quiet_hours is None and event.max_per_week is None:
        return False
    quiet = None
    if event.quiet_hours is not None:
        start, end = event.quiet_hours
        if not (0 <= start <= 23 and 0 <= end <= 23):
            raise PreferenceError("hours between 0 and 23", "quiet_hours")
        quiet = (time(start, 0), time(end, 0))
    try:
        await set_preferences(
            conn,
            event.resident_id,
            channels=event.channels,
            quiet_hours=quiet,
            max_per_week=event.max_per_week,
        )
    except PreferenceError as exc:
        if exc.field == "resident_id":
            return False
        raise
    return True
