"""Sizes as people read them, the same in the log and on the command line."""

from __future__ import annotations


def size(nbytes: int) -> str:
    """1536 -> '1.5 KB'."""
    value = float(nbytes)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            if unit == "bytes":
                return "1 byte" if nbytes == 1 else f"{nbytes} bytes"
            return f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
