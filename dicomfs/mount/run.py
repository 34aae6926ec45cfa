"""Running the mount: stale-mount recovery, the session and its threads, clean unmount."""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..life import access
from ..store.writer import IndexWriter
from . import changes, session
from .fs import DicomOperations, MountOptions

log = logging.getLogger(__name__)

FSNAME = "dicomfs"
YOUNG_THRESHOLD = 50_000  # allocations between two walks of the young (Python: 700)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# A task runs beside the mount in a thread of its own until the event is set.
Task = Callable[[threading.Event], None]


class MountError(Exception):
    """The mount cannot be made; the message says why."""


def is_stale(mountpoint: Path) -> bool:
    """A mount left by a crashed daemon answers 'Transport endpoint is not connected'."""
    try:
        os.statvfs(mountpoint)  # statfs always reaches the daemon; stat may be cached
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def is_ready(mountpoint: Path) -> bool:
    """Mounted and answering (a stale mount looks mounted to a cached stat)."""
    return os.path.ismount(mountpoint) and not is_stale(mountpoint)


def unmount(mountpoint: Path, *, lazy: bool = False) -> None:
    result = session.unmount(mountpoint, lazy=lazy)
    if result.returncode == 0:
        return
    if "Device or resource busy" in result.stderr:
        raise MountError(
            f"{mountpoint} is busy: a process has a file or directory open there; "
            f"`fuser -vm {mountpoint}` shows which"
        )
    if "not found in /etc/mtab" in result.stderr:  # fusermount3's word for not yours
        raise MountError(
            f"{mountpoint} was mounted by another user: only they or root can unmount it"
        )
    raise MountError(result.stderr.strip() or f"cannot unmount {mountpoint}")


def umount(mountpoint: Path, timeout: float = 30.0) -> None:
    """`dicomfs umount`: unmount, and return once the process that served the mount
    has exited (index closed, accesses written). A stale mount is just cleared."""
    if _mount_source(mountpoint) is None:  # live or stale, a dicomfs mount is listed
        raise MountError(_not_mounted(mountpoint))
    pid = serving_pid(mountpoint)
    pidfd = _pidfd(pid) if pid is not None else None
    if pidfd is None:  # no process to wait for: perhaps a crashed one, or an old mount
        unmount(mountpoint, lazy=is_stale(mountpoint))
        return
    try:
        unmount(mountpoint)
        ended, _, _ = select.select([pidfd], [], [], timeout)  # readable once it exits
    finally:
        os.close(pidfd)
    if not ended:
        raise MountError(
            f"{mountpoint} is unmounted, but its dicomfs process (pid {pid}) did not exit "
            f"within {timeout:.0f} s: see its log, or end it with kill {pid}"
        )


def _not_mounted(mountpoint: Path) -> str:
    """Why there is nothing to unmount at mountpoint."""
    if os.path.ismount(mountpoint):
        return f"{mountpoint} is not a dicomfs mount"
    if os.path.isdir(mountpoint):
        return f"{mountpoint} is not mounted"
    return f"nothing is mounted at {mountpoint}"


def serving_pid(mountpoint: Path) -> int | None:
    """The pid in the fsname (dicomfs:<pid>) of the dicomfs mount at mountpoint: the
    process itself is not asked, as it may not answer."""
    found = _mount_source(mountpoint)
    prefix = f"{FSNAME}:"
    if found is None or not found.startswith(prefix) or not found[len(prefix) :].isdigit():
        return None
    return int(found[len(prefix) :])


def _mount_source(mountpoint: Path) -> str | None:
    """The source (fsname) of the dicomfs mount at mountpoint, live or stale, from the
    kernel's mount table; None if there is none."""
    absolute = Path(os.path.abspath(mountpoint))
    # Resolve symlinks above the mount point only: a stat of the mount point itself
    # would wait on the process.
    wanted = os.path.join(os.path.realpath(absolute.parent), absolute.name)
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as table:
        for line in table:
            mounted, _, described = line.partition(" - ")
            fstype, source = described.split()[:2]
            if fstype == "fuse.dicomfs" and _unescape(mounted.split()[4]) == wanted:
                found = source  # the last one wins: it is the one on top
    return found


