"""Running the mount: stale-mount recovery, the trio main loop, clean unmount."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pyfuse3
import trio

from .fs import DicomOperations, MountOptions
from .writer import IndexWriter

log = logging.getLogger(__name__)


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
    args = ["fusermount3", "-u", *(["-z"] if lazy else []), str(mountpoint)]
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise MountError(result.stderr.strip() or f"cannot unmount {mountpoint}")


def prepare(mountpoint: Path) -> None:
    if is_stale(mountpoint):
        log.warning("clearing a stale mount left at %s", mountpoint)
        unmount(mountpoint, lazy=True)
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint} is already a mount point")
    mountpoint.mkdir(parents=True, exist_ok=True)


Task = Callable[[], Awaitable[None]]


def run(
    store: Path,
    mountpoint: Path,
    options: MountOptions,
    tasks: Sequence[Task] = (),
    writer: IndexWriter | None = None,
) -> None:
    """Mount in the foreground, beside `tasks`, until SIGINT/SIGTERM; then unmount cleanly.

    writer: the process's index writer, if it has one; else the mount opens its own."""
    # Until trio takes the signals over, SIGTERM must still unwind through the
    # finally below, or the kernel is left with a dead mount.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    prepare(mountpoint)
    operations = DicomOperations(store, mountpoint, options, writer)
    fuse_options = set(pyfuse3.default_options)
    fuse_options |= {"fsname=dicomfs", "subtype=dicomfs", "default_permissions"}
    if not options.allow_delete:
        fuse_options.add("ro")
    if options.allow_other:
        fuse_options.add("allow_other")
    try:
        pyfuse3.init(operations, str(mountpoint), fuse_options)
    except RuntimeError as exc:
        raise MountError(f"cannot mount {mountpoint}: {exc}") from exc
    log.info("mounted %s on %s", store, mountpoint)
    try:
        run_until_signal([pyfuse3.main, operations.record_accesses, *tasks])
    finally:
        pyfuse3.close(unmount=True)
        operations.close()
        log.info("unmounted %s", mountpoint)


def run_until_signal(tasks: Sequence[Task]) -> None:
    """Run the tasks in one trio nursery until SIGINT or SIGTERM."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):  # a signal before the loop was up
        trio.run(_serve, tasks)


async def _serve(tasks: Sequence[Task]) -> None:
    async with trio.open_nursery() as nursery:
        for task in tasks:
            nursery.start_soon(task)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


def start_background(args: list[str], mountpoint: Path, timeout: float = 15.0) -> int:
    """Start `dicomfs mount` detached; return its pid once the mount is up."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomfs", *args],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_ready(mountpoint):
            return process.pid
        if process.poll() is not None:
            raise MountError(f"the mount process ended with status {process.returncode}")
        time.sleep(0.05)
    process.terminate()
    raise MountError(f"{mountpoint} did not appear within {timeout:.0f} s")
