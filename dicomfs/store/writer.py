"""Writing the index from many threads at once, with group commit, durably.

Each caller queues its work and waits for the commit lock. Whoever gets the
lock first commits everything queued by then in one transaction and wakes the
others whose work it carried; a caller alone pays no thread hand-off at all.
The work of a batch runs in one transaction. If any of it fails, the transaction
is undone and each piece runs again alone, in a transaction of its own: one that
fails is reported to its caller alone, and the others are done. (A savepoint
around each piece did the same at two statements a piece, each a round trip to
a PostgreSQL server; work fails seldom, and every piece only writes the index,
so running it again is safe.)

A caller hears that its work is done only once its commit survives power loss:
the commit goes to the WAL unflushed (synchronous=NORMAL), and the WAL is then
flushed (fdatasync) outside the commit lock, by the caller or by one whose flush
came after its commit. So the next batch commits while this one's flush waits for
the disk, where a synchronous commit held the lock for the whole flush. With the
index in PostgreSQL alike: the commit returns before the server has flushed its
log (synchronous_commit off for that transaction), and the flush is a synchronous
commit of a transaction of its own, on a connection of its own, outside both the
commit lock and the writers' lock that other machines' receivers wait for.

serve's receiver processes (net/processes.py) each have a writer, and the
writers of serve's processes share what they need to go on as one (Shared): a
lock to take turns at writing, where SQLite would have them sleep between tries,
and the count of commits and of flushes, so that one flush covers the commits of
every process made before it starts (the WAL is one file, PostgreSQL's log one log).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Lock
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..lines import one_line
from .index import Index

log = logging.getLogger(__name__)
T = TypeVar("T")
# Seconds to wait for a lock shared with serve's other processes, as long as SQLite
# waits for its own (sqlite_engine.py): one killed while it held the lock never lets
# go of it, so past this the writer goes on without it (serve is stopping by then).
PATIENCE = 30.0


@dataclasses.dataclass(frozen=True)
class Shared:
    """What the index writers of serve's processes share, made before they fork."""

    turns: Lock  # held from a transaction's start to its commit
    flushing: Lock  # held by the one that flushes
    counts: SynchronizedArray[int]  # commits made, and of those known to be on disk

    @classmethod
    def made(cls) -> Shared:
        context = multiprocessing.get_context("fork")
        return cls(context.Lock(), context.Lock(), context.Array("q", 2))


@contextlib.contextmanager
def _within(lock: Lock | threading.Lock | None) -> Iterator[None]:
    """Hold the lock, or go on without it past PATIENCE."""
    got = lock is not None and lock.acquire(timeout=PATIENCE)
    try:
        yield
    finally:
        if got:
            lock.release()  # type: ignore[union-attr]


@dataclasses.dataclass
class _Job(Generic[T]):
    work: Callable[[Index], T]
    done: bool = False
    result: T | None = None
    error: BaseException | None = None
    commit: int = 0  # the number of the commit that carried it


class IndexWriter:
    def __init__(self, store: Path, *, shared: Shared | None = None) -> None:
        """shared: with the writers of serve's other processes, if it has some."""
        self._index = Index(store, shared=True)
        self._pending: list[_Job[Any]] = []
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._turns = shared.turns if shared else None
        self._flush_lock = shared.flushing if shared else threading.Lock()
        # Commits made, and of those known to be on disk: written under _counting.
        self._counts: SynchronizedArray[int] | list[int] = shared.counts if shared else [0, 0]
        self._counting = shared.counts.get_lock() if shared else threading.Lock()
        self._flush_failed: OSError | None = None

    def close(self) -> None:
        with self._commit_lock, _within(self._flush_lock):
            self._index.close()

    def run(self, work: Callable[[Index], T]) -> T:
        """Run work(index) in a transaction; return its result once committed and on
        disk."""
        job: _Job[T] = _Job(work)
        with self._pending_lock:
            self._pending.append(job)
        with self._commit_lock:
            if not job.done:  # nobody carried it in their commit meanwhile
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._commit(batch)
        if job.error is not None:
            raise job.error
        self._flush(job.commit)
        return job.result  # type: ignore[return-value]

    def _flush(self, commit: int) -> None:
        """Return once the commit numbered `commit` is on disk. One flush (the engine's:
        an fdatasync of SQLite's WAL, or a commit to PostgreSQL's log) covers every
        commit made before it starts: callers that waited for the flush lock find
        theirs flushed already."""
        with _within(self._flush_lock):
            if self._flush_failed is not None:
                # The kernel may have dropped the pages it could not write: no later
                # flush can be trusted to cover them. A restart recovers from the files.
                raise OSError(self._flush_failed.errno, f"the index cannot be made "
                              f"durable since a flush failed: {self._flush_failed}")  # fmt: skip
            with self._counting:
                made, flushed = self._counts[0], self._counts[1]
            if flushed >= commit:
                return
            try:
                self._index.engine.flush()  # every commit made by now is in the log
            except OSError as exc:
                log.error("flushing the index failed: %s", exc)
                self._flush_failed = exc
                raise
            with self._counting:
                self._counts[1] = max(self._counts[1], made)

    def _commit(self, batch: list[_Job[Any]]) -> None:
        try:
            if len(batch) == 1 or not self._together(batch):
                for job in batch:
                    self._together([job])
        finally:
            for job in batch:
                job.done = True

    def _together(self, batch: list[_Job[Any]]) -> bool:
        """Run the batch's work in one transaction; whether it committed. A lone job's
        error is its own; a batch's is nobody's yet (the caller runs each alone)."""
        failed: Exception | None = None  # by the work itself, not the commit
        try:
            # The turn among serve's processes: one waiting for it wakes as soon as
            # it is free, where one waiting for SQLite's lock sleeps between tries.
            with _within(self._turns):
                with self._index.transaction(flushed_later=True):
                    for job in batch:
                        try:
                            job.result = job.work(self._index)
                        except Exception as exc:
                            failed = exc
                            raise
                with self._counting:  # numbered in the order of the commits
                    self._counts[0] += 1
                    number = self._counts[0]
        except Exception as exc:
            if len(batch) > 1:
                return False
            batch[0].error = exc
            if exc is not failed:
                log.error("index commit failed: %s", one_line(exc))
            return False
        for job in batch:
            job.commit = number
        return True
