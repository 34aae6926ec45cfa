"""The pyfuse3 adapter called directly, without a kernel: what each request does."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dicomfs import corpus, page
from dicomfs.fs import DicomOperations, MountOptions
from dicomfs.index import Index
from dicomfs.indexer import reconcile
from dicomfs.inodes import ROOT_INODE


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
