"""fsyncs made by other threads while the caller goes on (they overlap the index commit).

A queue and a lock per request, both in C: a thread pool's futures cost more of
the interpreter's lock than the overlap saves when several associations store at
once. The threads start at first use and end with shutdown().
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable

THREADS = 8  # more fsyncs at once only queue in the journal

_Request = tuple[list[int], threading.Lock, list[OSError]]
_requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
_threads: list[threading.Thread] = []
_threads_lock = threading.Lock()


def fsync_later(fds: list[int]) -> Callable[[], None]:
    """Start fsyncing fds in another thread; the function returned waits for it and
    raises its OSError, if any. The caller keeps fds open until then."""
    done = threading.Lock()
    done.acquire()
    failed: list[OSError] = []
    with _threads_lock:
        if not _threads:
            for number in range(THREADS):
                thread = threading.Thread(target=_serve, name=f"fsync-{number}", daemon=True)
                thread.start()
                _threads.append(thread)
    _requests.put((fds, done, failed))

    def wait() -> None:
        done.acquire()
        if failed:
            raise failed[0]

    return wait


def shutdown() -> None:
    """Wait for the fsyncs under way and end the threads (a later request starts them
    again). For the end of a process."""
    with _threads_lock:
        threads = list(_threads)
        _threads.clear()
        for _ in threads:
            _requests.put(None)
    for thread in threads:
        thread.join()


def _serve() -> None:
    while (request := _requests.get()) is not None:
        fds, done, failed = request
        try:
            for fd in fds:
                os.fsync(fd)
        except OSError as exc:
            failed.append(exc)
        finally:
            done.release()
