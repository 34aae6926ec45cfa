"""A leaner wait for FUSE requests in pyfuse3's session loop.

pyfuse3's loop (`pyfuse3.main`) waits for each request the same way: every reader task
takes a trio.Lock, then `trio.lowlevel.wait_readable` on the FUSE descriptor, and the
tasks hand the lock to each other. That is a pass through trio's scheduler and its epoll
for every request, even when the next one is already waiting: most of the daemon's CPU
per request when the handlers themselves take microseconds.

The loop asks for that wait through one module-level function, `_wait_fuse_readable`,
which this module replaces for the life of the mount with one that
- first asks the kernel, without waiting (poll with timeout 0), whether a request is
  there, and if so returns at once: no scheduler pass;
- lets one task at a time wait on the descriptor, the others parked, and wakes one of
  them whenever a request is taken, so that a handler that blocks (a thread hop for a
  listing or a cold read) never stops the others from being served;
- yields to trio every few requests, so that a stream of requests never starves the
  mount's other tasks (the access flush, signal handling, cancellation).

Only the pyfuse3 versions whose loop was read and tested here are adjusted; with any
other, or with DICOMFS_FUSE_LOOP=stock in the environment, the stock loop runs and a log
line says so.
"""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Awaitable, Callable

import pyfuse3
import trio

log = logging.getLogger(__name__)

TESTED_VERSIONS = frozenset({"3.4.0", "3.5.0"})
TASKS = 32  # handlers that may wait at once (a thread hop, a cold read), plus one reading
YIELD_EVERY = 16  # requests taken without a scheduler pass before we yield to trio


def fuse_descriptor() -> int | None:
    """The process's /dev/fuse descriptor: one mount per process, so at most one."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                found.append(int(name))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, for one)
    return found[0] if len(found) == 1 else None


class _Readers:
    """Which of the loop's tasks waits for the next request; the others stand by."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.poll = select.poll()
        self.poll.register(fd, select.POLLIN)
        self.waiting = False  # a task is in wait_readable
        self.closed = False
        self.standby = trio.lowlevel.ParkingLot()
        self.taken = 0  # requests taken since we last yielded

    async def wait(self) -> bool:
        """True when a request can be read without blocking; False when the loop ends."""
        while self.waiting and not self.closed:
            await self.standby.park()
        if self.closed:
            return False
        if self.taken < YIELD_EVERY and self.poll.poll(0):
            self.taken += 1
        else:
            self.taken = 0
            self.waiting = True
            try:
                await trio.lowlevel.wait_readable(self.fd)
            except trio.ClosedResourceError:  # pyfuse3.terminate()
                self.closed = True
                self.standby.unpark_all()
                return False
            finally:
                self.waiting = False
        # We go on to handle this request: someone must be ready to wait for the next
        # should the handler block. If it does not, the one woken finds us waiting
        # again and parks.
        self.standby.unpark()
        return True


def is_adjustable() -> bool:
    if os.environ.get("DICOMFS_FUSE_LOOP") == "stock":
        return False
    return getattr(pyfuse3, "__version__", None) in TESTED_VERSIONS and callable(
        getattr(pyfuse3, "_wait_fuse_readable", None)
    )


async def serve() -> None:
    """pyfuse3.main with the leaner wait where this pyfuse3 allows it (after pyfuse3.init)."""
    fd = fuse_descriptor() if is_adjustable() else None
    if fd is None:
        log.info(
            "pyfuse3 %s: its own session loop (the leaner wait is for versions %s,"
            " without DICOMFS_FUSE_LOOP=stock)",
            getattr(pyfuse3, "__version__", "?"),
            ", ".join(sorted(TESTED_VERSIONS)),
        )
        await pyfuse3.main()
        return
    readers = _Readers(fd)
    stock: Callable[[], Awaitable[bool]] = pyfuse3._wait_fuse_readable  # type: ignore[attr-defined]
    pyfuse3._wait_fuse_readable = readers.wait  # type: ignore[attr-defined]
    try:
        # With our wait, pyfuse3 counts no task as waiting, so it starts one per request
        # until max_tasks: a fixed pool of TASKS tasks.
        await pyfuse3.main(min_tasks=1, max_tasks=TASKS)
    finally:
        pyfuse3._wait_fuse_readable = stock  # type: ignore[attr-defined]
