"""The mount's FUSE session: made by fusermount3, served by one thread reading /dev/fuse.

dicomfs speaks the kernel's FUSE protocol (kernel.py) itself, without a FUSE library,
because what the mount needs most is what a library's loop did not let it ask for:
- plain READDIR, so that `find` gets names and types without the kernel building an
  inode for every file it will never look at;
- listings cached by the kernel: OPENDIR is answered ENOSYS, after which the kernel
  opens directories without asking and keeps their listings in its page cache
  (FOPEN_CACHE_DIR) until the mount invalidates them; FLUSH is answered ENOSYS, after
  which the kernel no longer sends one at each close;
- one request, one read and one write: no scheduler between them. A request is read
  by one thread and answered by it (see _next for how it waits, and _release and
  Then for what is put off until after the answer); work that may wait on the disk
  or take long (a listing of thousands, a file not in the page cache, the index.html
  page, a write to the index) is handed to a pool of worker threads, which answer it
  themselves, so that the requests behind it are not held up.

The mount is made as libfuse makes it without root: fusermount3 (setuid root, from
the fuse3 package) opens /dev/fuse, mounts it and passes the descriptor back over a
socket named in _FUSE_COMMFD.
"""

from __future__ import annotations

import concurrent.futures
import errno
import logging
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from . import kernel
from .kernel import Op

log = logging.getLogger(__name__)

MAX_WRITE = 128 * 1024  # writes are refused, but the kernel sizes our buffer by this
BUFFER_SIZE = MAX_WRITE + 4096  # a request's header, arguments and data
MAX_PAGES = 256  # 1 MiB a READ or READDIR, the kernel's most
WORKERS = 8  # requests that may wait at once (a cold read, a long listing)
SPIN = 0.0005  # seconds a request is awaited without sleeping (see Session._next)
RELEASES_HELD = 32  # RELEASEs put off while other requests wait (see Session._release)
RELEASE_AFTER = 0.00003  # seconds with no request before the RELEASEs put off are done
INIT_FLAGS = kernel.ASYNC_READ | kernel.PARALLEL_DIROPS | kernel.MAX_PAGES


class FuseError(Exception):
    """Answer the request with this errno."""

    def __init__(self, errno_: int) -> None:
        super().__init__(errno_)
        self.errno = errno_


class MountFailed(Exception):
    """fusermount3 could not mount; the message is its own."""


class Request(NamedTuple):
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int


class Later(NamedTuple):
    """A handler's answer that must be worked out off the reading thread: the session
    runs `work` in a worker thread and answers with what it returns or raises."""

    work: Callable[[], Any]


class Then(NamedTuple):
    """A handler's answer, and work to do right after it is sent, before the next
    request is read: what the caller need not wait for."""

    answer: bytes
    after: Callable[[], None]


class Operations(Protocol):
    """What the session asks of the file system. Names are bytes; a handler raises
    FuseError for an errno, returns Later for work that may block, or Then for work
    the caller need not wait for."""

    def lookup(self, parent: int, name: bytes, request: Request) -> bytes | Later: ...
    def forget(self, forgets: Sequence[tuple[int, int]]) -> None: ...
    def getattr(self, inode: int, request: Request, fh: int | None) -> bytes | Later: ...
    def open(self, inode: int, flags: int, request: Request) -> bytes | Later | Then: ...
    def read(self, fh: int, offset: int, size: int) -> Any: ...
    def release(self, fh: int) -> None: ...
    def readdir(self, inode: int, offset: int, size: int) -> bytes | Later: ...
    def statfs(self) -> bytes: ...
    def unlink(self, parent: int, name: bytes, request: Request) -> Later | None: ...
    def rmdir(self, parent: int, name: bytes, request: Request) -> Later | None: ...


