"""Times and durations as users type them: 2026-11-25T14:30, 7d, 36h, 90m, 30s."""

from __future__ import annotations

import datetime
import re
import time

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhms])\s*$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def duration(text: str) -> float:
    """'7d' -> 604800.0 seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 7d, 36h, 90m or 30s")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def moment(text: str, now: float | None = None) -> float:
    """A unix time from an ISO date or time (local unless it says otherwise), or a
    duration meaning that long ago."""
    now = time.time() if now is None else now
    try:
        return now - duration(text)
    except ValueError:
        pass
    return _iso(text, "a duration ago (7d, 36h, 90m, 30s)")


def future_moment(text: str, now: float | None = None) -> float:
    """A unix time later than now, for "until when": a duration means that long from
    now ('30d'); an ISO date or time (local unless it says otherwise) must not be
    past, since a deadline that has passed is a mistake, not a wish."""
    now = time.time() if now is None else now
    try:
        seconds = duration(text)
    except ValueError:
        when = _iso(text, "a duration from now (30d, 36h, 90m)")
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


def _iso(text: str, or_else: str) -> float:
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a date or time (2026-11-25, 2026-11-25T14:30) nor {or_else}"
        ) from None
    return when.timestamp()  # naive times are local
