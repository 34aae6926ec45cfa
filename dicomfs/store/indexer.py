"""Keep the index in step with the files: reconcile the store, import outside files.

Unchanged files are recognised by (size, mtime) without being opened. New or
changed ones are parsed (headers only) on every core; the rows are written by
this process alone, in batched transactions.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from ..dicom.meta import InstanceMeta, NotIndexable, read_meta
from . import files as store_files
from . import thumbnails
from .index import FileState, Index
from .survey import survey

BATCH = 2000  # rows per transaction: few commits, yet a crash loses little work
SMALL_JOB = 256  # below this many files a process pool costs more than it saves


class Progress(Protocol):
    """Told how many files a step will take (parsing; for an import, copying next),
    then of each one done."""

    def start(self, total: int, step: str | None = None) -> None: ...

    def advance(self, done: int) -> None: ...


@dataclasses.dataclass
class Report:
    unchanged: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # Files whose rows were written; a set, since a file indexed early in a run may
    # lose to a newer duplicate later in the same run.
    indexed_paths: set[str] = dataclasses.field(default_factory=set)

    @property
    def indexed(self) -> int:
        return len(self.indexed_paths)

    def as_dict(self) -> dict[str, object]:
        return {
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "skipped": len(self.skipped),
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Parsed:
    path: str  # relative to the store, or absolute for an import
    state: FileState
    meta: InstanceMeta | None
    reason: str | None


def parse(path: str, state: FileState, root: str = "") -> Parsed:
    """Read one header, of a file below root (the store) or of path itself; runs in
    a worker process."""
    try:
        if not root:
            return Parsed(path, state, read_meta(path), None)
        with store_files.opened(Path(root)) as store:
            return Parsed(path, state, read_meta(path, store_files.opener(store)), None)
    except NotIndexable as exc:
        return Parsed(path, state, None, str(exc))
    except Exception as exc:  # a parser bug must cost one file, not the whole run
        return Parsed(path, state, None, f"unreadable: {type(exc).__name__}: {exc}"[:300])


def _parse_job(job: tuple[str, FileState, str]) -> Parsed:
    return parse(*job)


def parse_all(
    jobs: list[tuple[str, FileState, str]], workers: int | None = None
) -> Iterator[Parsed]:
    """Parse on every core, yielding results as they come (in job order)."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) < SMALL_JOB:
        yield from map(_parse_job, jobs)
        return
    # fork: workers start at once and inherit the imported modules.
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        chunk = max(16, min(256, len(jobs) // (workers * 8)))
        yield from pool.map(_parse_job, jobs, chunksize=chunk)


def reconcile(
    index: Index, root: Path, progress: Progress | None = None, workers: int | None = None
) -> Report:
    """Make the index agree with the files of the store."""
    report = Report()
    # Files already deleted from the index (a crash came before they left the disk)
    # go now, or they would be indexed again.
    doomed = index.doomed()
    if doomed:
        store_files.delete_files(root, doomed)
        with index.transaction():
            index.forget_doomed(doomed)
    found = survey(index, root, workers)
    report.unchanged = found.unchanged
    report.skipped += found.skipped
    # Vanished files go first, so that a moved file is seen as moved, not duplicated.
    with index.transaction():
        report.removed = index.remove_paths(found.vanished)
        index.forget_skipped(found.skipped_gone)

    to_parse = [(rel, state, str(root)) for rel, state in found.differing]
    parsed = _with_progress(parse_all(to_parse, workers), len(to_parse), progress)
    _apply_all(index, root, parsed, report)
    # The pictures of series that are gone: with their files, or emptied since (their
    # instances re-filed under other UIDs). serve reconciles every sweep interval.
    thumbnails.sweep(root, index.conn)
    return report


@dataclasses.dataclass
class Disagreements:
    """Where the index and the files disagree (what `dicomfs check` reports)."""

    missing: list[str] = dataclasses.field(default_factory=list)  # rows without files
    unindexed: list[str] = dataclasses.field(default_factory=list)  # files without rows
    changed: list[str] = dataclasses.field(default_factory=list)  # size or mtime differ
    doomed: list[str] = dataclasses.field(default_factory=list)  # deleted, not yet from disk

    def __len__(self) -> int:
        return len(self.missing) + len(self.unindexed) + len(self.changed) + len(self.doomed)


def check(index: Index, root: Path) -> Disagreements:
    """Compare the index with the files, changing nothing."""
    found = survey(index, root)
    return Disagreements(
        missing=sorted(found.vanished),
        unindexed=[p for p, _ in found.differing if p not in found.changed],
        changed=[p for p, _ in found.differing if p in found.changed],
        doomed=index.doomed(),
    )


def import_paths(
    index: Index,
    root: Path,
    sources: Iterable[Path],
    progress: Progress | None = None,
    workers: int | None = None,
) -> Report:
    """Copy DICOM files from outside the store into it, then index them.

    The originals are only read. Only what will be indexed is copied: files that are
    not DICOM, and files that lose to a newer one of the same SOPInstanceUID (in the
    store or in the import), are reported instead.
    """
    report = Report()
    jobs = [(str(path), state, "") for path, state in _walk_sources(sources, report)]
    parsed = list(_with_progress(parse_all(jobs, workers), len(jobs), progress, "Reading"))
    chosen = _newest_of_each(index, root, parsed, report)
    copied = _copy_in(root, _with_progress(chosen, len(chosen), progress, "Copying"), report)
    _apply_all(index, root, copied, report)
    return report


def _wins(challenger: FileState, holder: FileState) -> bool:
    """Of two files with one SOPInstanceUID the newer is indexed; of two as new, the
    one seen last. The rule of reconcile and import alike."""
    return challenger.mtime_ns >= holder.mtime_ns


def _duplicate(newer: str) -> str:
    return f"duplicate SOPInstanceUID of newer file {newer}"


def _newest_of_each(
    index: Index, root: Path, results: Iterable[Parsed], report: Report
) -> list[Parsed]:
    """The files of an import worth copying: for each SOPInstanceUID the newest, if it
    is not older than the store's own file of it. The others are reported."""
    newest: dict[str, Parsed] = {}
    for result in results:
        if result.meta is None:
            report.skipped.append((result.path, result.reason or "unknown"))
            continue
        held = newest.get(result.meta.sop_uid)
        if held is not None and not _wins(result.state, held.state):
            report.skipped.append((result.path, _duplicate(held.path)))
            continue
        if held is not None:
            report.skipped.append((held.path, _duplicate(result.path)))
        newest[result.meta.sop_uid] = result
    chosen = []
    for result in newest.values():
        newer = _newer_in_store(index, root, result)
        if newer is None:
            chosen.append(result)
        else:
            report.skipped.append((result.path, _duplicate(newer)))
    return chosen


def _newer_in_store(index: Index, root: Path, result: Parsed) -> str | None:
    """The store's file of this instance, if it beats the one to import."""
    assert result.meta is not None
    stored = index.instance_by_sop(result.meta.sop_uid)
    if stored is None or not (root / stored[1]).is_file():
        return None
    return None if _wins(result.state, FileState(0, stored[2])) else stored[1]


def _copy_in(root: Path, results: Iterable[Parsed], report: Report) -> Iterator[Parsed]:
    """Copy each parsed DICOM file into the store; yield it as the store's file."""
    for result in results:
        meta = result.meta
        assert meta is not None  # only what _newest_of_each chose
        rel = store_files.canonical_path(meta.study_uid, meta.series_uid, meta.sop_uid)
        try:
            with open(result.path, "rb") as source:
                state = store_files.write_atomically(root, rel, source)
        except OSError as exc:
            report.skipped.append((result.path, f"cannot copy: {exc.strerror or exc}"))
            continue
        yield Parsed(rel, state, meta, None)


def _walk_sources(sources: Iterable[Path], report: Report) -> Iterator[tuple[Path, FileState]]:
    for source in sources:
        if source.is_dir() and not source.is_symlink():
            for rel, state in store_files.walk(source):
                yield source / rel, state
        elif source.is_file():
            yield source, store_files.state_of(source)
        elif not source.exists():
            report.skipped.append((str(source), "no such file or directory"))
        else:
            report.skipped.append((str(source), "not a regular file"))


def _with_progress(
    results: Iterable[Parsed], total: int, progress: Progress | None, step: str | None = None
) -> Iterator[Parsed]:
    if progress is None:
        yield from results
        return
    progress.start(total, step)
    for result in results:
        yield result
        progress.advance(1)


def _apply_all(
    index: Index,
    root: Path,
    results: Iterable[Parsed],
    report: Report,
) -> None:
    """Write parse results in transactions of BATCH files."""
    pending = iter(results)
    while batch := list(itertools.islice(pending, BATCH)):
        with index.transaction():
            for result in batch:
                _apply(index, root, result, report)


def _apply(index: Index, root: Path, result: Parsed, report: Report) -> None:
    """Write one parse result to the index, settling duplicate SOPInstanceUIDs."""
    if result.meta is None:
        reason = result.reason or "unknown"
        index.remove_paths([result.path])  # a file that changed into junk
        index.record_skipped(result.path, result.state, reason)
        report.skipped.append((result.path, reason))
        return
    existing = index.instance_by_sop(result.meta.sop_uid)
    if existing and existing[1] != result.path and _exists(root, existing[1]):
        other_path, other_mtime = existing[1], existing[2]
        if not _wins(result.state, FileState(0, other_mtime)):
            reason = _duplicate(other_path)
            index.record_skipped(result.path, result.state, reason)
            report.skipped.append((result.path, reason))
            return
        reason = _duplicate(result.path)
        index.record_skipped(other_path, store_files.state_of(root / other_path), reason)
        report.skipped.append((other_path, reason))
        report.indexed_paths.discard(other_path)
    index.forget_skipped([result.path])
    # A file found in the store arrived when it was last written: its mtime survives
    # re-indexing from scratch, so expiry and by-received do not reset.
    received_at = result.state.mtime_ns / 1e9
    index.put_instance(result.meta, result.path, result.state, received_at=received_at)
    report.indexed_paths.add(result.path)


def _exists(root: Path, rel: str) -> bool:
    return not (root / rel).is_symlink() and (root / rel).is_file()
