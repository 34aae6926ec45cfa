"""Patients' data is private: what dicomfs writes is readable by its user only, or
also by the store's group when the store directory is setgid."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from dicomfs.dicom import corpus

from .peers import dcmtk, serving
from .test_cli import dicomfs

INDEX_FILES = ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm")
needs_dcmtk = pytest.mark.skipif(
    not Path("/usr/bin/storescu").exists(), reason="needs dcmtk (scripts/install --test)"
)


def modes(root: Path) -> dict[str, tuple[int, int]]:
    """(permission bits, group) of everything below root, root itself included."""
    found = {".": (stat.S_IMODE(root.stat().st_mode), root.stat().st_gid)}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(directory, name))
            found[os.path.relpath(os.path.join(directory, name), root)] = (
                stat.S_IMODE(st.st_mode), st.st_gid,
            )  # fmt: skip
    return found


def wrong(found: dict[str, tuple[int, int]], root: Path, file: int, directory: int,
          group: int | None = None) -> dict[str, str]:  # fmt: skip
    """Entries whose mode (or group) is not the one expected, as 'rel: 0o644 gid 0'."""
    bad = {}
    for rel, (mode, gid) in found.items():
        expected = directory if (root / rel).is_dir() else file
        if mode != expected or (group is not None and gid != group):
            bad[rel] = f"{oct(mode)} gid {gid}"
    return bad


def send(tmp_path: Path, port: int) -> None:
    corpus.write_regular(tmp_path / "sent", patients=1, studies=1, series=2, instances=2)
    result = dcmtk("storescu", "-aec", "DICOMFS", "+sd", "+r", "127.0.0.1", str(port),
                   str(tmp_path / "sent"))  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.fixture(autouse=True)
def lax_umask() -> object:
    """The umask many users have: dicomfs must not depend on a stricter one."""
    before = os.umask(0o022)
    yield
    os.umask(before)


@needs_dcmtk
def test_what_serve_receives_and_its_index_are_the_users_alone(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with serving(store) as server:
        send(tmp_path, server.port)
        # storescu is done; the association's thread may still be removing the spool
        # file it made ahead for a next instance (a busy machine is slow to get there).
        spool, deadline = store / ".dicomfs" / "tmp", time.monotonic() + 60
        while any(spool.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        index_files = {name: (store / ".dicomfs" / name).stat() for name in INDEX_FILES}
        found = modes(store)
    assert {name: oct(stat.S_IMODE(st.st_mode)) for name, st in index_files.items()} == {
        name: "0o600" for name in INDEX_FILES
    }
    assert len([rel for rel in found if rel.endswith(".dcm")]) == 4
    assert wrong(found, store, file=0o600, directory=0o700) == {}


def test_what_index_imports_is_the_users_alone(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    corpus.write_regular(tmp_path / "cd", patients=1, studies=1, series=2, instances=2)
    dicomfs("index", "--store", str(store), str(tmp_path / "cd"))
    found = modes(store)
    assert len([rel for rel in found if rel.endswith(".dcm")]) == 4
    assert wrong(found, store, file=0o600, directory=0o700) == {}


def test_an_index_an_older_dicomfs_left_readable_is_tightened(tmp_path: Path) -> None:
    store = tmp_path / "store"
    corpus.write_regular(store / "incoming", patients=1, studies=1, series=1, instances=1)
    dicomfs("index", "--store", str(store))
    own = store / ".dicomfs"
    own.chmod(0o755)
    (own / "index.sqlite").chmod(0o644)
    dicomfs("index", "--store", str(store))
    assert oct(stat.S_IMODE(own.stat().st_mode)) == "0o700"
    assert oct(stat.S_IMODE((own / "index.sqlite").stat().st_mode)) == "0o600"


@needs_dcmtk
def test_a_setgid_store_is_shared_with_its_group_to_read(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    group = 4242 if os.geteuid() == 0 else os.getgid()  # chgrp lab STORE
    os.chown(store, -1, group)
    store.chmod(0o2770)  # chmod g+s STORE
    with serving(store) as server:
        send(tmp_path, server.port)
        index_files = {name: (store / ".dicomfs" / name).stat() for name in INDEX_FILES}
    corpus.write_regular(tmp_path / "cd", patients=1, studies=1, series=1, instances=2, seed=7)
    dicomfs("index", "--store", str(store), str(tmp_path / "cd"))
    found = modes(store)
    del found["."]  # the store itself: as the lab made it
    assert {name: (oct(stat.S_IMODE(st.st_mode)), st.st_gid) for name, st in index_files.items()} \
        == {name: ("0o640", group) for name in INDEX_FILES}  # fmt: skip
    assert len([rel for rel in found if rel.endswith(".dcm")]) == 6
    # Directories inherit the group and the setgid bit: the group reads, nobody else.
    assert wrong(found, store, file=0o640, directory=0o2750, group=group) == {}
