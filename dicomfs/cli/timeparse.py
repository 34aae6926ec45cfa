"""Times and durations as users type them: 2026-11-25T14:30, 14:30, 7d, 36h, 90m, 30s."""

from __future__ import annotations

import datetime
import re
import time

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhms])\s*$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_TIME_ALONE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")  # 9:30, 19:36, 19:36:10
_FORMS = "2026-11-25, 2026-11-25T14:30, 14:30 for today"


def duration(text: str) -> float:
    """'7d' -> 604800.0 seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 7d, 36h, 90m or 30s")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def moment(text: str, now: float | None = None) -> float:
    """A unix time from a date or time (local unless it says otherwise; a time alone
    is today), or a duration meaning that long ago: "since when"."""
    now = time.time() if now is None else now
    try:
        return now - duration(text)
    except ValueError:
        pass
    return _when(text, now, "a duration ago (7d, 36h, 90m, 30s)")


def moment_ahead(text: str, now: float | None = None) -> float:
    """As moment(), but a duration means that long from now: "what happens by then"."""
    now = time.time() if now is None else now
    try:
        return now + duration(text)
    except ValueError:
        pass
    return _when(text, now, "a duration from now (7d, 36h, 90m, 30s)")


def future_moment(text: str, now: float | None = None) -> float:
    """A unix time later than now, for "until when": a duration means that long from
    now ('30d'); a date alone means until that day is over (the end of it, local
    time); a date and time or a time alone (today), until then. It must not be past,
    since a deadline that has passed is a mistake, not a wish."""
    now = time.time() if now is None else now
    try:
        seconds = duration(text)
    except ValueError:
        when = _when(text, now, "a duration from now (30d, 36h, 90m)", day_ends=True)
    else:
        if seconds <= 0:
            raise ValueError(f"{text!r} is no time at all: give a duration such as 30d")
        return now + seconds
    if when <= now:
        raise ValueError(
            f"{text!r} is in the past: give a later date or time, or a duration from now "
            "such as 30d"
        )
    return when


def _when(text: str, now: float, or_else: str, *, day_ends: bool = False) -> float:
    """A date, a date and time, or a time alone (on the day of `now`), as a unix time;
    naive ones are local. A date alone is the start of that day, or its end if
    `day_ends`."""
    text = text.strip()
    alone = _TIME_ALONE.match(text)
    try:
        if alone:
            hour, minute, second = (int(part or 0) for part in alone.groups())
            today = datetime.datetime.fromtimestamp(now).date()
            return datetime.datetime.combine(today, datetime.time(hour, minute, second)).timestamp()
        if day_ends and _is_date_alone(text):
            day = datetime.date.fromisoformat(text)
            return datetime.datetime.combine(day, datetime.time.max).timestamp()
        return datetime.datetime.fromisoformat(text).timestamp()  # naive times are local
    except ValueError:
        raise ValueError(f"{text!r} is neither a date or time ({_FORMS}) nor {or_else}") from None


def _is_date_alone(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True
