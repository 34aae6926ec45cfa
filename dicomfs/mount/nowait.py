"""Opening and reading stored files without ever blocking, or not at all.

The mount serves opens and reads on the thread that reads the kernel's requests
when the kernel already holds what is asked for: openat2 with RESOLVE_CACHED
fails rather than read a directory from disk, and preadv2 with RWF_NOWAIT fails
rather than wait for the page cache. Either failure sends the request to a worker
thread, which costs a hand-off (tens of microseconds) instead of a few, and keeps
the requests behind it from waiting on the disk.
"""

from __future__ import annotations

import errno
import os

from ..store import files as store

_available = {"open": True, "read": True}


def open_cached(root: int, rel: str, flags: int) -> int | None:
    """A descriptor for rel below root if every component is in the kernel's lookup
    cache, never through a symlink (see store.open_beneath; a link is left to it)."""
    if not _available["open"]:
        return None
    resolve = store.RESOLVE_BENEATH | store.RESOLVE_NO_SYMLINKS | store.RESOLVE_CACHED
    try:
        fd = store.openat2(root, rel, flags, resolve)
    except OSError:
        return None  # not cached (EAGAIN), or an error the thread's open reports
    if fd is None:
        _available["open"] = False  # a kernel older than 5.12: stop trying
    return fd


def read_cached(fd: int, offset: int, size: int, file_size: int) -> bytearray | None:
    """size bytes at offset (fewer at the end of the file) if all are in the page cache."""
    if not _available["read"]:
        return None
    buffer = bytearray(size)
    try:
        got = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            _available["read"] = False  # the store's file system cannot
        return None
    if got < size and offset + got < file_size:
        return None  # partly cached
    del buffer[got:]  # in place: the reply is sent straight from this buffer
    return buffer
