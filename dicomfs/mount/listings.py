"""Directory listings kept while the index does not change.

A find or ls that walks the same directories again is answered from here without a
query: the listing of a series costs several microseconds an entry in SQLite and
Python, its reply one. Any commit to the index by any process (an instance received,
an expiry, the accesses the mount itself writes) drops every kept listing within
CHECK_EVERY, so the views are never staler than without it by more than that.
PRAGMA data_version tells whether another connection has committed, for the cost of
one statement; it is read on one connection only, for its numbers mean nothing on
another.

The kept listings are bounded by their number of entries (a find over a million
instances keeps the first of them, then stops keeping until the index changes), so
that the mount's memory stays small whatever the store's size.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from ..store.views import Node

KEPT_ENTRIES = 200_000  # about 80 MB of entries at most
CHECK_EVERY = 0.05  # seconds between two reads of the index's version


class Listings:
    def __init__(
        self,
        limit: int = KEPT_ENTRIES,
        check_every: float = CHECK_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._check_every = check_every
        self._clock = clock
        self._kept: dict[Node, list[Any]] = {}
        self._entries = 0
        self._version: int | None = None
        self._checked = 0.0  # when the version was last read (monotonic)

    def __len__(self) -> int:
        return self._entries

    def check(self, conn: sqlite3.Connection) -> int:
        """Drop every listing if the index changed since the last check (always on
        the same connection); the index's version as last read, for keep.

        The version is read again only once check_every has passed: a find opens
        thousands of directories a second, and a listing kept a few milliseconds past
        a commit is far within the two seconds new instances may take to show."""
        now = self._clock()
        if self._version is None or now - self._checked >= self._check_every:
            (version,) = conn.execute("PRAGMA data_version").fetchone()
            self._checked = now
            if version != self._version:
                self._version = int(version)
                self.clear()
        assert self._version is not None  # read at the first check
        return self._version

    def stale(self) -> None:
        """The index has just changed (a write of this process): the next check reads
        its version whatever the interval."""
        self._checked = -float("inf")

    def clear(self) -> None:
        self._kept.clear()
        self._entries = 0

    def get(self, node: Node) -> list[Any] | None:
        return self._kept.get(node)

    def keep(self, node: Node, entries: list[Any], version: int) -> None:
        """Keep a listing taken after a check that gave this version, unless a later
        check has seen another since (the listing may then predate that change)."""
        if version == self._version and self._entries + len(entries) <= self._limit:
            self._kept[node] = entries
            self._entries += len(entries)
