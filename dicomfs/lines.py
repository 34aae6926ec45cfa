"""Messages as one line of the log, an audit record or dicomfs status: what a library
says over several lines (pydicom's reasons, libpq's errors), joined."""

from __future__ import annotations


def one_line(text: object, limit: int | None = None) -> str:
    """text (an exception, say) on one line; cut to limit characters if given."""
    line = " ".join(str(text).split())
    if limit is None or len(line) <= limit:
        return line
    return line[: limit - 3] + "..."
