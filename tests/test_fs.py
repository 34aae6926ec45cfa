"""The FUSE adapter called directly, without a kernel: what each request answers."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pydicom
import pytest

from dicomfs.dicom import corpus
from dicomfs.mount import fs, kernel, page
from dicomfs.mount.fs import DicomOperations, MountOptions
from dicomfs.mount.inodes import ROOT_INODE
from dicomfs.mount.session import FuseError, Later, Request
from dicomfs.store import thumbnails, views
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile

REQUEST = Request(unique=1, nodeid=0, uid=os.getuid(), gid=os.getgid(), pid=os.getpid())


class Stat(NamedTuple):
    inode: int
    size: int
    mode: int


def done(answer: Any) -> Any:
    """What the session would reply: a Later's work is run, as a worker would."""
    return answer.work() if isinstance(answer, Later) else answer


def entry(reply: bytes) -> Stat:
    fields = kernel.ENTRY_OUT.unpack(reply)
    return Stat(fields[0], fields[7], fields[15])


def attributes(reply: bytes) -> Stat:
    fields = kernel.ATTR_OUT.unpack(reply)
    return Stat(fields[3], fields[4], fields[12])


def fh_of(reply: bytes) -> int:
    return int(kernel.OPEN_OUT.unpack(reply)[0])


def dirents(batch: bytes) -> list[tuple[bytes, int, int]]:
    """(name, inode, offset of the next) of each entry in a readdir reply."""
    found = []
    at = 0
    while at < len(batch):
        inode, offset, length, _ = kernel.DIRENT.unpack_from(batch, at)
        start = at + kernel.DIRENT.size
        found.append((bytes(batch[start : start + length]), inode, offset))
        at = start + length + (-(kernel.DIRENT.size + length) % 8)
    return found


def listing(operations: DicomOperations, inode: int) -> list[tuple[bytes, int]]:
    """What readdir replies for a directory, read to its end: (name, inode) pairs."""
    found: list[tuple[bytes, int]] = []
    offset = 0
    while batch := dirents(done(operations.readdir(inode, offset, 4096))):
        found += [(name, number) for name, number, _ in batch]
        offset = batch[-1][2]
    (dot, itself), (dotdot, _), *entries = found  # every directory lists those two first
    assert (dot, itself, dotdot) == (b".", inode, b"..")
    return entries


def errno_of(request: Callable[..., Any], *args: Any) -> int:
    with pytest.raises(FuseError) as refused:
        done(request(*args))
    return refused.value.errno