def mount(mountpoint: Path, options: Sequence[str]) -> int:
    """Mount on mountpoint through fusermount3; the /dev/fuse descriptor."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        env = {**os.environ, "_FUSE_COMMFD": str(theirs.fileno()), "LC_ALL": "C"}
        args = ["fusermount3", "-o", ",".join(options), "--", os.fspath(mountpoint)]
        try:
            done = subprocess.run(
                args, env=env, pass_fds=[theirs.fileno()], capture_output=True, text=True
            )
        except FileNotFoundError:
            raise MountFailed("fusermount3 is missing: install the fuse3 package") from None
        theirs.close()
        if done.returncode != 0:
            said = done.stderr.strip().removeprefix("fusermount3: ")
            raise MountFailed(said or f"fusermount3 failed with status {done.returncode}")
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
    finally:
        ours.close()
        theirs.close()
    if not fds:
        raise MountFailed("fusermount3 mounted but passed no descriptor back")
    os.set_inheritable(fds[0], False)  # a child holding it would keep the mount alive
    return fds[0]


def unmount(mountpoint: Path, *, lazy: bool = False) -> subprocess.CompletedProcess[str]:
    args = ["fusermount3", "-u", *(["-z"] if lazy else []), "--", os.fspath(mountpoint)]
    # In English whatever the locale: callers read the reason.
    return subprocess.run(args, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})


class Session:
    """One mount's requests, read and answered until the kernel ends the session."""

    def __init__(
        self, fd: int, operations: Operations, workers: int = WORKERS, spin: float = SPIN
    ) -> None:
        self.fd = fd
        self.ops = operations
        self.spin = spin
        self._releases: list[tuple[int, int]] = []  # (unique, fh) of RELEASEs not yet done
        os.set_blocking(fd, False)
        self._stopping = False
        self._wake, self._waker = os.pipe()  # stop() wakes the wait for a request
        self._waiting = select.poll()
        self._waiting.register(fd, select.POLLIN)
        self._waiting.register(self._wake, select.POLLIN)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "dicomfs-fuse")
        self._handlers: dict[int, Callable[[Request, memoryview], None]] = {
            Op.LOOKUP: self._lookup,
            Op.FORGET: self._forget,
            Op.BATCH_FORGET: self._batch_forget,
            Op.GETATTR: self._getattr,
            Op.OPEN: self._open,
            Op.READ: self._read,
            Op.RELEASE: self._release,
            Op.READDIR: self._readdir,
            Op.STATFS: self._statfs,
            Op.UNLINK: self._unlink,
            Op.RMDIR: self._rmdir,
            Op.INTERRUPT: _ignore,  # our replies come soon enough; the kernel drops late ones
        }
        refused = {
            errno.EROFS: (Op.SETATTR, Op.SYMLINK, Op.MKNOD, Op.MKDIR, Op.RENAME, Op.LINK,
                          Op.WRITE, Op.SETXATTR, Op.REMOVEXATTR, Op.CREATE, Op.FALLOCATE,
                          Op.RENAME2, Op.TMPFILE),
            errno.EINVAL: (Op.READLINK,),
        }  # fmt: skip
        for error, ops in refused.items():
            for op in ops:
                self._handlers[op] = self._refuse_with(error)
        # Anything else is ENOSYS, which the kernel remembers for good where it can:
        # OPENDIR (then it caches listings itself), FLUSH, xattrs, ACCESS, locks.

    # --- the loop -----------------------------------------------------------------------

    def serve(self) -> None:
        """Negotiate, then answer requests until the file system is unmounted."""
        buffer = bytearray(BUFFER_SIZE)
        view = memoryview(buffer)
        self._init(view[: self._next(buffer)])
        handlers, unpack, new = self._handlers, kernel.IN_HEADER.unpack_from, tuple.__new__
        while True:
            length = self._next(buffer)
            if not length:
                self._release_held()  # the descriptors: the kernel waits for nothing now
                return
            _, opcode, unique, nodeid, uid, gid, pid, _, _ = unpack(buffer)
            request = new(Request, (unique, nodeid, uid, gid, pid))  # one per request
            handler = handlers.get(opcode)
            if handler is None:
                self.error(unique, errno.ENOSYS)
                continue
            try:
                handler(request, view[kernel.IN_HEADER.size : length])
            except FuseError as exc:
                self.error(unique, exc.errno)
            except Exception:
                log.exception("a FUSE request (opcode %d) failed", opcode)
                self.error(unique, errno.EIO)

    def _next(self, buffer: bytearray) -> int:
        """Read the next request into buffer: its length, or 0 once unmounted.

        For up to SPIN seconds after the last request, it is read without waiting,
        over and over, yielding the core to anything else ready to run: in a stream
        of requests (`cp -r` opens the next file a hundred microseconds after the
        last), the next one is taken at once, where a thread that slept would pay
        for waking up, its core's too, twice the time the answer takes. Then it waits."""
        ready, clock = self._waiting.poll, time.monotonic
        while True:
            if self._stopping:
                return 0
            if not ready(0):  # a poll, not a failed read: no exception, no strerror
                idle = clock()
                while not ready(0):
                    now = clock()
                    if self._releases and now - idle >= RELEASE_AFTER:
                        self._release_held()
                    elif now - idle >= self.spin:
                        self._release_held()
                        ready()
                        break
                    else:
                        os.sched_yield()
            try:
                return os.readv(self.fd, [buffer])
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                if exc.errno == errno.ENODEV:  # unmounted
                    return 0
                if exc.errno == errno.ENOENT:  # interrupted before we could read it
                    continue
                raise

    def _init(self, request: memoryview) -> None:
        _, opcode, unique, *_ = kernel.IN_HEADER.unpack_from(request)
        if opcode != Op.INIT:
            raise MountFailed(f"the kernel began with opcode {opcode}, not INIT")
        major, minor, readahead, offered = kernel.INIT_IN.unpack_from(
            request, kernel.IN_HEADER.size
        )
        if major != kernel.MAJOR:
            self.error(unique, errno.EPROTO)
            raise MountFailed(f"the kernel speaks FUSE {major}.{minor}; dicomfs needs 7")
        self.reply(
            unique,
            kernel.INIT_OUT.pack(
                kernel.MAJOR, min(minor, kernel.MINOR), readahead, offered & INIT_FLAGS,
                64, 48,  # max_background, congestion_threshold: releases, read-ahead
                MAX_WRITE, 1, MAX_PAGES, 0, 0,  # time granularity 1 ns
            ),
        )  # fmt: skip

    @property
    def stopped(self) -> bool:
        """Whether stop() ended the session (else the kernel did: an unmount)."""
        return self._stopping

    def stop(self) -> None:
        """From another thread: end serve() after the request under way. Once closed,
        the session's end makes the kernel refuse what the mount still had to answer:
        a process that holds a file or directory of a lazily unmounted mount does not
        keep the daemon running."""
        self._stopping = True
        os.write(self._waker, b"!")

    def close(self) -> None:
        """After the loop: wait for the workers' last answers, then let the kernel go."""
        self._pool.shutdown(wait=True)
        os.close(self.fd)
        os.close(self._wake)
        os.close(self._waker)

    # --- answering ----------------------------------------------------------------------

    def reply(self, unique: int, data: Any = b"") -> None:
        """Answer with data: bytes, or any buffer (a read's bytearray is not copied)."""
        self._write([kernel.OUT_HEADER.pack(kernel.OUT_HEADER.size + len(data), 0, unique), data])

    def error(self, unique: int, errno_: int) -> None:
        self._write([kernel.OUT_HEADER.pack(kernel.OUT_HEADER.size, -errno_, unique)])

    def notify(self, code: kernel.Notify, *parts: bytes) -> None:
        """Tell the kernel something of ours changed. Never call this from a thread that
        answers requests: the kernel may wait for an answer before it takes this."""
        length = kernel.OUT_HEADER.size + sum(len(part) for part in parts)
        self._write([kernel.OUT_HEADER.pack(length, code, 0), *parts])

    def invalidate_inode(self, inode: int, *, pages: bool) -> None:
        """Its attributes, and with pages its cached data or listing, are stale."""
        offset = 0 if pages else -1  # -1: the attributes alone
        self.notify(kernel.Notify.INVAL_INODE, kernel.INVAL_INODE_OUT.pack(inode, offset, 0))

    def invalidate_entry(self, parent: int, name: bytes) -> None:
        """The name in parent is stale (and what the kernel holds below it)."""
        header = kernel.INVAL_ENTRY_OUT.pack(parent, len(name), 0)
        self.notify(kernel.Notify.INVAL_ENTRY, header, name + b"\0")

    def _write(self, parts: list[Any]) -> None:
        try:
            os.writev(self.fd, parts)
        except OSError as exc:
            # ENOENT: the request was interrupted and is no longer waited for; ENODEV:
            # unmounted meanwhile; for a notification, ENOENT means the kernel does not
            # hold what it names. Nothing is lost by these.
            if exc.errno not in (errno.ENOENT, errno.ENODEV):
                raise

    def _answer(self, request: Request, answer: Any) -> None:
        """Reply with a handler's answer: bytes, a buffer, None (nothing), Later or Then."""
        kind = type(answer)
        if kind is Later:
            self._pool.submit(self._work, request.unique, answer.work)
        elif kind is Then:
            self.reply(request.unique, answer.answer)
            try:
                answer.after()
            except Exception:  # answered already: nothing to tell the kernel
                log.exception("what follows an answer to a FUSE request failed")
        else:
            self.reply(request.unique, b"" if answer is None else answer)

    def _work(self, unique: int, work: Callable[[], Any]) -> None:
        try:
            answer = work()
        except FuseError as exc:
            self.error(unique, exc.errno)
        except Exception:
            log.exception("a FUSE request failed")
            self.error(unique, errno.EIO)
        else:
            self.reply(unique, b"" if answer is None else answer)

    # --- requests -----------------------------------------------------------------------

    def _lookup(self, request: Request, body: memoryview) -> None:
        name = bytes(body[:-1])  # NUL-terminated
        self._answer(request, self.ops.lookup(request.nodeid, name, request))

    def _forget(self, request: Request, body: memoryview) -> None:
        (count,) = kernel.FORGET_IN.unpack_from(body)
        self.ops.forget([(request.nodeid, count)])  # no reply: the kernel waits for none

    def _batch_forget(self, request: Request, body: memoryview) -> None:
        (count, _) = kernel.BATCH_FORGET_IN.unpack_from(body)
        one, start = kernel.FORGET_ONE, kernel.BATCH_FORGET_IN.size
        self.ops.forget([one.unpack_from(body, start + i * one.size) for i in range(count)])

    def _getattr(self, request: Request, body: memoryview) -> None:
        flags, _, fh = kernel.GETATTR_IN.unpack_from(body)
        handle = fh if flags & kernel.GETATTR_FH else None
        self._answer(request, self.ops.getattr(request.nodeid, request, handle))

    def _open(self, request: Request, body: memoryview) -> None:
        (flags, _) = kernel.OPEN_IN.unpack_from(body)
        self._answer(request, self.ops.open(request.nodeid, flags, request))

    def _read(self, request: Request, body: memoryview) -> None:
        fh, offset, size = kernel.READ_IN.unpack_from(body)
        self._answer(request, self.ops.read(fh, offset, size))

    def _release(self, request: Request, body: memoryview) -> None:
        """Nobody waits for a RELEASE (the kernel sends it after close() returned): it
        is done once no request has come for RELEASE_AFTER, so that the OPEN of the next
        file, which a cp -r sends microseconds after it, is not answered after it."""
        (fh,) = kernel.RELEASE_IN.unpack_from(body)
        self._releases.append((request.unique, fh))
        if len(self._releases) >= RELEASES_HELD:
            self._release_held()

    def _release_held(self) -> None:
        while self._releases:
            unique, fh = self._releases.pop()
            try:
                self.ops.release(fh)
            except Exception:
                log.exception("releasing a file handle failed")
            self.reply(unique)

    def _readdir(self, request: Request, body: memoryview) -> None:
        _, offset, size = kernel.READ_IN.unpack_from(body)
        self._answer(request, self.ops.readdir(request.nodeid, offset, size))

    def _statfs(self, request: Request, body: memoryview) -> None:
        self.reply(request.unique, self.ops.statfs())

    def _unlink(self, request: Request, body: memoryview) -> None:
        self._answer(request, self.ops.unlink(request.nodeid, bytes(body[:-1]), request))

    def _rmdir(self, request: Request, body: memoryview) -> None:
        self._answer(request, self.ops.rmdir(request.nodeid, bytes(body[:-1]), request))

    def _refuse_with(self, errno_: int) -> Callable[[Request, memoryview], None]:
        def refuse(request: Request, body: memoryview) -> None:
            self.error(request.unique, errno_)

        return refuse


def _ignore(request: Request, body: memoryview) -> None:
    pass
