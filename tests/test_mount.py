"""A real mount on /dev/fuse, used with plain shell tools."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs import corpus
from dicomfs.index import Index
from dicomfs.indexer import reconcile
from dicomfs.mount import is_ready

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")

VIEWS = ("by-modality", "by-patient", "by-date", "by-uid")


class Mount:
    def __init__(self, store: Path, mountpoint: Path) -> None:
        self.store, self.path = store, mountpoint
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dicomfs", "mount", "--store", str(store), str(mountpoint)],
            stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 20
        while not is_ready(mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mount failed: {self.process.stderr.read()}")  # type: ignore[union-attr]
            time.sleep(0.05)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if os.path.ismount(self.path) or _stale(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)
        return self.process.returncode


def _stale(path: Path) -> bool:
    try:
        os.statvfs(path)
    except OSError:
        return True
    return False


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Mount]:
    store = tmp_path / "store"
    expect = corpus.write_awkward(store / "gen")
    corpus.write_regular(store / "incoming", patients=3, studies=2, series=2, instances=4)
    with Index(store) as index:
        reconcile(index, store)
    mount = Mount(store, tmp_path / "mnt")
    mount.expect = expect  # type: ignore[attr-defined]
    try:
        yield mount
    finally:
        mount.stop()


def store_hashes(store: Path) -> dict[str, str]:
    """SOPInstanceUID -> md5 of the stored file, from the index."""
    conn = sqlite3.connect(store / ".dicomfs" / "index.sqlite")
    rows = conn.execute("SELECT sop_uid, path FROM instances").fetchall()
    conn.close()
    return {sop: hashlib.md5((store / path).read_bytes()).hexdigest() for sop, path in rows}


def test_every_view_holds_every_instance_with_the_stored_bytes(mounted: Mount) -> None:
    expected = sorted(store_hashes(mounted.store).values())
    for view in VIEWS:
        files = sh("find", str(mounted.path / view), "-type", "f").split("\n")[:-1]
        assert all(f.endswith(".dcm") for f in files)
        hashes = sh("md5sum", *files).split("\n")[:-1]
        assert sorted(line.split()[0] for line in hashes) == expected, view


def test_the_labs_layout_and_cp_r_of_a_series(mounted: Mount, tmp_path: Path) -> None:
    study = "1.2.826.0.1.3680043.8.498.1.1.0"
    modality = mounted.path / "by-modality"
    (series_dir,) = list(modality.glob(f"*.MOD/*.STA/*.DAY/{study}.UID"))
    assert sh("ls", str(series_dir)).split() == ["000001.SER", "000002.SER"]
    sh("cp", "-r", str(series_dir / "000001.SER"), str(tmp_path / "copy"))
    copied = sorted(p.name for p in (tmp_path / "copy").iterdir())
    assert copied == ["000001.dcm", "000002.dcm", "000003.dcm", "000004.dcm"]
    for name in copied:
        assert (tmp_path / "copy" / name).read_bytes() == (series_dir / "000001.SER" / name
                                                            ).read_bytes()


def test_awkward_names_are_all_reachable_and_safe(mounted: Mount) -> None:
    names = sh("find", str(mounted.path), "-mindepth", "1", "-printf", "%f\n").split("\n")[:-1]
    for name in names:
        assert name not in {".", ".."}
        assert not name.startswith("-")
        assert len(name.encode()) <= 255
        assert "/" not in name
        assert " " not in name
    for label in corpus.AWKWARD_NAMES:
        hits = list((mounted.path / "by-patient").glob(f"*AWK-{label}/*/*/*.dcm"))
        assert len(hits) == 1, label
    # Two series with one number in one study are both there, side by side.
    twins = sorted(p.name for p in (mounted.path / "by-patient").glob("TWIN_SERIES_TW1/*/*"))
    assert len(twins) == 2
    assert all(t.startswith("000005_T1_axial~") for t in twins)


def test_stat_shows_true_size_and_received_time(mounted: Mount) -> None:
    conn = sqlite3.connect(mounted.store / ".dicomfs" / "index.sqlite")
    sop, size, received = conn.execute(
        "SELECT sop_uid, size, received_at FROM instances LIMIT 1").fetchone()
    conn.close()
    (path,) = list((mounted.path / "by-uid").glob(f"*/*/{sop}.dcm"))
    st = path.stat()
    assert st.st_size == size
    assert abs(st.st_mtime - received) < 1
    assert oct(st.st_mode & 0o777) == oct(0o400)


def test_the_mount_is_read_only(mounted: Mount) -> None:
    result = subprocess.run(["touch", str(mounted.path / "by-patient" / "x")],
                            capture_output=True, text=True)
    assert "Read-only file system" in result.stderr
    (some_file,) = list((mounted.path / "by-uid").glob("*/*/*.dcm"))[:1]
    with pytest.raises(OSError, match="Read-only"):
        some_file.open("ab")


def test_new_instances_appear_without_remounting(mounted: Mount) -> None:
    patients = mounted.path / "by-patient"
    assert not any(p.name.startswith("LATE_COMER") for p in patients.iterdir())
    corpus.write(mounted.store / "late.dcm", corpus.Spec(patient_name="LATE^COMER",
                                                          patient_id="L1"))
    with Index(mounted.store) as index:
        reconcile(index, mounted.store)
    deadline = time.monotonic() + 5
    while not any(p.name == "LATE_COMER_L1" for p in patients.iterdir()):
        assert time.monotonic() < deadline, "the new patient never appeared"
        time.sleep(0.1)


def test_a_file_deleted_behind_the_index_gives_enoent(mounted: Mount) -> None:
    (victim,) = list((mounted.path / "by-patient").glob("DUP_PATIENT_DUP1/*/*/*.dcm"))
    (mounted.store / "gen" / "dup" / "newer.dcm").unlink()
    with pytest.raises(FileNotFoundError):
        victim.read_bytes()


def test_sigterm_unmounts_cleanly_and_a_stale_mount_is_cleared(tmp_path: Path) -> None:
    store = tmp_path / "store"
    corpus.write(store / "a.dcm", corpus.Spec())
    with Index(store) as index:
        reconcile(index, store)
    first = Mount(store, tmp_path / "mnt")
    assert first.stop() == 0
    assert not os.path.ismount(tmp_path / "mnt")

    crashed = Mount(store, tmp_path / "mnt")
    crashed.process.kill()  # leaves "Transport endpoint is not connected"
    crashed.process.wait()
    assert _stale(tmp_path / "mnt")
    again = Mount(store, tmp_path / "mnt")
    try:
        assert sh("ls", str(tmp_path / "mnt")).split() == sorted(VIEWS)
    finally:
        assert again.stop() == 0
