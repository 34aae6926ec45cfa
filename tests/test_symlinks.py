"""A symlink inside the store is never followed: reading, writing, indexing, deleting.

Whoever can put a link into the store must not make dicomfs serve, write or delete
a file outside it. The store's own path may be a link.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.dicom import corpus
from dicomfs.store import files as store
from dicomfs.store.index import FileState
from dicomfs.store.indexer import parse

from .conftest import tree_fingerprint
from .peers import dcmtk, free_port, serving
from .test_mount import Mount, old_corpus

SECRET = b"root:$6$not-for-the-mount:19000:0:99999:7:::\n"
needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
needs_dcmtk = pytest.mark.skipif(
    not Path("/usr/bin/storescu").exists(), reason="needs dcmtk (scripts/install --test)"
)


def rows(store_dir: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(store_dir / ".dicomfs" / "index.sqlite")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def dicomfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomfs", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the store, with a file that must never be read through it."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "shadow").write_bytes(SECRET)
    return path


# --- the mount ----------------------------------------------------------------------------


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Mount]:
    """A mount of a store reached through a symlink, as the store's own path may be."""
    real = tmp_path / "real-store"
    old_corpus(real, age_days=0)
    (tmp_path / "store").symlink_to(real)
    mount = Mount(tmp_path / "store", tmp_path / "mnt")
    try:
        yield mount
    finally:
        mount.stop()


def through_mount(mount: Mount, rel: str) -> Path:
    """The by-uid path of the instance stored at rel."""
    ((sop, study, series),) = rows(mount.store, f"""
        SELECT i.sop_uid, st.study_uid, se.series_uid FROM instances i
        JOIN series se ON se.id = i.series JOIN studies st ON st.id = se.study
        WHERE i.path = '{rel}'""")  # fmt: skip
    return mount.path / "by-uid" / str(study) / str(series) / f"{sop}.dcm"


def assert_not_served(path: Path) -> None:
    with pytest.raises(OSError, match="symbolic links") as raised:
        path.read_bytes()
    assert raised.value.errno == errno.ELOOP


@needs_fuse
def test_a_stored_file_replaced_by_a_symlink_is_not_served(mounted: Mount, outside: Path) -> None:
    first, second = (str(rel) for (rel,) in rows(mounted.store, "SELECT path FROM instances")[:2])
    path = through_mount(mounted, first)
    stored = (mounted.store / first).read_bytes()
    assert path.read_bytes() == stored  # in the caches now
    subprocess.run(["ln", "-sf", str(outside / "shadow"), str(mounted.store / first)], check=True)
    # A file the mount has opened before is opened again after the kernel hears yes:
    # the kernel may still read what it kept of it, never what the link points to, and
    # once it drops that, the reads are refused.
    with path.open("rb") as handle:
        assert handle.read() == stored
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        handle.seek(0)
        with pytest.raises(OSError, match="symbolic links") as refused:
            handle.read()
        assert refused.value.errno == errno.ELOOP
    assert_not_served(path)  # and a new open is refused at once
    # A directory of the store swapped for a link to a copy outside: not served either.
    directory = (mounted.store / second).parent
    shutil.move(directory, outside / "moved")
    directory.symlink_to(outside / "moved")
    assert_not_served(through_mount(mounted, second))
    mounted.stop()
    assert "never followed" in mounted.process.stderr.read()  # type: ignore[union-attr]


# --- the receiver -------------------------------------------------------------------------


@needs_dcmtk
def test_the_receiver_never_writes_through_a_symlinked_directory(
    tmp_path: Path, outside: Path
) -> None:
    uid = "1.2.826.0.1.3680043.8.498.7"
    spec = corpus.Spec(study_uid=uid, series_uid=f"{uid}.1", sop_uid=f"{uid}.1.1")
    good = corpus.Spec(study_uid=f"{uid}0", series_uid=f"{uid}0.1", sop_uid=f"{uid}0.1.1")
    corpus.write(tmp_path / "send.dcm", spec)
    corpus.write(tmp_path / "good.dcm", good)
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    (store_dir / spec.study_uid).symlink_to(outside)  # the study's directory is a link out
    before = tree_fingerprint(outside)
    with serving(store_dir) as server:
        result = dcmtk("storescu", "-v", "--no-halt", "-aec", "DICOMFS", "127.0.0.1",
                       str(server.port), str(tmp_path / "send.dcm"),
                       str(tmp_path / "good.dcm"))  # fmt: skip
    assert tree_fingerprint(outside) == before
    assert "Refused: OutOfResources" in result.stderr  # 0xA700
    assert result.stderr.count("Received Store Response (Success)") == 1  # the other one
    assert rows(store_dir, "SELECT sop_uid FROM instances") == [(good.sop_uid,)]
    log = [line for line in server.log.read_text().splitlines() if spec.sop_uid in line]
    assert len(log) == 1
    assert "symbolic link" in log[0]
    assert "0xA700" in log[0]