def test_stat_of_index_html_never_renders_the_page(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus.write_regular(store, patients=2, studies=1, series=1, instances=1)
    with Index(store) as index:
        reconcile(index, store)
    operations = DicomOperations(store, tmp_path / "mnt", MountOptions())
    render = page.render
    renders: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> bytes:
        renders.append(1)
        return render(*args, **kwargs)

    monkeypatch.setattr(page, "render", counted)
    try:
        # A stat says a size the page will not exceed (a browser reads that many
        # bytes), without generating it.
        found = entry(operations.lookup(ROOT_INODE, b"index.html"))
        bound = attributes(operations.getattr(found.inode)).size
        assert renders == []
        # An open generates the page; an fstat of it shows its size, exactly.
        fh = fh_of(done(operations.open(found.inode, os.O_RDONLY)))
        assert renders == [1]
        generated = done(operations.read(fh, 0, 10_000_000))
        assert attributes(operations.getattr(found.inode, None, fh)).size == len(generated)
        operations.release(fh)
        assert len(generated) <= bound
        assert len(generated) <= attributes(operations.getattr(found.inode)).size
        assert len(generated) <= entry(operations.lookup(ROOT_INODE, b"index.html")).size
        assert renders == [1]
    finally:
        operations.close()


def test_a_directory_whose_rows_went_stays_an_empty_directory_until_forgotten(
    store: Path, tmp_path: Path
) -> None:
    corpus.write_regular(store, patients=1, studies=1, series=1, instances=2)
    with Index(store) as index:
        reconcile(index, store)
        paths = [row[0] for row in index.conn.execute("SELECT path FROM instances")]
    operations = DicomOperations(store, tmp_path / "mnt", MountOptions(allow_delete=True))
    try:
        views = entry(operations.lookup(ROOT_INODE, b"by-patient"))
        patient = entry(operations.lookup(views.inode, b"PATIENT00000_TEST_ID00000"))
        with Index(store) as index:
            index.remove_paths(paths)  # deleted, as by rm of its last file
        assert errno_of(operations.lookup, views.inode, b"PATIENT00000_TEST_ID00000") == (
            errno.ENOENT
        )
        # The kernel still holds it (rm -r is inside): stat, readdir and rmdir still work.
        assert stat.S_ISDIR(attributes(operations.getattr(patient.inode)).mode)
        assert listing(operations, patient.inode) == []
        done(operations.rmdir(views.inode, b"PATIENT00000_TEST_ID00000", REQUEST))
        operations.forget([(patient.inode, 1)])
        assert errno_of(operations.getattr, patient.inode) == errno.ENOENT
    finally:
        operations.close()


def test_each_request_answers_the_errno_a_read_only_tree_of_files_owes(
    store: Path, tmp_path: Path
) -> None:
    corpus.write_regular(store, patients=1, studies=1, series=1, instances=2)
    with Index(store) as index:
        reconcile(index, store)
    plain = DicomOperations(store, tmp_path / "mnt", MountOptions())
    deleting = DicomOperations(store, tmp_path / "mnt", MountOptions(allow_delete=True))
    try:
        by_uid = entry(plain.lookup(ROOT_INODE, b"by-uid"))
        ((study, study_inode),) = listing(plain, by_uid.inode)
        study_attr = entry(plain.lookup(by_uid.inode, study))
        assert study_attr.inode == study_inode  # the listing's d_ino is stat's st_ino
        ((series, _),) = listing(plain, study_attr.inode)
        series_attr = entry(plain.lookup(study_attr.inode, series))
        (first, first_inode), _ = listing(plain, series_attr.inode)
        file_attr = entry(plain.lookup(series_attr.inode, first))
        assert file_attr.inode == first_inode
        page_attr = entry(plain.lookup(ROOT_INODE, b"index.html"))

        assert errno_of(plain.lookup, ROOT_INODE, b"by-nothing") == errno.ENOENT
        assert errno_of(plain.getattr, 10_000_000) == errno.ENOENT
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_APPEND):
            assert errno_of(plain.open, file_attr.inode, flags, REQUEST) == errno.EROFS
        assert errno_of(plain.open, series_attr.inode, os.O_RDONLY, REQUEST) == errno.EISDIR
        assert errno_of(plain.readdir, file_attr.inode, 0, 4096) == errno.ENOTDIR
        assert errno_of(plain.read, 999_999, 0, 10) == errno.EBADF
        assert errno_of(plain.unlink, series_attr.inode, first, REQUEST) == errno.EROFS
        assert errno_of(plain.rmdir, study_attr.inode, series, REQUEST) == errno.EROFS
        # With --allow-delete: only instance files go, and a directory only once empty.
        by_uid = entry(deleting.lookup(ROOT_INODE, b"by-uid"))
        study_attr = entry(deleting.lookup(by_uid.inode, study))
        assert errno_of(deleting.unlink, ROOT_INODE, b"index.html", REQUEST) == errno.EPERM
        assert errno_of(deleting.unlink, by_uid.inode, study, REQUEST) == errno.EPERM
        assert errno_of(deleting.rmdir, by_uid.inode, study, REQUEST) == errno.ENOTEMPTY
        assert errno_of(deleting.unlink, by_uid.inode, b"absent", REQUEST) == errno.ENOENT
        # A file opened for reading reads its bytes; index.html too.
        fh = fh_of(done(plain.open(file_attr.inode, os.O_RDONLY, REQUEST)))
        data = done(plain.read(fh, 0, file_attr.size + 10))
        plain.release(fh)
        assert len(data) == file_attr.size
        assert bytes(data[128:132]) == b"DICM"
        fh = fh_of(done(plain.open(page_attr.inode, os.O_RDONLY, REQUEST)))
        assert done(plain.read(fh, 0, 15)).startswith(b"<!DOCTYPE html>")
        plain.release(fh)
    finally:
        plain.close()
        deleting.close()


