"""Putting one received instance into the store and the index, durably.

The order is what makes an acknowledged instance survive a crash or power
loss: the complete file is fsynced, renamed into its place, its directory
fsynced, and its row committed; only then does the sender hear Success.
A crash before the commit leaves a complete file that the next start indexes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from ..dicom.meta import InstanceMeta, NotIndexable, read_meta
from ..lines import one_line
from ..store import files as store_files
from ..store.directories import SeriesDirectories
from ..store.index import Index, Sender
from ..store.writer import IndexWriter
from . import spool

# Where dicomfs writes (store.canonical_path): only such a copy is removed when the
# same instance arrives under other UIDs; files laid out by others are left alone.
_UID_PART = r"(?:[0-9][0-9.]*|x[0-9a-f]{64}|x[0-9a-f]{8})"  # the 8-hex hashes of old
_CANONICAL = re.compile(rf"^{_UID_PART}/{_UID_PART}/{_UID_PART}\.dcm$")


class Refused(Exception):
    """The instance was not stored: the store could not take it (a full disk, a write
    or an index that failed). The message says why; the sender may send it again."""


class Unreadable(Refused):
    """The instance was not stored: it is not one dicomfs can read and index."""


@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    meta: InstanceMeta
    path: str  # relative to the store
    size: int


def store_spooled(store: Path, spooled: Path, sender: Sender, writer: IndexWriter) -> Stored:
    """Store an instance that pynetdicom has just spooled to disk (see spool.py): one a
    C-GET of the puller receives."""
    received = spool.SpoolFile.claim(str(spooled))
    if received is None:
        raise Refused("the dataset was not spooled")
    try:
        received.complete()
    except OSError as exc:
        raise Refused(describe(exc)) from exc
    return store_received(store, spooled, received.sync, sender, writer)


def store_received(
    store: Path, received: Path, sync: Callable[[], None], sender: Sender, writer: IndexWriter,
    *, head: bytes = b"", directories: SeriesDirectories | None = None,
) -> Stored:  # fmt: skip
    """Move a complete Part 10 file into the store and index it.

    sync() makes the received file durable; head is its first bytes, if at hand
    (see read_meta); directories, the association's, if it has some. Every step is
    made here, in turn: handing the directory's fsync to another thread, to overlap
    the commit, gained nothing (see the README).
    """
    _step("received")
    try:
        meta = read_meta(str(received), head=head)
    except NotIndexable as exc:
        raise Unreadable(str(exc)) from exc
    try:
        sync()
    except OSError as exc:
        raise Refused(describe(exc)) from exc
    _step("synced")
    rel = store_files.canonical_path(meta.study_uid, meta.series_uid, meta.sop_uid)
    own = directories is None
    directories = directories or SeriesDirectories(store)
    try:
        _place(received, rel, directories)
    finally:
        if own:
            directories.close()
    _step("placed")

    def index(index: Index) -> tuple[str | None, store_files.FileState]:
        # The file as it is when its row commits: the same instance, sent twice at
        # once, may have been renamed over it since, and the last commit must tell.
        state = store_files.state_of(store / rel)
        return index.put_instance(meta, rel, state, received_at=time.time(), sender=sender), state

    try:
        previous, state = writer.run(index)
    except Exception as exc:
        # Not acknowledged, but the file stays: the next start indexes it, and the
        # sender's retry replaces it.
        raise Refused(f"could not index it: {one_line(exc)}") from exc
    _step("committed")
    if previous and previous != rel and _CANONICAL.match(previous):
        # The same instance under other UIDs (corrected upstream): the old copy goes.
        with contextlib.suppress(OSError):
            store_files.delete_files(store, [previous])
    return Stored(meta, rel, state.size)


def _place(received: Path, rel: str, directories: SeriesDirectories) -> None:
    """Rename the received file to rel and fsync the directories that changed: its
    name survives power loss. A directory held open that was removed meanwhile
    (expiry) is opened afresh, once."""
    folder, name = os.path.split(rel)
    for attempt in (1, 2):
        try:
            target, changed, held = directories.open(folder)
        except OSError as exc:
            raise Refused(describe(exc)) from exc
        try:
            try:
                os.replace(received, name, dst_dir_fd=target)  # a resent one replaces it whole
            except FileNotFoundError:
                if held and attempt == 1 and os.path.exists(received):
                    directories.forget(folder)  # removed since: made again
                    continue
                raise
            _step("renamed")
            store_files.fsync_all([target, *changed])
            return
        except OSError as exc:
            raise Refused(describe(exc)) from exc
        finally:
            store_files.close_all(changed)
    raise AssertionError("unreachable")


# The durable steps, in order (see the module's docstring). A test makes the process
# die at one of them, as a crash would: DICOMFS_TEST_CRASH_AT=synced, say.
STEPS = ("received", "synced", "renamed", "placed", "committed")
_CRASH_AT = os.environ.get("DICOMFS_TEST_CRASH_AT")
_crashing_with: list[int] = []  # serve, when this is one of its receiver processes


def crash_with(pid: int) -> None:
    """A crash at a step kills this process too (serve, from a receiver process)."""
    _crashing_with.append(pid)


def _step(name: str) -> None:
    if name == _CRASH_AT:
        for pid in [*_crashing_with, os.getpid()]:
            os.kill(pid, signal.SIGKILL)


def describe(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the store's disk is full"
    if exc.errno == errno.ELOOP:
        return f"a symbolic link in the store's path {exc.filename}: never followed"
    return f"cannot write to the store: {exc.strerror or exc}"
