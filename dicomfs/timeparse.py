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
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a date or time (2026-11-25, 2026-11-25T14:30) "
            "nor a duration ago (7d, 36h, 90m, 30s)"
        ) from None
    return when.timestamp()  # naive times are local
