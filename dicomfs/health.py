"""What a running serve tells `dicomfs status`: a report built on request, and the
log's last warnings and errors. Nothing here asks the mount itself (a mount that
hangs must not hang the report): its state comes from the kernel's mount table."""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from . import __version__
from .life import expiry
from .lines import one_line
from .mount import run as mount
from .net.activity import Counts
from .net.receiver import Policy, Snapshot
from .sizes import size
from .store import diskspace, sharing
from .store.catalog import iso
from .store.index import Index

log = logging.getLogger(__name__)

DAY = 86400.0
KEPT_ERRORS = 10


class RecentErrors(logging.Handler):
    """The log's last warnings and errors, for the report."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=KEPT_ERRORS)

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(
            {"at": record.created, "level": record.levelname, "message": record.getMessage()}
        )

    def last(self) -> list[dict[str, Any]]:
        return list(self._records)

    def forget(self) -> None:
        self._records.clear()


class DiskWatch:
    """Says in the log when the store's disk crosses its floor, either way: a warning
    comes before the first instance is refused for want of space."""

    def __init__(self, store: Path, floor: diskspace.Floor) -> None:
        self.store = store
        self.floor = floor
        self._low = False
        self._lock = threading.Lock()

    def check(self) -> tuple[diskspace.Usage, bool]:
        disk = diskspace.usage(self.store)
        low = self.floor.reached(disk)
        with self._lock:
            crossed, self._low = low != self._low, low
        if crossed and low:
            log.warning("the store's disk is nearly full: %s free of %s (the warning is at %s); "
                        "instances are refused once it is full", size(disk.free),
                        size(disk.total), self.floor.text)  # fmt: skip
        elif crossed:
            log.info("the store's disk has room again: %s free of %s", size(disk.free),
                     size(disk.total))  # fmt: skip
        return disk, low


class Receiving(Protocol):
    """What the report reads of serve's receiver, in one process or several."""

    aet: str
    port: int
    policy: Policy
    processes: int  # receiving: 1 is serve's own

    def snapshot(self) -> Snapshot: ...


@dataclasses.dataclass
class Report:
    """The report's sources, gathered when serve starts."""

    store: Path
    receiver: Receiving
    bind: str
    mountpoint: Path | None
    retention: float
    disk: DiskWatch
    errors: RecentErrors
    started: float = dataclasses.field(default_factory=time.time)

    def __call__(self) -> dict[str, Any]:
        now = time.time()
        disk, low = self.disk.check()
        snapshot = self.receiver.snapshot()
        today, associations = snapshot.today, snapshot.associations
        for association in associations:  # what they sent so far counts today too
            counts = today.setdefault(association.calling_aet, Counts())
            counts.open += 1
            counts.instances += association.instances
            counts.bytes += association.bytes
        report: dict[str, Any] = {
            "running": True,
            "pid": os.getpid(),
            "version": __version__,
            "since": iso(self.started),
            "up_seconds": round(now - self.started),
            "store": str(self.store),
            "receiver": {
                "aet": self.receiver.aet,
                "bind": self.bind,
                "port": self.receiver.port,
                "processes": self.receiver.processes,
                "letting_in": str(self.receiver.policy),
            },
            "mount": self._mount(),
            "associations": [
                {**dataclasses.asdict(association), "since": iso(association.since)}
                for association in associations
            ],
            "today": {aet: dataclasses.asdict(counts) for aet, counts in sorted(today.items())},
            "received_today": {
                "instances": sum(counts.instances for counts in today.values()),
                "bytes": sum(counts.bytes for counts in today.values()),
            },
            "disk": {
                "free": disk.free,
                "total": disk.total,
                "warning_at": self.disk.floor.text,
                "nearly_full": low,
            },
            "errors": [
                {**error, "at": iso(error["at"])} for error in self._errors(snapshot.errors)
            ],
        }
        report["name"] = sharing.serve_name(self.store)  # among the serves sharing the store
        try:
            with Index(self.store, readonly=True) as index:
                report["index"] = {"where": index.engine.where, "error": None}
                report["stored"] = index.totals()
                due = expiry.due(index.conn, now + DAY, self.retention)
        except Exception as exc:  # the index's server out of reach: said, not raised
            report["index"] = {"where": None, "error": one_line(exc)}
            report["stored"] = report["expiring_within_24h"] = None
            return report
        report["expiring_within_24h"] = {
            "series": len(due),
            "instances": sum(series.instances for series in due),
            "bytes": sum(series.bytes for series in due),
        }
        return report

    def _errors(self, receivers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """serve's recent warnings and errors, with its receiver processes'."""
        found = self.errors.last() + receivers
        return sorted(found, key=lambda error: error["at"])[-KEPT_ERRORS:]

    def _mount(self) -> dict[str, Any]:
        if self.mountpoint is None:
            return {"path": None, "state": "off (--no-mount)"}
        serving = mount.serving_pid(self.mountpoint)
        state = "mounted" if serving == os.getpid() else "not mounted"
        return {"path": str(self.mountpoint), "state": state}