def test_a_directory_read_in_several_batches_reads_one_listing(store: Path, tmp_path: Path) -> None:
    """readdir offsets point into the listing the first batch took: an instance indexed
    while a directory is being read, whose name sorts first, shifts none of the rest."""
    corpus.write_regular(store, patients=1, studies=1, series=1, instances=60)
    with Index(store) as index:
        reconcile(index, store)
    operations = DicomOperations(store, tmp_path / "mnt", MountOptions())
    try:
        by_uid = entry(operations.lookup(ROOT_INODE, b"by-uid"))
        ((study, _),) = listing(operations, by_uid.inode)
        study_inode = entry(operations.lookup(by_uid.inode, study)).inode
        ((series_name, _),) = listing(operations, study_inode)
        series_inode = entry(operations.lookup(study_inode, series_name)).inode
        before = [name for name, _ in listing(operations, series_inode)]
        batch = dirents(done(operations.readdir(series_inode, 0, 512)))  # a few entries

        one = pydicom.dcmread(next(store.rglob("*.dcm")))
        one.SOPInstanceUID = f"{one.SOPInstanceUID}.0"  # sorts first among the others
        one.save_as(store / "late.dcm")
        with Index(store) as index:
            reconcile(index, store)

        read: list[bytes] = []
        while batch:
            read += [name for name, _, _ in batch]
            batch = dirents(done(operations.readdir(series_inode, batch[-1][2], 512)))
        assert read == [b".", b"..", *before]  # each entry once, none missed
        assert len(listing(operations, series_inode)) == 61  # a new listing shows it
    finally:
        operations.close()


def test_every_page_fits_the_size_stat_said_whichever_was_opened_first(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A browser reads as many bytes as stat said: a page cut short loses its script. A
    page barely longer than the head allowed for once made the bound of the next page
    too small for the longer paths of another view."""
    corpus.write_regular(store, patients=3, studies=2, series=1, instances=1)
    with Index(store) as index:
        reconcile(index, store)
        shortest = len(page.render(index, tmp_path / "mnt", "by-uid"))
    monkeypatch.setattr(fs, "_PAGE_HEAD", shortest - 1)  # by-uid's page just over it
    operations = DicomOperations(store, tmp_path / "mnt", MountOptions())
    try:
        for view in ("by-uid", *views.VIEW_NAMES):  # the shortest paths first
            found = entry(operations.lookup(ROOT_INODE, views.page_name(view).encode()))
            bound = attributes(operations.getattr(found.inode)).size
            fh = fh_of(done(operations.open(found.inode, os.O_RDONLY)))
            generated = done(operations.read(fh, 0, 10_000_000))
            operations.release(fh)
            assert generated.endswith(b"</html>\n")
            assert len(generated) <= bound, view
    finally:
        operations.close()


def test_rm_of_a_series_last_file_removes_its_thumbnail_too(store: Path, tmp_path: Path) -> None:
    corpus.write_regular(store, patients=1, studies=1, series=1, instances=2, matrix=16)
    with Index(store) as index:
        reconcile(index, store)
        (series,) = index.conn.execute("SELECT id FROM series").fetchone()
        thumbnails.of_series(store, index.conn, series)
        by_uid = [row[0].split("/") for row in index.conn.execute(
            """SELECT st.study_uid || '/' || se.series_uid || '/' || i.sop_uid || '.dcm'
               FROM instances i JOIN series se ON se.id = i.series
               JOIN studies st ON st.id = se.study"""
        )]  # fmt: skip
    kept = list((store / thumbnails.THUMBS_DIR).iterdir())
    assert len(kept) == 1
    operations = DicomOperations(store, tmp_path / "mnt", MountOptions(allow_delete=True))
    try:
        for study, series_uid, file_name in by_uid:
            node = entry(operations.lookup(ROOT_INODE, b"by-uid")).inode
            for part in (study, series_uid):
                node = entry(operations.lookup(node, part.encode())).inode
            done(operations.unlink(node, file_name.encode(), REQUEST))
            assert kept[0].exists() == (file_name != by_uid[-1][2])  # with the last one
    finally:
        operations.close()
