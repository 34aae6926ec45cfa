"""A retrieval (C-MOVE, C-GET) on the side that holds the instances: its
sub-operations one by one, their counts, the final status, and its audit records.

Each instance is one C-STORE sub-operation. After the first, and then at most ten
times a second, the requester hears a pending response with the counts (remaining,
completed, failed, warning), so a viewer can show progress; the standard leaves
them optional, and one after every instance costs both sides a message each.

The final status (PS3.4 C.4.2.1.5, C.4.3.1.4): Success if every one was stored;
Warning 0xB000 if some failed or were stored with a warning; 0xA702 if not one
could be stored; Cancel 0xFE00 after a C-CANCEL. The UIDs of the failed ones go
back in the final response's identifier.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from ..store.index import Sender, audit
from ..store.index.query import Retrievable
from . import dimse
from .outgoing import Unsendable, Vanished
from .remotes import Remote

PENDING_INTERVAL = 0.1  # seconds between two pending responses, at least
UNABLE_TO_PERFORM = 0xA702  # failure: not one sub-operation could be performed
# C-STORE statuses that store the instance with a warning (PS3.4 B.2.3, Annex C):
# coercion of data elements, elements discarded, data set not matching the SOP class.
_WARNINGS = range(0xB000, 0xC000)
_OTHER_WARNINGS = (0x0001, 0x0107, 0x0116)


@dataclasses.dataclass(frozen=True)
class Job:
    """What a retrieval sends, and to where: a named destination (C-MOVE), or the
    requester itself on its own association (C-GET, destination None)."""

    items: list[Retrievable]
    destination: Remote | None
    root: int  # the store's directory, open: the files are opened below it
    aet: str  # ours, as we call the destination


@dataclasses.dataclass
class Progress:
    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    cancelled: bool = False
    comment: str = ""  # the final response's error comment
    failed_uids: list[str] = dataclasses.field(default_factory=list)
    delivered: list[Retrievable] = dataclasses.field(default_factory=list)  # stored there
    failures: dict[str, str] = dataclasses.field(default_factory=dict)  # series -> last why
    vanished: list[str] = dataclasses.field(default_factory=list)  # paths gone from the store

    def counts(self, *, final: bool = False) -> tuple[int | None, int, int, int]:
        """For a response; a final one says how many remain only when cancelled."""
        remaining = None if final and not self.cancelled else self.remaining
        return remaining, self.completed, self.failed, self.warning

    def status(self) -> int:
        if self.cancelled:
            return dimse.CANCEL
        if not self.failed and not self.warning:
            return dimse.SUCCESS
        if not self.completed and not self.warning:
            return UNABLE_TO_PERFORM
        return dimse.SUB_OPERATIONS_FAILED

    def stored(self, item: Retrievable, status: int) -> None:
        """The destination answered the sub-operation with this status."""
        if status == dimse.SUCCESS:
            self.completed += 1
        elif status in _WARNINGS or status in _OTHER_WARNINGS:
            self.warning += 1
        else:
            self.fail(item, f"the destination answered 0x{status:04X} ({dimse.meaning(status)})")
            return
        self.delivered.append(item)

    def unable(self, job: Job, why: str) -> None:
        """Not one sub-operation can be performed (no association with the destination)."""
        for item in job.items:
            self.fail(item, why)
        self.remaining = 0
        self.comment = why

    def fail(self, item: Retrievable, why: str) -> None:
        self.failed += 1
        self.failed_uids.append(item.sop_uid)
        self.failures[item.series_uid] = why
        self.comment = self.comment or why  # the first reason, for the final response


def run(
    job: Job,
    progress: Progress,
    deliver: Callable[[Retrievable, Retrievable | None], int],
    pending: Callable[[Progress], None],
    cancelled: Callable[[], bool],
) -> None:
    """Each instance's sub-operation, in order, until the last or a cancel, counted in
    progress. deliver sends one (and is told the one after it, to read ahead) and
    returns the status its receiver answered, or raises Unsendable (that
    sub-operation fails, the others go on)."""
    said = 0.0  # when the last pending response went
    for position, item in enumerate(job.items):
        if cancelled():
            progress.cancelled = True
            break
        progress.remaining -= 1
        upcoming = job.items[position + 1] if progress.remaining else None
        try:
            progress.stored(item, deliver(item, upcoming))
        except Unsendable as exc:
            progress.fail(item, str(exc))
            if isinstance(exc, Vanished):
                progress.vanished.append(item.path)
        if progress.remaining and time.monotonic() - said >= PENDING_INTERVAL:
            pending(progress)
            said = time.monotonic()


def failed_identifier(progress: Progress, syntax_implicit: bool, little: bool) -> bytes | None:
    """The final response's identifier: the failed instances' UIDs (as many as an
    element holds: 64 KB in an explicit VR); None if none failed."""
    uids = progress.failed_uids
    while uids:
        identifier = Dataset()
        identifier.FailedSOPInstanceUIDList = uids
        encoded = encode(identifier, syntax_implicit, little)
        if encoded is not None:
            return encoded
        uids = uids[: len(uids) // 2]
    return None


def records(sender: Sender, job: Job, progress: Progress, service: str) -> list[audit.Record]:
    """One audit record per series the retrieval asked for: who asked, to where, and
    how many of its instances and bytes were sent."""
    to = f"{service} to {job.destination}" if job.destination else f"{service} to the requester"
    by_series: dict[str, list[Retrievable]] = {}
    for item in job.items:
        by_series.setdefault(item.series_uid, []).append(item)
    sent = {item.sop_uid for item in progress.delivered}
    result = []
    for series_uid, items in by_series.items():
        first, delivered = items[0], [item for item in items if item.sop_uid in sent]
        why = progress.failures.get(series_uid)
        unsent = len(items) - len(delivered)
        if not unsent:
            said = "ok"
        elif why:
            said = f"{unsent} not sent: {why}"
        elif progress.cancelled:
            said = f"cancelled: {unsent} not sent"
        else:
            said = f"the association ended: {unsent} not sent"
        record = audit.Record(
            "retrieved", outcome=said, calling_aet=sender.aet, address=sender.address,
            called_aet=sender.called_aet, user=sender.user, patient_id=first.patient_id,
            patient_name=first.patient_name, study_uid=first.study_uid, series_uid=series_uid,
            instances=len(delivered), bytes=sum(item.size for item in delivered), detail=to,
        )  # fmt: skip
        result.append(record)
    return result
