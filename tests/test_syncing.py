"""Directory fsyncs made by other threads: the caller hears how each went."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from dicomfs.store import syncing


def test_a_requested_fsync_is_made_by_another_thread_and_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        made.append((fd, threading.get_ident()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        wait = syncing.fsync_later([fd])
        wait()  # returns once it is made
        assert [done_fd for done_fd, _ in made] == [fd]
        assert made[0][1] != threading.get_ident()
    finally:
        os.close(fd)
        syncing.shutdown()
    assert not any(t.name.startswith("fsync-") for t in threading.enumerate())


def test_a_failed_fsync_raises_in_the_caller_and_the_threads_go_on(tmp_path: Path) -> None:
    read, write = os.pipe()  # a pipe cannot be fsynced: EINVAL
    try:
        with pytest.raises(OSError, match="Invalid argument") as failure:
            syncing.fsync_later([read])()
        assert failure.value.errno == errno.EINVAL
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            syncing.fsync_later([fd])()  # the next one is served as before
        finally:
            os.close(fd)
    finally:
        os.close(read)
        os.close(write)
        syncing.shutdown()
