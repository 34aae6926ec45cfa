"""What the mount tells the kernel when the index changes, without a kernel: the
directories the kernel holds, as the adapter numbered them, and a stand-in that records
what it is told."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicomfs.dicom import corpus
from dicomfs.life import access
from dicomfs.mount import kernel
from dicomfs.mount.changes import Changes
from dicomfs.mount.fs import DicomOperations, MountOptions
from dicomfs.mount.inodes import ROOT_INODE, file_inode
from dicomfs.store import views
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile

pytestmark = pytest.mark.usefixtures("index_engine")


class Told:
    def __init__(self) -> None:
        self.inodes: dict[int, bool] = {}  # inode -> its pages (listing) too
        self.entries: list[tuple[int, bytes]] = []

    def invalidate_inode(self, inode: int, *, pages: bool) -> None:
        self.inodes[inode] = self.inodes.get(inode, False) or pages

    def invalidate_entry(self, parent: int, name: bytes) -> None:
        self.entries.append((parent, name))


class Tree:
    """A store of two patients, the mount's adapter, and the inodes of one path down
    by-patient, looked up as the kernel would."""

    def __init__(self, store: Path, tmp_path: Path) -> None:
        corpus.write_regular(store, patients=2, studies=1, series=2, instances=3)
        with Index(store) as index:
            reconcile(index, store)
        self.store = store
        self.fs = DicomOperations(store, tmp_path / "mnt", MountOptions())
        self.told = Told()
        self.changes = Changes(store, self.fs.inodes, self.told, self.fs)
        self.changes.start()
        self.top = self._lookup(ROOT_INODE, "by-patient")
        self.patient = self._lookup(self.top, "PATIENT00000_TEST_ID00000")
        self.study = self._lookup(self.patient, self._only_child(self.patient))
        self.series = self._lookup(self.study, "000001_Series_1")
        self.by_uid = self._lookup(ROOT_INODE, "by-uid")

    def _lookup(self, parent: int, name: str) -> int:
        return int(kernel.ENTRY_OUT.unpack(self.fs.lookup(parent, name.encode()))[0])

    def _only_child(self, inode: int) -> str:
        node = self.fs.inodes.node_of(inode)
        assert node is not None
        with Index(self.store, readonly=True) as index:
            (entry,) = views.list_entries(index.conn, node)
        return entry.name

    def check(self) -> Told:
        self.told.__init__()  # type: ignore[misc]
        self.changes.check()
        return self.told

    def write(self, sql: str, *args: object) -> None:
        with Index(self.store) as index, index.transaction():
            index.conn.execute(sql, args)

    def close(self) -> None:
        self.changes.close()
        self.fs.close()


@pytest.fixture
def tree(store: Path, tmp_path: Path) -> Iterator[Tree]:
    made = Tree(store, tmp_path)
    yield made
    made.close()


def test_nothing_changed_nothing_told(tree: Tree) -> None:
    told = tree.check()
    assert (told.inodes, told.entries) == ({}, [])


def test_a_new_instance_makes_its_series_listing_and_the_times_above_it_stale(
    tree: Tree,
) -> None:
    one = pydicom.dcmread(next(iter(sorted(tree.store.rglob("*.dcm")))))
    with Index(tree.store) as index:
        (series_uid,) = index.conn.execute(
            "SELECT series_uid FROM series WHERE dir_name = '000001_Series_1' AND study = "
            "(SELECT id FROM studies WHERE patient = 1)"
        ).fetchone()
    one.SeriesInstanceUID = series_uid
    one.SOPInstanceUID = f"{one.SOPInstanceUID}.9"
    one.InstanceNumber = 9
    one.PatientName, one.PatientID = "PATIENT00000^TEST", "ID00000"
    one.save_as(tree.store / "new.dcm")
    with Index(tree.store) as index:
        reconcile(index, tree.store)
    told = tree.check()
    assert told.inodes[tree.series] is True  # its listing
    for above in (tree.study, tree.patient, tree.top, ROOT_INODE):
        assert above in told.inodes  # their mtime: the newest receipt below
    assert told.entries == []


def test_a_new_study_makes_the_listings_on_its_path_stale(tree: Tree) -> None:
    corpus.write(tree.store / "late.dcm", corpus.Spec(
        patient_name="PATIENT00000^TEST", patient_id="ID00000", study_uid="1.2.3.4.5",
        series_uid="1.2.3.4.5.6", sop_uid="1.2.3.4.5.6.7"))  # fmt: skip
    with Index(tree.store) as index:
        reconcile(index, tree.store)
    told = tree.check()
    assert told.inodes[tree.patient] is True  # lists the new study now
    assert told.inodes[tree.top] is True
    assert told.inodes.get(tree.series) is None  # an untouched series' listing stays


def test_a_series_gone_is_taken_out_of_the_kernels_names(tree: Tree) -> None:
    with Index(tree.store) as index:
        node = tree.fs.inodes.node_of(tree.series)
        assert node is not None
        paths = [row[0] for row in index.conn.execute(
            "SELECT path FROM instances WHERE series = ?", (node.row,))]  # fmt: skip
        ids = [row[0] for row in index.conn.execute(
            "SELECT id FROM instances WHERE series = ?", (node.row,))]  # fmt: skip
        with index.transaction():
            index.remove_paths(paths)
    told = tree.check()
    assert (tree.study, b"000001_Series_1") in told.entries
    assert told.inodes[tree.study] is True  # its listing lost an entry
    for row in ids:  # the files' pages and attributes, in every view at once
        assert told.inodes[file_inode(row)] is True
    assert tree.fs.inodes.node_of(tree.series) is not None  # the kernel still holds it


def test_a_read_makes_times_stale_and_no_listing_nor_any_cached_page(tree: Tree) -> None:
    node = tree.fs.inodes.node_of(tree.series)
    assert node is not None
    with Index(tree.store) as index:
        (row,) = index.conn.execute(
            "SELECT id FROM instances WHERE series = ? LIMIT 1", (node.row,)
        ).fetchone()
        with index.transaction():
            access.record(index, {row: (1e9 + 7200, 0)})  # the first read: told
    told = tree.check()
    assert told.inodes[file_inode(row)] is False
    assert told.inodes[tree.series] is False
    assert not any(told.inodes.values())
    with Index(tree.store) as index, index.transaction():
        access.record(index, {row: (1e9 + 7300, 0)})  # within the hour: not told
    assert tree.check().inodes.get(file_inode(row)) is None


def test_a_mount_left_behind_by_pruned_changes_drops_everything(tree: Tree) -> None:
    tree.write("INSERT INTO changes (study) VALUES (1)")
    tree.write("INSERT INTO changes (study) VALUES (1)")
    with Index(tree.store, readonly=True) as index:
        (last,) = index.conn.execute("SELECT max(seq) FROM changes").fetchone()
    tree.write("DELETE FROM changes WHERE seq < ?", last)  # as pruning does
    told = tree.check()
    placed = {(parent, name.encode()) for _, parent, name in tree.fs.inodes.placed()}
    assert placed <= set(told.entries)
    assert (tree.study, b"000001_Series_1") in told.entries
