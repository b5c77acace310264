"""Dates and instants at the boundary (SPEC §5): ISO 8601, Japan time when no zone is given.

Instants are handled as aware `datetime`s in UTC (the journal's `recorded_at` is
`timestamp[us, UTC]`); "the date of T" is T's calendar date in Japan time.
"""

from __future__ import annotations

import datetime as dt

from engine.errors import UsageError

JST = dt.timezone(dt.timedelta(hours=9), "JST")


def parse_timestamp(text: str, *, option: str = "timestamp") -> dt.datetime:
    """An ISO 8601 instant as UTC; without a zone it is Japan time, a bare date its midnight."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{option} '{text}': not an ISO 8601 timestamp") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=JST)
    return value.astimezone(dt.UTC)


def parse_date(text: str, *, option: str = "date") -> dt.date:
    """A calendar date `YYYY-MM-DD`."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{option} '{text}': not a date YYYY-MM-DD") from None


def parse_month(text: str, *, option: str = "--month") -> tuple[dt.date, dt.date]:
    """First and last day of a month `YYYY-MM`."""
    try:
        year, month = (int(p) for p in text.strip().split("-"))
        first = dt.date(year, month, 1)
    except ValueError:
        raise UsageError(f"{option} '{text}': not a month YYYY-MM") from None
    following = dt.date(year + month // 12, month % 12 + 1, 1)
    return first, following - dt.timedelta(days=1)


def japan_date(instant: dt.datetime) -> dt.date:
    """The calendar date of an instant in Japan time."""
    return instant.astimezone(JST).date()


def now_utc() -> dt.datetime:
    """The clock, as an aware UTC datetime (the CLI reads it and passes it down)."""
    return dt.datetime.now(dt.UTC)


def iso_jst(instant: dt.datetime) -> str:
    """An instant written in Japan time, ISO 8601 with its offset."""
    return instant.astimezone(JST).isoformat()
