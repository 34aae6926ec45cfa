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

serve's receiver processes (net/processes.py) each have a writer, and with
SQLite's index the writers of serve's processes share what they need to go on as
one (Shared): a lock to take turns at writing, where SQLite would have them sleep
between tries, and the count of commits and of flushes, so that one flush of the
WAL (one file) covers the commits of every process made before it starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..lines import one_line
from . import files as store_files
from .index import INDEX_DIR, Index

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Shared:
    """What the index writers of serve's processes share with SQLite's index, made
    before they fork: a file each locks (flock) from the start of a transaction to
    its commit, so that they take turns at once, and the kernel lets go of the
    lock of one that is killed; and in shared memory the count of commits made
    (each under the lock) and of those known to be on disk. (PostgreSQL queues
    its writers itself, and each process flushes its own commits there.)"""

    turns: Path
    counts: Any  # ctypes array of two int64, in memory the forked processes share

    @classmethod
    def made(cls, store: Path) -> Shared:
        counts = multiprocessing.get_context("fork").RawArray("q", 2)
        return cls(store / INDEX_DIR / "writers.lock", counts)


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
        self._flush_lock = threading.Lock()
        # Commits made (under the commit lock, and the turn where shared), and of
        # those known to be on disk (under the flush lock). Two processes that flush
        # at once may set the second lower than the other did: a flush more, later.
        self._counts: Any = shared.counts if shared else [0, 0]
        self._turns = -1
        if shared is not None:
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            self._turns = os.open(shared.turns, flags, store_files.FILE_MODE)  # as serve.lock
        self._flush_failed: OSError | None = None

    def close(self) -> None:
        with self._commit_lock, self._flush_lock:
            self._index.close()
            if self._turns >= 0:
                os.close(self._turns)

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
        with self._flush_lock:
            if self._flush_failed is not None:
                # The kernel may have dropped the pages it could not write: no later
                # flush can be trusted to cover them. A restart recovers from the files.
                raise OSError(self._flush_failed.errno, f"the index cannot be made "
                              f"durable since a flush failed: {self._flush_failed}")  # fmt: skip
            made, flushed = self._counts[0], self._counts[1]
            if flushed >= commit:
                return
            try:
                self._index.engine.flush()  # every commit made by now is in the log
            except OSError as exc:
                log.error("flushing the index failed: %s", exc)
                self._flush_failed = exc
                raise
            self._counts[1] = max(self._counts[1], made)

    def _commit(self, batch: list[_Job[Any]]) -> None:
        try:
            if len(batch) == 1 or not self._together(batch):
                for job in batch:
                    self._together([job])
        finally:
            for job in batch:
                job.done = True

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """This writer's turn among serve's processes, if it shares SQLite's index
        with them: one waiting for it wakes as soon as it is free, where one waiting
        for SQLite's own lock sleeps a millisecond, then two, then five."""
        if self._turns < 0:
            yield
            return
        fcntl.flock(self._turns, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._turns, fcntl.LOCK_UN)

    def _together(self, batch: list[_Job[Any]]) -> bool:
        """Run the batch's work in one transaction; whether it committed. A lone job's
        error is its own; a batch's is nobody's yet (the caller runs each alone)."""
        failed: Exception | None = None  # by the work itself, not the commit
        try:
            with self._turn():
                with self._index.transaction(flushed_later=True):
                    for job in batch:
                        try:
                            job.result = job.work(self._index)
                        except Exception as exc:
                            failed = exc
                            raise
                self._counts[0] += 1  # committed: a flush from now on covers it
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