# --- expiry -------------------------------------------------------------------------------


def test_expire_never_deletes_through_a_symlinked_directory(tmp_path: Path, outside: Path) -> None:
    store_dir = tmp_path / "store"
    old_corpus(store_dir)  # indexed under store/incoming, ten days old
    shutil.move(store_dir / "incoming", outside / "incoming")
    (store_dir / "incoming").symlink_to(outside / "incoming")
    before = tree_fingerprint(outside)
    result = dicomfs("expire", "--store", str(store_dir))
    assert result.returncode == 0, result.stderr
    assert "deleted 4 series" in result.stderr
    assert tree_fingerprint(outside) == before
    assert "never followed" in result.stderr


# --- indexing and dicomfs's own directories -------------------------------------------


def test_the_indexer_skips_a_file_behind_a_symlink_with_a_reason(
    tmp_path: Path, outside: Path
) -> None:
    store_dir = tmp_path / "store"
    corpus.write(outside / "scan.dcm", corpus.Spec())
    (store_dir / "study").mkdir(parents=True)
    (store_dir / "study" / "series").symlink_to(outside)
    (store_dir / "link.dcm").symlink_to(outside / "scan.dcm")
    for rel in ("study/series/scan.dcm", "link.dcm"):
        result = parse(rel, FileState(0, 0), str(store_dir))
        assert result.meta is None
        assert result.reason == "a symbolic link in its path: never followed"


@pytest.mark.parametrize("link", [".dicomfs", ".dicomfs/tmp"])
def test_a_symlink_for_dicomfss_own_directories_is_refused(
    tmp_path: Path, outside: Path, link: str
) -> None:
    store_dir = tmp_path / "store"
    (store_dir / link).parent.mkdir(parents=True)
    (store_dir / link).symlink_to(outside)
    before = tree_fingerprint(outside)
    for command in (["index"], ["serve", "--no-mount", "--bind", "127.0.0.1",
                                "--port", str(free_port())]):  # fmt: skip
        result = dicomfs(*command, "--store", str(store_dir))
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert line == (f"Error: {store_dir.resolve() / link} is a symbolic link: dicomfs "
                        "keeps its index and spool only in real directories of the store; "
                        "move it away and start again")  # fmt: skip
    assert tree_fingerprint(outside) == before


# --- the helpers, with and without openat2 --------------------------------------------------


@pytest.fixture(params=["openat2", "component by component"])
def root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if request.param != "openat2":
        monkeypatch.setattr(store, "openat2", lambda *args, **kwargs: None)  # an old kernel
    (tmp_path / "store" / "a").mkdir(parents=True)
    (tmp_path / "store" / "a" / "file").write_bytes(b"ours")
    with store.opened(tmp_path / "store") as fd:
        yield fd


def test_open_beneath_opens_files_below_and_nothing_else(root: int, outside: Path) -> None:
    fd = store.open_beneath(root, "a/file", os.O_RDONLY)
    assert os.read(fd, 10) == b"ours"
    os.close(fd)
    os.symlink(outside / "shadow", "a/link", dir_fd=root)
    os.symlink(outside, "out", dir_fd=root)
    for rel, code in (("a/link", errno.ELOOP), ("out/shadow", errno.ELOOP),
                      ("../outside/shadow", errno.EXDEV),
                      ("/etc/shadow", errno.EXDEV)):  # fmt: skip
        with pytest.raises(OSError, match=r"\[Errno") as raised:
            store.open_beneath(root, rel, os.O_RDONLY)
        assert raised.value.errno == code, rel


def test_make_dirs_and_delete_files_stay_below_the_store(
    root: int, outside: Path, tmp_path: Path
) -> None:
    os.symlink(outside, "out", dir_fd=root)
    with pytest.raises(OSError, match="symbolic links"):
        store.make_dirs(root, "out/new")
    directory, changed = store.make_dirs(root, "b/c")
    assert len(changed) == 2  # the store and b gained an entry
    store.close_all([directory, *changed])
    before = tree_fingerprint(outside)
    top = tmp_path / "store"
    store.delete_files(top, ["out/shadow", "a/file"])
    assert tree_fingerprint(outside) == before
    assert not (top / "a").exists()  # emptied, so removed
    assert (top / "b" / "c").is_dir()
