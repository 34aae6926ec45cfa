"""Sizes and counts as people read them, the same in the log and on the command line."""

from __future__ import annotations


def size(nbytes: int) -> str:
    """1536 -> '1.5 KB'."""
    value = float(nbytes)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return count(nbytes, "byte") if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def count(number: int, noun: str) -> str:
    """1 -> '1 instance', 3 -> '3 instances'."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
