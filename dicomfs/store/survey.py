"""Compare the store's files with the index's rows: where reconcile and check begin.

A file is unchanged when its (size, mtime) are the ones indexed; telling that takes one
lstat per file, a million at a million instances. The store's top-level entries are
therefore shared out by key range (files.top_key) between processes, one per core.
Each reads the index's rows of its share first, then walks its share, and sends back
only what differs. Reading before walking is what keeps a receiver's new instance
safe: its file is in place before its row is committed, so a row this survey reads
has a file the walk will see.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import threading
from pathlib import Path

from . import files as store_files
from .index import FileState, Index

# Below this many indexed files, starting processes costs more than a second core saves.
PARALLEL_FROM = 20_000


@dataclasses.dataclass
class Survey:
    unchanged: int = 0
    differing: list[tuple[str, FileState]] = dataclasses.field(default_factory=list)
    changed: set[str] = dataclasses.field(default_factory=set)  # differing, and indexed
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, reason)
    vanished: list[str] = dataclasses.field(default_factory=list)  # rows without files
    skipped_gone: list[str] = dataclasses.field(default_factory=list)  # junk gone since

    def add(self, other: Survey) -> None:
        self.unchanged += other.unchanged
        self.differing += other.differing
        self.changed |= other.changed
        self.skipped += other.skipped
        self.vanished += other.vanished
        self.skipped_gone += other.skipped_gone


def survey(index: Index, root: Path, workers: int | None = None) -> Survey:
    """What differs between the files of the store and the index. New and changed
    files come sorted by path, so which of two equally new duplicates wins does not
    depend on the number of cores."""
    workers = workers or os.cpu_count() or 1
    shares = _shares(root, workers) if workers > 1 and _indexed(index) >= PARALLEL_FROM else []
    if len(shares) < 2:
        found = _survey_share(index, root, "", None)
    else:
        found = Survey()
        with concurrent.futures.ProcessPoolExecutor(len(shares), mp_context=_context()) as pool:
            jobs = [pool.submit(_survey_in_child, str(root), low, high) for low, high in shares]
            for job in jobs:
                found.add(job.result())
    found.differing.sort()
    return found


def _indexed(index: Index) -> int:
    return int(index.conn.execute("SELECT count(*) FROM instances").fetchone()[0])


def _shares(root: Path, workers: int) -> list[tuple[str, str | None]]:
    """[low, high) key ranges that together cover every key, about as many top-level
    entries in each."""
    keys = store_files.top_keys(root)
    starts = sorted({keys[len(keys) * n // workers] for n in range(1, workers)} if keys else ())
    lows = ["", *starts]
    return list(zip(lows, [*starts, None], strict=True))


def _context() -> multiprocessing.context.BaseContext:
    # A fork of a process with other threads (serve's receiver, mount and sweeper) can
    # leave the child waiting on a lock one of them held; a fork server starts clean.
    return multiprocessing.get_context("fork" if threading.active_count() == 1 else "forkserver")


def _survey_in_child(root: str, low: str, high: str | None) -> Survey:
    with Index(Path(root), readonly=True) as index:
        return _survey_share(index, Path(root), low, high)


def _survey_share(index: Index, root: Path, low: str, high: str | None) -> Survey:
    found = Survey()
    indexed = index.file_states(low, high)  # first: see the module's docstring
    skipped_before = index.skipped_states(low, high)
    for rel, state in store_files.walk(root, low, high):
        held = indexed.pop(rel, None)
        junk = skipped_before.pop(rel, None)
        if held == state:
            found.unchanged += 1
        elif junk is not None and junk[0] == state:
            found.skipped.append((rel, junk[1]))
        else:
            found.differing.append((rel, state))
            if held is not None:
                found.changed.add(rel)
    # Each was popped as its file was seen: what is left has no file.
    found.vanished = list(indexed)
    found.skipped_gone = list(skipped_before)
    return found
