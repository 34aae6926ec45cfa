"""Last access: reads through the mount, batched in memory, written every few seconds
(and the instances a C-MOVE or C-GET sent, written when it ends).

Opening an instance file is an access of it (listing and stat are not). The
mount notes each one here, in memory; a flush writes the newest access of each
instance, its series and study, and one audit record per series, reading user
and day. A million reads are a handful of writes, and a crash loses at most the
accesses since the last flush, never an instance.
"""

from __future__ import annotations

import dataclasses
import pwd
import threading
import time

from ..store.index import Index, audit, lifecycle

FLUSH_INTERVAL = 2.0  # seconds


class AccessLog:
    """Accesses not yet written: instance row id -> (newest time, reader's uid)."""

    def __init__(self) -> None:
        self._pending: dict[int, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def note(self, instance: int, uid: int, when: float | None = None) -> None:
        with self._lock:
            self._pending[instance] = (time.time() if when is None else when, uid)

    def take(self) -> dict[int, tuple[float, int]]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending


def record(index: Index, accesses: dict[int, tuple[float, int]]) -> None:
    """Write a batch of accesses (inside the caller's transaction)."""
    series_of = widen(index, {instance: when for instance, (when, _) in accesses.items()})
    newest_by_series: dict[int, float] = {}
    readers: set[tuple[int, int, str]] = set()  # (series, uid, day)
    for instance, (when, uid) in accesses.items():
        series = series_of.get(instance)
        if series is None:
            continue  # deleted since it was read
        newest_by_series[series] = max(when, newest_by_series.get(series, 0))
        readers.add((series, uid, time.strftime("%Y-%m-%d", time.localtime(when))))
    _audit_first_reads(index, readers, newest_by_series)


def widen(index: Index, accesses: dict[int, float]) -> dict[int, int]:
    """Make each time the last access of its instance, series and study where it is
    newer (inside the caller's transaction); the series of each instance still there.
    A read through the mount and an instance a retrieval sent are both accesses."""
    conn = index.conn
    series_of: dict[int, int] = {}
    newest_by_series: dict[int, float] = {}
    for instance, when in accesses.items():
        series = lifecycle.widen_access(conn, instance, when)
        if series is not None:  # else deleted since
            series_of[instance] = series
            newest_by_series[series] = max(when, newest_by_series.get(series, 0))
    for series, when in newest_by_series.items():
        lifecycle.widen_series_access(conn, series, when)
    return series_of


def _audit_first_reads(
    index: Index, readers: set[tuple[int, int, str]], when_by_series: dict[int, float]
) -> None:
    """One audit record per series, reading user and day: the first read of the day."""
    records = []
    for series, uid, day in sorted(readers):
        identity = index.series_identity(series_id=series)
        assert identity is not None  # its access was just written
        if lifecycle.first_read_of_day(index.conn, identity.series_uid, uid, day):
            records.append(
                audit.Record(
                    "read",
                    at=when_by_series[series],
                    user=user_name(uid),
                    detail=f"uid {uid}",
                    **dataclasses.asdict(identity),
                )
            )
    audit.append(index.conn, records)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
