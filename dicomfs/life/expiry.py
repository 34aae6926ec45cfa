"""Expiry: a series goes whole once nobody has touched it for the retention period.

A series is due when the newest of its receipt and its last access is older
than the retention, and neither it nor its study is kept. Deleting one takes
two steps, so that no view ever shows half a series and a crash never brings
one back: its rows go from the index in one transaction (its files recorded as
doomed), then its files go from the disk.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ..store import files as store_files
from ..store import thumbnails, views
from ..store.index import Index, audit, lifecycle
from ..store.index.engine import Connection
from ..store.writer import IndexWriter

DEFAULT_RETENTION = 7 * 86400.0


@dataclasses.dataclass(frozen=True, slots=True)
class DueSeries:
    series_id: int
    series_uid: str
    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    modality: str
    description: str
    instances: int
    bytes: int
    last_used: float  # the newest of receipt and access
    series_number: int | None


def due(conn: Connection, now: float, retention: float) -> list[DueSeries]:
    """The series that expire at `now`, least recently used first."""
    return [DueSeries(*row) for row in lifecycle.due_series(conn, now - retention, now)]


def expire(
    writer: IndexWriter, store: Path, now: float, retention: float, by: str
) -> list[DueSeries]:
    """Delete every series due at `now`; return what went."""
    gone = []
    for series in writer.run(lambda index: due(index.conn, now, retention)):
        reason = f"expired: untouched since {_local(series.last_used)}"
        if delete_series(writer, store, series.series_id, reason, by, now=now, retention=retention):
            gone.append(series)
    return gone


def delete_series(
    writer: IndexWriter,
    store: Path,
    series_id: int,
    reason: str,
    by: str,
    *,
    now: float | None = None,
    retention: float | None = None,
) -> bool:
    """Delete one series, audited. With now and retention, only if it is still due
    (it may have been read, or received more of, since it was listed)."""

    def drop(index: Index) -> tuple[list[str], str] | None:
        if not (
            retention is None
            or now is None
            or lifecycle.is_due(index.conn, series_id, now - retention, now)
        ):
            return None  # read or received since it was listed: not due any more
        identity = index.series_identity(series_id=series_id)
        if identity is None:
            return None
        files = index.doom_series(series_id)
        record = audit.Record(
            "deleted", outcome=reason, user=by, instances=len(files),
            bytes=sum(size for _, size in files), **dataclasses.asdict(identity),
        )  # fmt: skip
        audit.append(index.conn, [record])
        return [path for path, _ in files], identity.series_uid

    dropped = writer.run(drop)
    if dropped is None:
        return False
    paths, series_uid = dropped
    finish_deletions(writer, store, paths)
    thumbnails.remove(store, [series_uid])  # its picture goes with it
    return True


def delete_instance(index: Index, instance_id: int, by: str) -> list[str]:
    """Delete one instance from the index, audited; return its file, to delete next."""
    identity = index.series_identity(instance_id=instance_id)
    doomed = index.doom_instance(instance_id)
    if identity is None or doomed is None:
        return []
    record = audit.Record(
        "deleted", outcome=f"removed by {by} through the mount", user=by, instances=1,
        bytes=doomed[1], detail=doomed[0], **dataclasses.asdict(identity),
    )  # fmt: skip
    audit.append(index.conn, [record])
    return [doomed[0]]


def finish_deletions(writer: IndexWriter, store: Path, paths: list[str] | None = None) -> None:
    """Delete doomed files from the disk (all of them, or these), then forget them."""
    if paths is None:
        paths = writer.run(lambda index: index.doomed())
    store_files.delete_files(store, paths)
    writer.run(lambda index: index.forget_doomed(paths))


def _local(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(when))


# --- keeping studies and series from expiry ------------------------------------------


class NotFound(Exception):
    """What the user named is not a study or series of the store; the message says why."""


def resolve(conn: Connection, target: str, mountpoint: Path) -> tuple[str, str]:
    """(UID, 'study' or 'series') for a UID, or for a study or series directory in the
    mount (any view)."""
    if "/" not in target and not Path(target).exists():
        level = lifecycle.uid_level(conn, target)
        if level is not None:
            return target, level
        raise NotFound(f"{target} is not the UID of a study or series in the store")
    path = Path(target).absolute()
    try:
        parts = path.relative_to(mountpoint.absolute()).parts
    except ValueError:
        raise NotFound(f"{target} is not inside the mount {mountpoint}") from None
    node = views.ROOT
    for part in parts:
        entry = views.lookup(conn, node, part)
        if entry is None:
            raise NotFound(f"{target} does not exist in the mount")
        node = entry.node
    if node.kind is views.Kind.STUDY:
        return lifecycle.uid_of(conn, "study", node.row), "study"
    if node.kind is views.Kind.SERIES:
        return lifecycle.uid_of(conn, "series", node.row), "series"
    raise NotFound(f"{target} is not a study or series directory")


@dataclasses.dataclass(frozen=True, slots=True)
class Keep:
    """A study or series kept from expiry, until a time or (None) for good."""

    uid: str
    level: str
    until: float | None
    by: str
    at: float
    patient_name: str | None = None  # None when the study or series is no longer stored
    patient_id: str | None = None
    lapsed: bool = False  # its time has passed: it expires as usual


def keep(index: Index, uid: str, level: str, until: float | None, by: str) -> Keep | None:
    """Keep a study or series; return the keep this one replaces, if any."""
    before = lifecycle.put_keep(index.conn, uid, level, until, by, time.time())
    return Keep(*before) if before else None


def unkeep(index: Index, uid: str) -> bool:
    return lifecycle.drop_keep(index.conn, uid)


def is_kept(conn: Connection, uid: str) -> bool:
    """Is there a keep of this UID, lapsed or not?"""
    return lifecycle.has_keep(conn, uid)


def kept(conn: Connection, now: float) -> list[Keep]:
    """Every keep, with whose it is; those whose time passed are marked lapsed, so
    that no keep ends silently."""
    return [
        Keep(uid, level, until, by, at, name, patient_id, not lifecycle.holds(until, now))
        for uid, level, until, by, at, name, patient_id in lifecycle.keeps(conn)
    ]


def kept_study_uids(conn: Connection, now: float) -> set[str]:
    """Studies kept whole or in part, for the KEPT marker of index.html."""
    return lifecycle.kept_study_uids(conn, now)


def least_used_by_study(conn: Connection) -> dict[int, float]:
    """When each study's first series to expire was last used, for index.html."""
    return lifecycle.least_used_by_study(conn)
