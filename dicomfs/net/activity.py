"""What the receiver did today, by calling AE title: for `dicomfs status`.

Kept in memory since serve started (the audit trail keeps it for good); it starts
again at local midnight.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable


@dataclasses.dataclass
class Counts:
    associations: int = 0
    refused: int = 0  # associations refused
    instances: int = 0
    bytes: int = 0
    failed: int = 0  # instances refused
    open: int = 0  # associations under way (their instances are counted already)


class Activity:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._day = _today()
        self._by_aet: dict[str, Counts] = {}

    def ended(self, aet: str, instances: int, size: int, failed: int) -> None:
        """An association that was accepted has ended."""
        with self._lock:
            counts = self._counts(aet)
            counts.associations += 1
            counts.instances += instances
            counts.bytes += size
            counts.failed += failed

    def refused(self, aet: str) -> None:
        with self._lock:
            self._counts(aet).refused += 1

    def today(self) -> dict[str, Counts]:
        with self._lock:
            self._roll()
            return {aet: dataclasses.replace(counts) for aet, counts in self._by_aet.items()}

    def _counts(self, aet: str) -> Counts:
        self._roll()
        return self._by_aet.setdefault(aet, Counts())

    def _roll(self) -> None:
        if _today() != self._day:
            self._day, self._by_aet = _today(), {}


def _today() -> str:
    return time.strftime("%Y-%m-%d")


def merged(days: Iterable[dict[str, Counts]]) -> dict[str, Counts]:
    """Several receivers' days as one (processes.py)."""
    together: dict[str, Counts] = {}
    for day in days:
        for aet, counts in day.items():
            total = together.setdefault(aet, Counts())
            for field in dataclasses.fields(Counts):
                setattr(total, field.name, getattr(total, field.name) + getattr(counts, field.name))
    return together
