"""How full the store's disk is, and when that is worth a warning."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|[KMGT]?)B?\s*$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Usage:
    free: int  # bytes an unprivileged writer may still use
    total: int

    @property
    def free_fraction(self) -> float:
        return self.free / self.total if self.total else 0.0


def usage(path: Path) -> Usage:
    stat = os.statvfs(path)
    return Usage(stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize)


@dataclasses.dataclass(frozen=True)
class Floor:
    """Free space below which the disk counts as nearly full: a share of the disk
    ("5%") or an amount ("20G")."""

    text: str
    fraction: float | None = None
    amount: int | None = None

    @classmethod
    def parse(cls, text: str) -> Floor:
        match = _AMOUNT.match(text)
        if not match:
            raise ValueError(f"{text!r} is not an amount of disk: give 5% or 20G (K, M, G, T)")
        number, unit = float(match[1]), match[2].upper()
        if unit == "%":
            if number >= 100:
                raise ValueError(f"{text!r} is the whole disk: give less than 100%")
            return cls(text.strip(), fraction=number / 100)
        return cls(text.strip(), amount=int(number * _UNITS[unit]))

    def reached(self, disk: Usage) -> bool:
        if self.fraction is not None:
            return disk.free < self.fraction * disk.total
        return disk.free < (self.amount or 0)
