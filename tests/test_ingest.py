"""One received instance into the store: its file in place and its row committed before the
sender hears Success; the same instance again replaces it; a bad one is refused with the status
the sender is told, and leaves nothing in the store or the index."""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicomfs.dicom import corpus
from dicomfs.net import dimse, ingest, spool
from dicomfs.store import files
from dicomfs.store.directories import SeriesDirectories
from dicomfs.store.index import Index, Sender
from dicomfs.store.indexer import reconcile
from dicomfs.store.writer import IndexWriter

SENDER = Sender(aet="BAY3T", address="10.1.2.3", called_aet="DICOMFS", user="alice")
SPEC = corpus.Spec(study_uid="1.2.840.5", series_uid="1.2.840.5.1", sop_uid="1.2.840.5.1.1")


@pytest.fixture
def writer(store: Path) -> Iterator[IndexWriter]:
    writer = IndexWriter(store)
    yield writer
    writer.close()


def received(store: Path, spec: corpus.Spec, name: str = "rx-1.dcm") -> Path:
    """A complete Part 10 file in the store's tmp, as the spool leaves it."""
    path = files.tmp_dir(store) / name
    corpus.write(path, spec)
    return path


def store_it(store: Path, path: Path, writer: IndexWriter) -> ingest.Stored:
    synced: list[bool] = []
    stored = ingest.store_received(store, path, lambda: synced.append(True), SENDER, writer)
    assert synced == [True]  # made durable before it was acknowledged
    return stored


def rows(store: Path) -> dict[str, str]:
    """SOPInstanceUID -> path, as another process reads the index: only what is committed."""
    with Index(store, readonly=True) as index:
        found = {}
        for path in index.file_states():
            sop = pydicom.dcmread(store / path, stop_before_pixels=True).SOPInstanceUID
            assert index.instance_by_sop(sop) is not None
            found[sop] = path
        return found


def files_in(store: Path) -> list[str]:
    return sorted(rel for rel, _ in files.walk(store))


def test_an_instance_goes_to_its_place_and_its_row_is_committed(
    store: Path, writer: IndexWriter
) -> None:
    path = received(store, SPEC)
    data = path.read_bytes()
    stored = store_it(store, path, writer)
    rel = "1.2.840.5/1.2.840.5.1/1.2.840.5.1.1.dcm"
    assert (stored.path, stored.size, stored.meta.sop_uid) == (rel, len(data), SPEC.sop_uid)
    assert (store / rel).read_bytes() == data
    assert not path.exists()  # renamed, not copied
    assert rows(store) == {SPEC.sop_uid: rel}
    with Index(store, readonly=True) as index:
        (summary,) = index.study_summaries(index.studies_with_uid_prefix(SPEC.study_uid))
    assert summary.senders == "BAY3T"


def test_the_same_instance_again_replaces_it_whole(store: Path, writer: IndexWriter) -> None:
    store_it(store, received(store, SPEC), writer)
    again = received(store, dataclasses.replace(SPEC, matrix=16, series_description="fixed"))
    data = again.read_bytes()
    stored = store_it(store, again, writer)
    assert (store / stored.path).read_bytes() == data
    assert rows(store) == {SPEC.sop_uid: stored.path}
    assert files_in(store) == [stored.path]


def test_the_same_instance_under_corrected_uids_leaves_no_old_copy(
    store: Path, writer: IndexWriter
) -> None:
    first = store_it(store, received(store, SPEC), writer)
    moved = store_it(
        store, received(store, dataclasses.replace(SPEC, series_uid="1.2.840.5.2")), writer
    )
    assert moved.path != first.path
    assert rows(store) == {SPEC.sop_uid: moved.path}
    assert files_in(store) == [moved.path]
    assert not (store / "1.2.840.5" / "1.2.840.5.1").exists()  # its directory went with it


def test_a_copy_laid_out_by_others_is_left_alone(store: Path, writer: IndexWriter) -> None:
    """Only dicomfs's own copy goes when the instance comes again: not a file someone put."""
    theirs = store / "incoming" / "scan.dcm"
    corpus.write(theirs, SPEC)
    with Index(store) as index:
        reconcile(index, store)
    stored = store_it(store, received(store, SPEC), writer)
    assert theirs.exists()
    assert rows(store)[SPEC.sop_uid] == stored.path


def test_what_is_not_dicom_is_refused_as_cannot_understand_and_leaves_nothing(
    store: Path, writer: IndexWriter
) -> None:
    path = files.tmp_dir(store) / "rx-junk.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"not a dataset at all")
    with pytest.raises(ingest.Refused) as caught:
        store_it(store, path, writer)
    assert dimse.refusal(caught.value)[0] == dimse.CANNOT_UNDERSTAND == 0xC210
    assert str(caught.value)  # the reason, for the log line
    assert files_in(store) == []
    assert rows(store) == {}


