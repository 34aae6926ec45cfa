"""Index writes from many threads: each caller's work is committed once, and before its caller
hears so; several callers share a commit; one that fails is undone and told alone."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from dicomfs.store.index import FileState, Index
from dicomfs.store.writer import IndexWriter

pytestmark = pytest.mark.usefixtures("index_engine")

CALLERS = 8


@pytest.fixture
def writer(store: Path) -> Iterator[IndexWriter]:
    writer = IndexWriter(store)
    yield writer
    writer.close()


def committed(store: Path) -> set[str]:
    """What another connection sees: only what is committed."""
    with Index(store, readonly=True) as index:
        return set(index.skipped_states())


class Crowd:
    """CALLERS threads that each run one piece of work through the writer, queued while a
    first caller holds the commit: the way several associations store at once."""

    def __init__(self, writer: IndexWriter, fails: Callable[[int], bool] = lambda n: False):
        self.writer, self.fails = writer, fails
        self.ran_on: dict[int, list[int]] = {n: [] for n in range(CALLERS)}
        self.callers: dict[int, int] = {}
        self.outcomes: dict[int, object] = {}
        self._holding = threading.Event()
        self._release = threading.Event()

    def _work(self, number: int) -> Callable[[Index], int]:
        def work(index: Index) -> int:
            self.ran_on[number].append(threading.get_ident())
            if number == 0:
                self._holding.set()
                self._release.wait(60)
            index.record_skipped(f"file{number}", FileState(number, number), "a test row")
            if self.fails(number):
                raise ValueError(f"piece {number} fails")
            return number

        return work

    def _call(self, number: int) -> None:
        self.callers[number] = threading.get_ident()
        try:
            self.outcomes[number] = self.writer.run(self._work(number))
        except ValueError as exc:
            self.outcomes[number] = exc

    def run(self) -> None:
        first = threading.Thread(target=self._call, args=(0,))
        first.start()
        assert self._holding.wait(60)  # the first caller holds the commit
        rest = [threading.Thread(target=self._call, args=(n,)) for n in range(1, CALLERS)]
        for thread in rest:
            thread.start()
        # They queue their work meanwhile: wait until all of it is there (the writer's own
        # queue: nothing else shows that a thread has queued and waits for the commit).
        deadline = time.monotonic() + 60
        while len(self.writer._pending) < CALLERS - 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        self._release.set()
        for thread in [first, *rest]:
            thread.join(60)

    def carried(self) -> list[int]:
        """The pieces run by another caller's thread, in its commit."""
        return [n for n, ran in self.ran_on.items() if ran != [self.callers[n]]]


def test_a_caller_alone_runs_its_work_in_its_own_thread_and_it_is_committed_on_return(
    store: Path, writer: IndexWriter
) -> None:
    def work(index: Index) -> int:
        index.record_skipped("alone.dcm", FileState(1, 2), "a test row")
        return threading.get_ident()

    assert writer.run(work) == threading.get_ident()
    assert committed(store) == {"alone.dcm"}


def test_every_callers_work_is_committed_once_and_waiting_callers_share_a_commit(
    store: Path, writer: IndexWriter
) -> None:
    crowd = Crowd(writer)
    crowd.run()
    assert crowd.outcomes == {n: n for n in range(CALLERS)}  # each caller gets its own result
    assert all(len(ran) == 1 for ran in crowd.ran_on.values()), crowd.ran_on  # run once
    assert crowd.carried(), "no caller's work went in another's commit"
    assert committed(store) == {f"file{n}" for n in range(CALLERS)}


def test_a_failing_piece_is_undone_and_reported_to_its_caller_alone(
    store: Path, writer: IndexWriter
) -> None:
    crowd = Crowd(writer, fails=lambda n: n == 3)
    crowd.run()
    failure = crowd.outcomes.pop(3)
    assert isinstance(failure, ValueError)
    assert str(failure) == "piece 3 fails"
    assert crowd.outcomes == {n: n for n in range(CALLERS) if n != 3}
    assert committed(store) == {f"file{n}" for n in range(CALLERS) if n != 3}
    # It shared its commit (the thread that ran it) with pieces that were committed.
    assert [n for n in crowd.ran_on if n != 3 and crowd.ran_on[n] == crowd.ran_on[3]]


def test_a_caller_alone_whose_work_fails_is_told_and_nothing_of_it_is_committed(
    store: Path, writer: IndexWriter, caplog: pytest.LogCaptureFixture
) -> None:
    def half_done(index: Index) -> None:
        index.record_skipped("half.dcm", FileState(1, 2), "written before the failure")
        raise ValueError("fails half-way")

    with pytest.raises(ValueError, match="fails half-way"):
        writer.run(half_done)
    assert committed(store) == set()  # its transaction undone: all of it
    assert "commit failed" not in caplog.text  # its own failure, not the index's
    writer.run(lambda index: index.record_skipped("next.dcm", FileState(1, 2), "after"))
    assert committed(store) == {"next.dcm"}


@pytest.mark.sqlite_only("SQLite's WAL, which the writer flushes")
def test_every_callers_commit_is_flushed_to_disk_before_it_hears_so(
    writer: IndexWriter, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = os.stat(store / ".dicomfs" / "index.sqlite-wal").st_ino
    flushed: list[set[str]] = []  # what another connection saw committed at each flush
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        assert os.fstat(fd).st_ino == wal  # the WAL the commits went to
        flushed.append(committed(store))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    writer.run(lambda index: index.record_skipped("one.dcm", FileState(1, 2), "a test row"))
    assert flushed == [{"one.dcm"}]  # committed, then flushed, then returned
    # Several callers at once: each returns only after a flush that came after its
    # commit, and a flush carries every commit made before it.
    crowd = Crowd(writer)
    crowd.run()
    assert crowd.outcomes == {n: n for n in range(CALLERS)}
    assert flushed[-1] >= {f"file{n}" for n in range(CALLERS)}
    assert len(flushed) <= 1 + CALLERS


@pytest.mark.sqlite_only("SQLite's WAL, which the writer flushes")
def test_after_a_failed_flush_nothing_more_is_said_to_be_durable(
    writer: IndexWriter, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError, match="Input/output error"):
        writer.run(lambda index: index.record_skipped("a.dcm", FileState(1, 2), "row"))
    monkeypatch.undo()  # the disk answers again; the pages it dropped stay dropped
    with pytest.raises(OSError, match="since a flush failed"):
        writer.run(lambda index: index.record_skipped("b.dcm", FileState(1, 2), "row"))


def test_a_reader_cannot_write(store: Path, writer: IndexWriter) -> None:
    writer.run(lambda index: index.record_skipped("a.dcm", FileState(1, 2), "row"))
    with Index(store, readonly=True) as reader:
        with pytest.raises((sqlite3.OperationalError, psycopg.errors.ReadOnlySqlTransaction)):
            reader.record_skipped("b.dcm", FileState(1, 2), "row")
        assert reader.skipped_states() == {"a.dcm": (FileState(1, 2), "row")}
