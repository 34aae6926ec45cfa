"""The pyfuse3 adapter called directly, without a kernel: what each request does."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Awaitable
from pathlib import Path

import pyfuse3
import pytest
import trio

from dicomfs.dicom import corpus
from dicomfs.mount import page
from dicomfs.mount.fs import DicomOperations, MountOptions
from dicomfs.mount.inodes import ROOT_INODE
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile


def test_stat_of_index_html_never_renders_the_page(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus.write_regular(store, patients=2, studies=1, series=1, instances=1)
    with Index(store) as index:
        reconcile(index, store)
    operations = DicomOperations(store, tmp_path / "mnt", MountOptions())
    render = page.render
    renders: list[int] = []

    def counted(*args: object) -> bytes:
        renders.append(1)
        return render(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(page, "render", counted)

    async def main() -> None:
        # Before the first open, its size is not known yet: 0, as for /proc files.
        attr = await operations.lookup(ROOT_INODE, b"index.html")
        assert (await operations.getattr(attr.st_ino)).st_size == 0
        assert renders == []
        # An open generates the page; stat then shows the size of that page.
        info = await operations.open(attr.st_ino, 0, None)
        assert renders == [1]
        generated = await operations.read(info.fh, 0, 10_000_000)
        await operations.release(info.fh)
        assert (await operations.getattr(attr.st_ino)).st_size == len(generated)
        assert (await operations.lookup(ROOT_INODE, b"index.html")).st_size == len(generated)
        assert renders == [1]

    try:
        trio.run(main)
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

    async def main() -> None:
        views = await operations.lookup(ROOT_INODE, b"by-patient")
        patient = await operations.lookup(views.st_ino, b"PATIENT00000_TEST_ID00000")
        with Index(store) as index:
            index.remove_paths(paths)  # deleted, as by rm of its last file
        with pytest.raises(pyfuse3.FUSEError) as gone:
            await operations.lookup(views.st_ino, b"PATIENT00000_TEST_ID00000")
        assert gone.value.errno == errno.ENOENT
        # The kernel still holds it (rm -r is inside): stat and rmdir still work.
        attr = await operations.getattr(patient.st_ino)
        assert stat.S_ISDIR(attr.st_mode)
        await operations.rmdir(views.st_ino, b"PATIENT00000_TEST_ID00000", None)
        await operations.forget([(patient.st_ino, 1)])
        with pytest.raises(pyfuse3.FUSEError) as forgotten:
            await operations.getattr(patient.st_ino)
        assert forgotten.value.errno == errno.ENOENT

    try:
        trio.run(main)
    finally:
        operations.close()


class _Context:
    """What pyfuse3 passes as ctx: the caller's ids."""

    uid = os.getuid()
    gid = os.getgid()
    pid = os.getpid()
    umask = 0o022


def test_each_request_answers_the_errno_a_read_only_tree_of_files_owes(
    store: Path, tmp_path: Path
) -> None:
    corpus.write_regular(store, patients=1, studies=1, series=1, instances=2)
    with Index(store) as index:
        reconcile(index, store)
    plain = DicomOperations(store, tmp_path / "mnt", MountOptions())
    deleting = DicomOperations(store, tmp_path / "mnt", MountOptions(allow_delete=True))
    ctx = _Context()

    async def errno_of(request: Awaitable[object]) -> int:
        with pytest.raises(pyfuse3.FUSEError) as refused:
            await request
        return refused.value.errno

    async def main() -> None:
        by_uid = await plain.lookup(ROOT_INODE, b"by-uid", ctx)
        (study,) = [name for name, *_ in await listing(plain, by_uid.st_ino)]
        study_attr = await plain.lookup(by_uid.st_ino, study, ctx)
        (series,) = [name for name, *_ in await listing(plain, study_attr.st_ino)]
        series_attr = await plain.lookup(study_attr.st_ino, series, ctx)
        first, _ = [name for name, *_ in await listing(plain, series_attr.st_ino)]
        file_attr = await plain.lookup(series_attr.st_ino, first, ctx)
        page_attr = await plain.lookup(ROOT_INODE, b"index.html", ctx)

        assert await errno_of(plain.lookup(ROOT_INODE, b"by-nothing", ctx)) == errno.ENOENT
        assert await errno_of(plain.getattr(10_000_000, ctx)) == errno.ENOENT
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_APPEND):
            assert await errno_of(plain.open(file_attr.st_ino, flags, ctx)) == errno.EROFS
        assert await errno_of(plain.open(series_attr.st_ino, os.O_RDONLY, ctx)) == errno.EISDIR
        assert await errno_of(plain.opendir(file_attr.st_ino, ctx)) == errno.ENOTDIR
        assert await errno_of(plain.read(999_999, 0, 10)) == errno.EBADF
        assert await errno_of(plain.mkdir(ROOT_INODE, b"new", 0o755, ctx)) == errno.EROFS
        assert await errno_of(plain.setattr(file_attr.st_ino, None, None, None, ctx)) == errno.EROFS
        assert await errno_of(plain.unlink(series_attr.st_ino, first, ctx)) == errno.EROFS
        assert await errno_of(plain.rmdir(study_attr.st_ino, series, ctx)) == errno.EROFS
        # With --allow-delete: only instance files go, and a directory only once empty.
        by_uid = await deleting.lookup(ROOT_INODE, b"by-uid", ctx)
        study_attr = await deleting.lookup(by_uid.st_ino, study, ctx)
        assert await errno_of(deleting.unlink(ROOT_INODE, b"index.html", ctx)) == errno.EPERM
        assert await errno_of(deleting.unlink(by_uid.st_ino, study, ctx)) == errno.EPERM
        assert await errno_of(deleting.rmdir(by_uid.st_ino, study, ctx)) == errno.ENOTEMPTY
        assert await errno_of(deleting.unlink(by_uid.st_ino, b"absent", ctx)) == errno.ENOENT
        # A file opened for reading reads its bytes; index.html too.
        info = await plain.open(file_attr.st_ino, os.O_RDONLY, ctx)
        data = await plain.read(info.fh, 0, file_attr.st_size + 10)
        await plain.release(info.fh)
        assert len(data) == file_attr.st_size
        assert bytes(data[128:132]) == b"DICM"
        info = await plain.open(page_attr.st_ino, os.O_RDONLY, ctx)
        assert (await plain.read(info.fh, 0, 15)).startswith(b"<!DOCTYPE html>")
        await plain.release(info.fh)

    try:
        trio.run(main)
    finally:
        plain.close()
        deleting.close()


async def listing(operations: DicomOperations, inode: int) -> list[tuple[bytes, int]]:
    """What readdir replies for a directory: (name, inode) pairs."""
    replies: list[tuple[bytes, int]] = []
    fh = await operations.opendir(inode, _Context())
    original = pyfuse3.readdir_reply

    def reply(token: object, name: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
        replies.append((name, attr.st_ino))
        return True

    pyfuse3.readdir_reply = reply  # type: ignore[assignment]  # needs a kernel request
    try:
        await operations.readdir(fh, 0, None)
    finally:
        pyfuse3.readdir_reply = original
    await operations.releasedir(fh)
    return replies