def _unescape(field: str) -> str:
    """The mount table writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _pidfd(pid: int) -> int | None:
    """A descriptor for the process that stays true even if the pid is reused, or None
    if there is no such dicomfs process (it crashed; or another pid namespace's)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if b"dicomfs" in cmdline.read():
                return pidfd
    except OSError:
        pass
    os.close(pidfd)
    return None


def prepare(mountpoint: Path) -> None:
    """Clear a mount a crash left; refuse a mount point in use, or one whose files
    the mount would hide."""
    if is_stale(mountpoint):
        log.warning("clearing a stale mount left at %s", mountpoint)
        unmount(mountpoint, lazy=True)
    if os.path.ismount(mountpoint):
        pid = serving_pid(mountpoint)
        held_by = f": dicomfs (pid {pid}) serves it" if pid else ""
        raise MountError(f"{mountpoint} is already a mount point{held_by}")
    try:
        held = len(os.listdir(mountpoint))
    except OSError as exc:
        raise MountError(f"cannot mount on {mountpoint}: {exc.strerror}") from exc
    if held:
        entries = "1 entry" if held == 1 else f"{held} entries"
        raise MountError(
            f"{mountpoint} is not empty: mounting there would hide its {entries}; "
            "choose an empty directory"
        )


def run(
    store: Path,
    mountpoint: Path,
    options: MountOptions,
    tasks: Sequence[Task] = (),
    writer: IndexWriter | None = None,
    on_mounted: Callable[[], None] | None = None,
) -> None:
    """Mount in the foreground, beside `tasks`, until SIGINT/SIGTERM or an unmount;
    then unmount cleanly.

    writer: the process's index writer, if it has one; else the mount opens its own.
    on_mounted: called once the mount is up."""
    with _stopped_by_signals():
        prepare(mountpoint)
        operations = DicomOperations(store, mountpoint, options, writer)
        try:
            fd = session.mount(mountpoint, _fuse_options(options))
        except session.MountFailed as exc:
            operations.close()
            raise MountError(f"cannot mount {mountpoint}: {exc}") from exc
        fuse = session.Session(fd, operations)
        follower = changes.Changes(store, operations.inodes, fuse, operations)
        operations.changed = follower.catch_up
        unmounted = threading.Event()
        ending = threading.Event()  # we unmount it ourselves: a signal, or a task's end
        reader = threading.Thread(
            target=_serve, args=(fuse, mountpoint, unmounted, ending), name="dicomfs-fuse"
        )
        try:
            follower.start()
            reader.start()
            log.info("mounted %s on %s", store, mountpoint)
            if on_mounted is not None:
                on_mounted()
            settle_the_collector()
            beside = [
                follower.follow,
                every(access.FLUSH_INTERVAL, operations.flush_accesses, "recording accesses"),
                *tasks,
            ]
            run_until_signal(beside, until=unmounted)
        finally:
            ending.set()
            _quietly(unmount, mountpoint, lazy=True)  # a no-op once unmounted
            fuse.stop()  # a process inside the mount keeps it until the session ends
            if reader.ident is not None:  # started
                reader.join()
            fuse.close()
            operations.close()
            log.info("unmounted %s", mountpoint)


def _fuse_options(options: MountOptions) -> list[str]:
    # The pid in the fsname lets `dicomfs umount` wait for this process to exit.
    chosen = [f"fsname={FSNAME}:{os.getpid()}", "subtype=dicomfs", "default_permissions",
              "nosuid", "nodev", "rw" if options.allow_delete else "ro"]  # fmt: skip
    if options.allow_other:
        chosen.append("allow_other")
    return chosen


def _serve(
    fuse: session.Session, mountpoint: Path, ended: threading.Event, ending: threading.Event
) -> None:
    try:
        fuse.serve()  # returns when the kernel ends the session (an unmount), or stop()
    except Exception:
        log.exception("the FUSE session failed: stopping")
    else:
        if not fuse.stopped and not ending.is_set():  # someone else unmounted it
            log.info("%s was unmounted: stopping", mountpoint)
    finally:
        ended.set()


def _quietly(unmounting: Callable[..., None], *args: object, **kwargs: object) -> None:
    with contextlib.suppress(MountError):
        unmounting(*args, **kwargs)


def settle_the_collector() -> None:
    """Keep Python's cycle collector off the paths that answer the kernel.

    Every few hundred allocations it walks the young objects, and now and then every
    object the process has: at start tens of thousands (pydicom's, pynetdicom's).
    The first listing of a view's thousands of patients took three times as long as
    the next for that alone. What exists once the mount is up lives as long as the
    mount: frozen, it is never walked again; and the young are walked every
    YOUNG_THRESHOLD allocations, by when most of a request's objects are long freed."""
    gc.collect()  # what is garbage already goes first: frozen, it would stay
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def every(interval: float, work: Callable[[], object], what: str) -> Task:
    """A task that does work every interval seconds; a failure is logged, not fatal."""

    def repeat(stop: threading.Event) -> None:
        while not stop.wait(interval):
            try:
                work()
            except Exception:
                log.exception("%s failed; it is tried again", what)

    return repeat


class _Stop(BaseException):
    """SIGINT or SIGTERM: unwind the main thread to its clean stop."""


def _raise_stop(signum: int, frame: object) -> None:
    for ignored in STOP_SIGNALS:  # the stop must not be cut short by a second signal
        signal.signal(ignored, signal.SIG_IGN)
    raise _Stop


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGINT and SIGTERM end what runs inside (nested: the outermost wins), at once in
    the main thread; the stop itself is never cut short by another one."""
    if signal.getsignal(signal.SIGTERM) is _raise_stop:
        yield
        return
    previous = {signum: signal.signal(signum, _raise_stop) for signum in STOP_SIGNALS}
    try:
        yield
    except _Stop:
        pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_until_signal(
    tasks: Sequence[Task],
    until: threading.Event | None = None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Run the tasks, each in a thread, until SIGINT or SIGTERM (or until `until` is
    set: by the mount's reader, when the file system is unmounted); then stop them and
    wait for them to finish what they were doing. on_started is called once a signal
    stops them cleanly (a SIGTERM before would end the process at once).

    The wait is on an event, never a thread's join: a join that a signal interrupts
    may take the thread for ended (CPython 3.11's bpo-45274 mend)."""
    stop = threading.Event()
    threads = [threading.Thread(target=task, args=(stop,), daemon=True) for task in tasks]
    try:
        with _stopped_by_signals():
            for thread in threads:
                thread.start()
            if on_started is not None:
                on_started()
            # A signal to this thread ends the wait at once; one that reached another
            # thread is seen here when the wait times out.
            awaited = stop if until is None else until
            while not awaited.wait(0.25):
                pass
    finally:
        stop.set()
        for thread in threads:
            if thread.ident is not None:
                thread.join()


def background_log(mountpoint: Path) -> Path:
    """Where a background mount writes its log: $XDG_STATE_HOME/dicomfs (default
    ~/.local/state/dicomfs), in a file named after the mount point."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    parts = Path(os.path.abspath(mountpoint)).parts[1:]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)) or "root"
    return Path(state) / "dicomfs" / f"mount-{slug[-200:]}.log"  # a name fits in 255 bytes


def _open_log(log: Path) -> int:
    """The log, private (it may name patients), opened for appending."""
    try:
        log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise MountError(f"cannot write the log {log}: {exc.strerror}") from exc
    os.fchmod(fd, 0o600)
    return fd


def start_background(args: list[str], mountpoint: Path, log: Path, timeout: float = 15.0) -> int:
    """Start `dicomfs mount` detached, its output going to `log`; return its pid once
    the mount is up. An error before that is raised here, as the process wrote it."""
    log_fd = _open_log(log)
    start = os.lseek(log_fd, 0, os.SEEK_END)
    # A daemon: it imports nothing from the current directory (-P), which it does not
    # hold busy either (the paths in args are absolute), and it keeps no caller's
    # stdout or stderr open, so that `$(dicomfs mount --background ...)` and
    # `dicomfs mount --background ... 2>&1 | head` return.
    try:
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", "dicomfs", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_fd,
            cwd="/",
            start_new_session=True,
        )
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serving_pid(mountpoint) == process.pid and is_ready(mountpoint):  # not another's
            return process.pid
        if process.poll() is not None:
            said = _last_line(log, start).removeprefix("Error: ")
            raise MountError(said or f"the mount process ended with status "
                             f"{process.returncode}: see {log}")  # fmt: skip
        time.sleep(0.05)
    process.terminate()
    raise MountError(f"{mountpoint} did not appear within {timeout:.0f} s: see {log}")


def _last_line(log: Path, start: int) -> str:
    """The last line written to the log since offset start, or ''."""
    with contextlib.suppress(OSError), log.open("rb") as written:
        written.seek(start)
        lines = written.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""
    return ""
