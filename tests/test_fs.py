"""The pyfuse3 adapter called directly, without a kernel: what each request does."""

from __future__ import annotations

import errno
import stat
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
