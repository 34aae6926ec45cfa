"""Writing the index from many threads at once, with group commit.

Each caller queues its work and waits for the commit lock. Whoever gets the
lock first commits everything queued by then in one transaction (one fsync)
and wakes the others whose work it carried; a caller alone pays no thread
hand-off at all. Each piece of work runs in its own savepoint (one alone in
its transaction needs none): one that fails is undone and reported to its
caller alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from .index import Index

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclasses.dataclass
class _Job(Generic[T]):
    work: Callable[[Index], T]
    done: bool = False
    result: T | None = None
    error: BaseException | None = None


class IndexWriter:
    def __init__(self, store: Path) -> None:
        # Every acknowledged instance's row must survive power loss, not only a crash.
        self._index = Index(store, shared=True, durable=True)
        self._pending: list[_Job[Any]] = []
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()

    def close(self) -> None:
        with self._commit_lock:
            self._index.close()

    def run(self, work: Callable[[Index], T]) -> T:
        """Run work(index) in a transaction; return its result once committed."""
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
        return job.result  # type: ignore[return-value]

    def _commit(self, batch: list[_Job[Any]]) -> None:
        index = self._index
        alone = len(batch) == 1  # its transaction undoes it: no savepoint needed
        try:
            with index.transaction():
                for job in batch:
                    try:
                        with contextlib.nullcontext() if alone else index.savepoint():
                            job.result = job.work(index)
                    except Exception as exc:
                        job.error = exc
                        if alone:
                            raise
        except Exception as exc:
            if not (alone and exc is batch[0].error):  # the commit itself failed
                log.error("index commit failed: %s", exc)
            for job in batch:
                job.error = job.error or exc
        finally:
            for job in batch:
                job.done = True