def test_a_directory_that_is_a_link_is_refused_as_out_of_resources(
    store: Path, writer: IndexWriter, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store / SPEC.study_uid).symlink_to(outside)
    with pytest.raises(ingest.Refused) as caught:
        store_it(store, received(store, SPEC), writer)
    assert dimse.refusal(caught.value)[0] == dimse.OUT_OF_RESOURCES == 0xA700
    assert "symbolic link" in str(caught.value)
    assert "never followed" in str(caught.value)
    assert os.listdir(outside) == []
    assert rows(store) == {}


def test_an_instance_the_index_cannot_take_is_refused_but_its_file_stays_for_the_next_start(
    store: Path, writer: IndexWriter
) -> None:
    broken = IndexWriter(store)
    broken.close()  # every commit now fails
    with pytest.raises(ingest.Refused, match="could not index it") as caught:
        store_it(store, received(store, SPEC), broken)
    assert dimse.refusal(caught.value)[0] == dimse.OUT_OF_RESOURCES
    assert rows(store) == {}
    assert files_in(store) == [files.canonical_path(SPEC.study_uid, SPEC.series_uid, SPEC.sop_uid)]


# --- from the spool -------------------------------------------------------------------------


def spooled(store: Path, spec: corpus.Spec) -> spool.SpoolFile:
    received_file = spool.SpoolFile(files.tmp_dir(store))
    source = received(store, spec, "source.dcm")
    received_file.write(source.read_bytes())
    source.unlink()
    return received_file


def test_a_spooled_instance_is_stored(store: Path, writer: IndexWriter) -> None:
    received_file = spooled(store, SPEC)
    try:
        stored = ingest.store_spooled(store, Path(received_file.name), SENDER, writer)
    finally:
        received_file.close()
    assert rows(store) == {SPEC.sop_uid: stored.path}
    assert pydicom.dcmread(store / stored.path).SOPInstanceUID == SPEC.sop_uid


def test_a_spool_that_could_not_be_written_is_refused_saying_the_disk_is_full(
    store: Path, writer: IndexWriter
) -> None:
    received_file = spooled(store, SPEC)
    received_file.error = OSError(28, "No space left on device")  # as its write met it
    try:
        with pytest.raises(ingest.Refused, match="the store's disk is full") as caught:
            ingest.store_spooled(store, Path(received_file.name), SENDER, writer)
    finally:
        received_file.close()
    assert dimse.refusal(caught.value)[0] == dimse.OUT_OF_RESOURCES
    assert files_in(store) == []
    assert rows(store) == {}


def test_a_dataset_that_was_not_spooled_is_refused(store: Path, writer: IndexWriter) -> None:
    path = received(store, SPEC)  # a file, but not one the spool made
    with pytest.raises(ingest.Refused, match="not spooled") as caught:
        ingest.store_spooled(store, path, SENDER, writer)
    assert dimse.refusal(caught.value)[0] == dimse.OUT_OF_RESOURCES
    assert rows(store) == {}


def test_a_series_another_process_expired_is_made_again_when_it_comes_back(
    store: Path, writer: IndexWriter
) -> None:
    """The receiver remembers a series' row between its instances; a series that
    `dicomfs expire` (another process) deleted meanwhile is written afresh, not refused."""
    store_it(store, received(store, SPEC), writer)
    with Index(store) as other, other.transaction():  # as another process would
        (series,) = other.conn.execute("SELECT id FROM series").fetchone()
        other.doom_series(series)
    again = dataclasses.replace(SPEC, sop_uid=f"{SPEC.sop_uid}.2")
    stored = store_it(store, received(store, again, "rx-2.dcm"), writer)
    assert again.sop_uid in rows(store)
    assert stored.path in rows(store).values()


def test_a_directory_whose_fsync_fails_refuses_the_instance_before_it_is_indexed(
    store: Path, writer: IndexWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fds: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "fsync_all", full)
    with pytest.raises(ingest.Refused, match="disk is full") as caught:
        store_it(store, received(store, SPEC), writer)
    assert dimse.refusal(caught.value)[0] == dimse.OUT_OF_RESOURCES
    assert rows(store) == {}  # not indexed: its name may not survive power loss


def test_a_series_directory_held_open_and_removed_meanwhile_is_made_again(
    store: Path, writer: IndexWriter
) -> None:
    """An association holds its series' directory open between instances; expiry may
    remove it meanwhile, and the next instance then goes to a new one, not lost into
    the removed directory."""
    held = SeriesDirectories(store)
    try:
        first = ingest.store_received(store, received(store, SPEC), lambda: None, SENDER, writer,
                                      directories=held)  # fmt: skip
        folder = store / os.path.dirname(first.path)
        (folder / os.path.basename(first.path)).unlink()
        folder.rmdir()  # as expiry removes an emptied series
        again = dataclasses.replace(SPEC, sop_uid=f"{SPEC.sop_uid}.2")
        stored = ingest.store_received(store, received(store, again, "rx-2.dcm"), lambda: None,
                                       SENDER, writer, directories=held)  # fmt: skip
    finally:
        held.close()
    assert (store / stored.path).is_file()
    assert pydicom.dcmread(store / stored.path).SOPInstanceUID == again.sop_uid
    with Index(store, readonly=True) as index:
        assert stored.path in index.file_states()
