"""A real mount on /dev/fuse, used with plain shell tools."""

from __future__ import annotations

import contextlib
import grp
import hashlib
import html
import json
import os
import pwd
import re
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from dicomfs.dicom import corpus
from dicomfs.life import expiry
from dicomfs.mount.run import is_ready
from dicomfs.store import views
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile
from dicomfs.store.writer import IndexWriter

from .conftest import LOOKALIKES, write_lookalike_uids
from .peers import free_port, terminate

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")

VIEWS = ("by-modality", "by-patient", "by-date", "by-received", "by-uid")
DAY = 86400.0


class Mount:
    def __init__(self, store: Path, mountpoint: Path, *extra: str) -> None:
        self.store, self.path = store, mountpoint
        with contextlib.suppress(FileExistsError):  # it may be a mount a crash left
            os.mkdir(mountpoint)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dicomfs",
                "mount",
                "--store",
                str(store),
                str(mountpoint),
                *extra,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while not is_ready(mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mount failed: {self.process.stderr.read()}")  # type: ignore[union-attr]
            time.sleep(0.05)

    def stop(self) -> int:
        terminate(self.process)
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


def files_under(directory: Path) -> list[str]:
    """What `find -type f` finds, while the index may be changing: for the moment it
    takes the mount to tell the kernel, a listing the kernel keeps may still name a
    directory that just went, which find then reports as missing."""
    found = subprocess.run(["find", str(directory), "-type", "f"], capture_output=True, text=True)
    return found.stdout.split()


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


def test_an_instance_is_one_inode_in_every_view_and_no_tool_sees_a_link(mounted: Mount) -> None:
    """find -printf %i shows readdir's inode numbers; stat asks lookup and getattr."""
    by_sop: dict[str, set[tuple[int, int]]] = {}
    for view in VIEWS:
        listed = sh("find", str(mounted.path / view), "-type", "f", "-printf", "%i %p\n")
        for line in listed.splitlines():
            inode, path = line.split(" ", 1)
            st = os.stat(path)
            assert st.st_ino == int(inode), path
            assert st.st_nlink == 1, path  # cp, tar and du copy and count each one
            sop = pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID
            by_sop.setdefault(str(sop), set()).add((st.st_ino, st.st_size))
    assert len(by_sop) == len(store_hashes(mounted.store))
    assert all(len(seen) == 1 for seen in by_sop.values())  # the same in all five views
    inodes = [inode for ((inode, _),) in by_sop.values()]
    assert len(set(inodes)) == len(inodes)  # and no two instances share one


def test_the_labs_layout_and_cp_r_of_a_series(mounted: Mount, tmp_path: Path) -> None:
    study = "1.2.826.0.1.3680043.8.498.1.1.0"
    modality = mounted.path / "by-modality"
    (series_dir,) = list(modality.glob(f"*.MOD/*.STA/*.DAY/{study}.UID"))
    assert sh("ls", str(series_dir)).split() == ["000001.SER", "000002.SER"]
    sh("cp", "-r", str(series_dir / "000001.SER"), str(tmp_path / "copy"))
    copied = sorted(p.name for p in (tmp_path / "copy").iterdir())
    assert copied == ["000001.dcm", "000002.dcm", "000003.dcm", "000004.dcm"]
    for name in copied:
        assert (tmp_path / "copy" / name).read_bytes() == (
            series_dir / "000001.SER" / name
        ).read_bytes()


def test_cp_r_of_a_study_out_of_every_view_gives_the_stored_files(
    mounted: Mount, tmp_path: Path
) -> None:
    study = "1.2.826.0.1.3680043.8.498.1.1.0"
    expected = sorted(
        hashlib.md5(p.read_bytes()).hexdigest()
        for p in (mounted.store / "incoming" / study).glob("*.dcm")
    )
    for view in VIEWS:
        directories = sh("find", str(mounted.path / view), "-type", "d").split()
        source = next((d for d in directories if _holds_study(Path(d), study)), None)
        assert source is not None, view
        target = tmp_path / view
        sh("cp", "-r", source, str(target))
        copied = sorted(file_md5(str(p)) for p in target.rglob("*.dcm"))
        assert copied == expected, view


def _holds_study(directory: Path, study_uid: str) -> bool:
    """The directory of one whole study: its files are all that study's, and all of it."""
    files = list(directory.rglob("*.dcm"))
    if len(files) != 4 * 2:  # write_regular: 2 series of 4 instances per study
        return False
    return all(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID == study_uid
               for f in files)  # fmt: skip


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


def test_lookalike_uids_are_each_reachable_through_by_uid_with_their_bytes(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    specs = write_lookalike_uids(store / "gen")
    with Index(store) as index:
        reconcile(index, store)
    expected = sorted(store_hashes(store).values())
    mount = Mount(store, tmp_path / "mnt")
    try:
        by_uid = mount.path / "by-uid"
        studies = sh("ls", str(by_uid)).split()
        assert len(studies) == len(LOOKALIKES)
        assert "1.2.3_4" in studies  # the plain one is shown as itself
        files = sh("find", str(by_uid), "-type", "f").split("\n")[:-1]
        hashes = sh("md5sum", *files).split("\n")[:-1]
        assert sorted(line.split()[0] for line in hashes) == expected
        assert len(files) == len(specs)
        # Each directory holds one study's, one series' files, and each file is itself.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the UIDs are invalid on purpose
            uids = {Path(f): uids_of(f) for f in files}
        held: dict[Path, set[str]] = {}
        for path, (study, series, _) in uids.items():
            held.setdefault(path.parent.parent, set()).add(study)
            held.setdefault(path.parent, set()).add(series)
        assert all(len(found) == 1 for found in held.values())
        assert len({sop for *_, sop in uids.values()}) == len(specs)
    finally:
        mount.stop()


def uids_of(path: str) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def test_stat_shows_true_size_and_received_time(mounted: Mount) -> None:
    conn = sqlite3.connect(mounted.store / ".dicomfs" / "index.sqlite")
    sop, size, received = conn.execute(
        "SELECT sop_uid, size, received_at FROM instances LIMIT 1"
    ).fetchone()
    conn.close()
    (path,) = list((mounted.path / "by-uid").glob(f"*/*/{sop}.dcm"))
    st = path.stat()
    assert st.st_size == size
    assert abs(st.st_mtime - received) < 1
    assert oct(st.st_mode & 0o777) == oct(0o600)


def test_the_mount_is_read_only(mounted: Mount) -> None:
    result = subprocess.run(
        ["touch", str(mounted.path / "by-patient" / "x")], capture_output=True, text=True
    )
    assert "Read-only file system" in result.stderr
    (some_file,) = list((mounted.path / "by-uid").glob("*/*/*.dcm"))[:1]
    with pytest.raises(OSError, match="Read-only"):
        some_file.open("ab")


def test_a_copy_out_of_the_mount_is_the_copiers_to_delete(mounted: Mount, tmp_path: Path) -> None:
    (study,) = list((mounted.path / "by-patient").glob("PATIENT00000_TEST_ID00000/*"))[:1]
    assert modes_below(study) == {"dir": 0o700, "file": 0o600}
    sh("cp", "-r", str(study), str(tmp_path / "copy"))
    assert modes_below(tmp_path / "copy") == {"dir": 0o700, "file": 0o600}
    sh("rm", "-rf", str(tmp_path / "copy"))  # no chmod first
    assert not (tmp_path / "copy").exists()
    # The mount itself stays read-only, whatever the mode bits say.
    (some_file,) = list(study.rglob("*.dcm"))[:1]
    for command in (["touch", str(some_file)], ["rm", "-f", str(some_file)],
                    ["mkdir", str(study / "new")], ["chmod", "u+x", str(some_file)]):  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        assert "Read-only file system" in result.stderr, command
    assert some_file.exists()


def modes_below(top: Path) -> dict[str, int]:
    """The permission bits of the directories and of the files under top (and top),
    each kind having one mode."""
    found: dict[str, set[int]] = {"dir": set(), "file": set()}
    for path in [top, *top.rglob("*")]:
        found["dir" if path.is_dir() else "file"].add(path.stat().st_mode & 0o7777)
    assert all(len(modes) == 1 for modes in found.values()), found
    return {kind: modes.pop() for kind, modes in found.items()}


def test_mode_0440_shows_0640_files_and_0750_directories(tmp_path: Path) -> None:
    store = tmp_path / "store"
    corpus.write(store / "a.dcm", corpus.Spec())
    with Index(store) as index:
        reconcile(index, store)
    mount = Mount(store, tmp_path / "mnt", "--mode", "0440", "--allow-delete")
    try:
        (study,) = (mount.path / "by-patient").glob("*/*")
        assert modes_below(study) == {"dir": 0o750, "file": 0o640}
        (path,) = study.rglob("*.dcm")
        with pytest.raises(OSError, match="Read-only"):
            path.open("ab")
        sh("rm", "-r", str(study))  # --allow-delete still deletes
        assert not list(store.glob("*.dcm"))
    finally:
        mount.stop()


def test_new_instances_appear_without_remounting(mounted: Mount) -> None:
    patients = mounted.path / "by-patient"
    assert not any(p.name.startswith("LATE_COMER") for p in patients.iterdir())
    corpus.write(
        mounted.store / "late.dcm", corpus.Spec(patient_name="LATE^COMER", patient_id="L1")
    )
    with Index(mounted.store) as index:
        reconcile(index, mounted.store)
    deadline = time.monotonic() + 5
    while not any(p.name == "LATE_COMER_L1" for p in patients.iterdir()):
        assert time.monotonic() < deadline, "the new patient never appeared"
        time.sleep(0.1)


def test_a_series_listed_again_shows_what_arrived_and_went_meanwhile(mounted: Mount) -> None:
    """The mount keeps listings while the index is unchanged: a change must still show."""
    series = next((mounted.path / "by-uid").glob("*/*"))
    before = sorted(p.name for p in series.iterdir())
    assert sorted(p.name for p in series.iterdir()) == before  # listed again, from memory
    first = pydicom.dcmread(series / before[0], stop_before_pixels=True, force=True)
    late = corpus.Spec(
        patient_name=str(first.PatientName),
        patient_id=str(first.PatientID),
        study_uid=str(first.StudyInstanceUID),
        series_uid=str(first.SeriesInstanceUID),
        sop_uid="1.2.3.4.5.6.7.8.9",
        instance_number=999,
    )
    corpus.write(mounted.store / "late" / "late.dcm", late)
    with Index(mounted.store) as index:
        reconcile(index, mounted.store)
    wait_until(lambda: "1.2.3.4.5.6.7.8.9.dcm" in {p.name for p in series.iterdir()})
    (mounted.store / "late" / "late.dcm").unlink()
    with Index(mounted.store) as index:
        reconcile(index, mounted.store)
    wait_until(lambda: sorted(p.name for p in series.iterdir()) == before)


def test_a_file_deleted_behind_the_index_gives_enoent_and_the_index_learns_it(
    mounted: Mount,
) -> None:
    (victim,) = list((mounted.path / "by-patient").glob("DUP_PATIENT_DUP1/*/*/*.dcm"))
    (mounted.store / "gen" / "dup" / "newer.dcm").unlink()
    with pytest.raises(FileNotFoundError):
        victim.read_bytes()
    conn = sqlite3.connect(mounted.store / ".dicomfs" / "index.sqlite")
    rows = conn.execute("SELECT count(*) FROM instances WHERE path = 'gen/dup/newer.dcm'")
    assert rows.fetchone()[0] == 0
    conn.close()
    # It was the patient's only instance: the patient leaves the views too.
    wait_until(lambda: "DUP_PATIENT_DUP1" not in sh("ls", str(mounted.path / "by-patient")))


def wait_until(condition: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def test_index_html_lists_every_study_escaped_and_current(mounted: Mount) -> None:
    conn = sqlite3.connect(mounted.store / ".dicomfs" / "index.sqlite")
    patient_ids = [row[0] for row in conn.execute("SELECT patient_id FROM patients")]
    (studies,) = conn.execute("SELECT count(*) FROM studies").fetchone()
    conn.close()
    # index.html, and beside it, hidden, the same page for each other view.
    shown = sorted(p.name for p in mounted.path.iterdir() if p.name.endswith(".html"))
    assert shown == sorted(map(views.page_name, views.VIEW_NAMES))
    assert [name for name in shown if not name.startswith(".")] == ["index.html"]
    for view in views.VIEW_NAMES:
        page = (mounted.path / views.page_name(view)).read_text()
        for patient_id in patient_ids:
            assert html.escape(patient_id) in page
        assert "<script>alert" not in page  # a PatientName of the corpus carries one
        assert "&lt;script&gt;alert" in page
        # Every directory it names can be entered.
        (base,) = re.findall(r'data-base="([^"]*)"', page)
        assert base == f"{mounted.path}/{view}"
        named = re.findall(r"<code><bdi>(.*?)</bdi></code>", page)
        assert len(named) >= studies
        for directory in named:
            assert Path(html.unescape(f"{base}/{directory}")).is_dir(), directory
    corpus.write(
        mounted.store / "late.dcm", corpus.Spec(patient_name="LATE^COMER", patient_id="LATE-ID-1")
    )
    with Index(mounted.store) as index:
        reconcile(index, mounted.store)
    assert "LATE-ID-1" in (mounted.path / "index.html").read_text()


def test_ls_l_of_the_root_and_every_reader_get_the_whole_index_html(
    mounted: Mount, tmp_path: Path
) -> None:
    # Before the first open, stat says a size no page will exceed (it never generates one).
    assert "index.html" in sh("ls", "-l", str(mounted.path))
    first = read_page_every_way(mounted.path / "index.html", tmp_path)
    # A study arrives: the page grows beyond the size `ls -l` has just seen.
    corpus.write(
        mounted.store / "late.dcm", corpus.Spec(patient_name="LATE^COMER", patient_id="LATE-ID-8")
    )
    with Index(mounted.store) as index:
        reconcile(index, mounted.store)
    assert "index.html" in sh("ls", "-l", str(mounted.path))
    later = read_page_every_way(mounted.path / "index.html", tmp_path)
    assert len(later) > len(first)
    assert b"LATE-ID-8" in later


def read_page_every_way(page: Path, tmp_path: Path) -> bytes:
    """wc -c, cat, cp and Python each get the whole page, whatever size stat said before.
    (Each open generates the page anew: the same length, as only the time changes.)"""
    counted = int(sh("wc", "-c", str(page)).split()[0])
    by_cat = subprocess.run(["cat", str(page)], capture_output=True, check=True).stdout
    sh("cp", str(page), str(tmp_path / "copy.html"))
    by_cp = (tmp_path / "copy.html").read_bytes()
    by_python = page.read_bytes()
    assert by_cat.endswith(b"</html>\n")
    assert counted == len(by_cat) == len(by_cp) == len(by_python)
    return by_cat


def test_directory_times_summarise_their_contents(mounted: Mount) -> None:
    conn = sqlite3.connect(mounted.store / ".dicomfs" / "index.sqlite")
    (newest,) = conn.execute("SELECT max(received_at) FROM instances").fetchone()
    study_uid, study_newest = conn.execute(
        """SELECT st.study_uid, max(i.received_at) FROM instances i
           JOIN series se ON se.id = i.series JOIN studies st ON st.id = se.study
           GROUP BY st.id ORDER BY st.study_uid LIMIT 1"""
    ).fetchone()
    conn.close()
    assert abs((mounted.path / "by-patient").stat().st_mtime - newest) < 0.01
    assert abs((mounted.path / "by-uid" / study_uid).stat().st_mtime - study_newest) < 0.01
    assert (mounted.path / "by-uid" / study_uid).stat().st_nlink >= 2


def test_by_received_shows_the_local_time_each_study_arrived(mounted: Mount) -> None:
    conn = sqlite3.connect(mounted.store / ".dicomfs" / "index.sqlite")
    study_uid, patient_dir, study_dir, first = conn.execute(
        """SELECT st.study_uid, p.dir_name, st.dir_name, min(i.received_at) FROM instances i
           JOIN series se ON se.id = i.series JOIN studies st ON st.id = se.study
           JOIN patients p ON p.id = st.patient
           WHERE st.study_uid = '1.2.826.0.1.3680043.8.498.1.1.0'"""
    ).fetchone()
    conn.close()
    day = time.strftime("%Y-%m-%d", time.localtime(first))
    clock = time.strftime("%H.%M.%S", time.localtime(first))
    entry = f"{clock}_{patient_dir}_{study_dir}"
    assert entry in sh("ls", str(mounted.path / "by-received" / day)).split()
    received = sh("find", str(mounted.path / "by-received" / day / entry), "-type", "f").split()
    by_uid = sh("find", str(mounted.path / "by-uid" / study_uid), "-type", "f").split()
    assert len(received) == len(by_uid) > 0
    assert sorted(map(file_md5, received)) == sorted(map(file_md5, by_uid))


def file_md5(path: str) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def test_a_name_that_is_not_there_is_enoent_at_every_level(mounted: Mount) -> None:
    for path in (
        "by-patient/NOBODY_0",
        "by-modality/XX0000.MOD",
        "by-date/1999",
        "by-received/1999-01-01",
        "by-uid/1.2.3.4.5.6.7.8.9",
        "by-patient/TWIN_SERIES_TW1/nope",
    ):
        assert not (mounted.path / path).exists(), path


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
        assert sh("ls", str(tmp_path / "mnt")).split() == sorted([*VIEWS, "index.html"])
    finally:
        assert again.stop() == 0


def test_a_stop_while_the_mount_is_busy_and_held_is_prompt_and_clean(tmp_path: Path) -> None:
    """SIGTERM while a find walks the mount and a shell sits in one of its directories:
    the mount goes at once (the shell is left in a directory that no longer answers),
    with nothing in the log but its two lines."""
    store = tmp_path / "store"
    corpus.write_regular(store, patients=4, studies=2, series=2, instances=5)
    with Index(store) as index:
        reconcile(index, store)
    mount = Mount(store, tmp_path / "mnt")
    holder = subprocess.Popen(["sleep", "600"], cwd=mount.path / "by-uid")
    walker = subprocess.Popen(
        ["sh", "-c", f"while true; do find {mount.path} -type f >/dev/null 2>&1; done"]
    )
    try:
        wait_until(lambda: len(files_under(mount.path / "by-patient")) == 80)
        mount.process.send_signal(signal.SIGTERM)
        mount.process.wait(timeout=30)  # not held up by the shell's directory
        assert not os.path.ismount(mount.path)
        said = mount.process.stderr.read()  # type: ignore[union-attr]
        assert said.splitlines() == [
            f"mounted {store} on {mount.path}; Ctrl-C unmounts",
            f"unmounted {mount.path}",
        ], said
    finally:
        for process in (walker, holder):
            process.kill()
            process.wait()
        mount.stop()


def test_a_large_instance_reads_back_exactly_in_every_view(tmp_path: Path) -> None:
    store = tmp_path / "store"
    spec = corpus.Spec(patient_name="BIG^IMAGE", patient_id="BIG1", matrix=1024)  # 2 MB
    corpus.write(store / "big.dcm", spec)
    with Index(store) as index:
        reconcile(index, store)
    expected = file_md5(str(store / "big.dcm"))
    mount = Mount(store, tmp_path / "mnt")
    try:
        files = sh("find", str(mount.path), "-name", "*.dcm").split()
        assert len(files) == len(VIEWS)
        for _ in range(2):  # the second time, reads are served from the page cache
            assert [file_md5(f) for f in files] == [expected] * len(files)
        with open(files[0], "rb") as handle:  # reads at odd offsets and sizes
            handle.seek(1_000_001)
            assert handle.read(7) == (store / "big.dcm").read_bytes()[1_000_001:1_000_008]
    finally:
        mount.stop()


def old_corpus(store: Path, age_days: float = 10) -> None:
    corpus.write_regular(store / "incoming", patients=2, studies=1, series=2, instances=3)
    then = time.time() - age_days * 86400
    for path in store.rglob("*.dcm"):
        os.utime(path, (then, then))
    with Index(store) as index:
        reconcile(index, store)


def index_rows(store: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(store / ".dicomfs" / "index.sqlite")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_read_one_series_expire_the_rest_everywhere(tmp_path: Path) -> None:
    store = tmp_path / "store"
    old_corpus(store)
    mount = Mount(store, tmp_path / "mnt")
    try:
        (read_series, *_) = sorted((mount.path / "by-patient").glob("*/*/*"))
        for path in read_series.iterdir():
            path.read_bytes()
        # The access reaches the index within a few seconds, and atime shows it.
        wait_until(lambda: index_rows(store, "SELECT count(*) FROM instances WHERE "
                                             "last_access IS NOT NULL") == [(3,)])  # fmt: skip
        wait_until(lambda: next(read_series.iterdir()).stat().st_atime > time.time() - 60)
        result = subprocess.run(
            [sys.executable, "-m", "dicomfs", "expire", "--store", str(store)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        # Exactly the read series is left, in every view, on disk and in the index.
        wait_until(lambda: all(len(files_under(mount.path / view)) == 3 for view in VIEWS),
                   seconds=2)  # fmt: skip
        left = {Path(p).name for p in sh("find", str(store / "incoming"), "-type", "f").split()}
        assert len(left) == 3
        assert index_rows(store, "SELECT count(*) FROM instances") == [(3,)]
        audit = subprocess.run(
            [sys.executable, "-m", "dicomfs", "audit", "--store", str(store), "--json"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        events = [record["event"] for record in json.loads(audit)]
        assert events.count("read") == 1
        assert events.count("deleted") == 3
    finally:
        mount.stop()


def expire_everything(store: Path) -> None:
    """Expire, as another process would, every series: a `now` a month ahead makes each
    one due, however soon the mount records a read of it."""
    writer = IndexWriter(store)
    try:
        expiry.expire(writer, store, time.time() + 30 * DAY, 7 * DAY, by="test")
    finally:
        writer.close()


def test_a_file_held_open_stays_readable_and_stat_able_after_its_expiry(tmp_path: Path) -> None:
    store = tmp_path / "store"
    old_corpus(store)
    mount = Mount(store, tmp_path / "mnt")
    try:
        ((sop, path),) = index_rows(store, "SELECT sop_uid, path FROM instances LIMIT 1")
        (held,) = (mount.path / "by-uid").glob(f"*/*/{sop}.dcm")
        expected = (store / str(path)).read_bytes()
        with held.open("rb") as handle:
            expire_everything(store)  # its file and row are gone
            assert not (store / str(path)).exists()
            # Once its listing no longer shows it, the mount has told the kernel that the
            # file's attributes and pages are stale too: the next fstat and read ask it.
            wait_until(lambda: f"{sop}.dcm" not in str(files_under(mount.path / "by-uid")))
            assert os.fstat(handle.fileno()).st_size == len(expected)
            assert handle.read() == expected
    finally:
        mount.stop()


def test_a_file_read_through_its_expiry_lends_nothing_to_the_instances_after_it(
    tmp_path: Path,
) -> None:
    """The kernel keeps a file open through its expiry, and what it read of it. The
    instances that come next are other files: never shown with those bytes."""
    store = tmp_path / "store"
    old_corpus(store)
    mount = Mount(store, tmp_path / "mnt")
    try:
        (held,) = sorted((mount.path / "by-uid").glob("*/*/*.dcm"))[-1:]
        with held.open("rb") as handle:
            expire_everything(store)
            wait_until(lambda: files_under(mount.path / "by-uid") == [])
            handle.read()  # read after its expiry: the kernel keeps these pages
        corpus.write_regular(store / "later", patients=2, studies=1, series=2, instances=3, seed=2)
        with Index(store) as index:
            reconcile(index, store)
        wait_until(lambda: len(files_under(mount.path / "by-uid")) == 12)
        for path in (mount.path / "by-uid").glob("*/*/*.dcm"):
            with Index(store, readonly=True) as index:
                sop = path.name.removesuffix(".dcm")
                (stored,) = index.conn.execute(
                    "SELECT path FROM instances WHERE sop_uid = ?", (sop,)
                ).fetchone()
            assert path.read_bytes() == (store / stored).read_bytes(), path
    finally:
        mount.stop()


def test_killing_the_mount_before_the_flush_loses_no_instance(tmp_path: Path) -> None:
    store = tmp_path / "store"
    old_corpus(store)
    before = hashes_of(store)
    mount = Mount(store, tmp_path / "mnt")
    for path in (mount.path / "by-uid").rglob("*.dcm"):
        path.read_bytes()
    mount.process.kill()  # at once: the accesses are still in memory
    mount.stop()
    assert hashes_of(store) == before
    result = subprocess.run([sys.executable, "-m", "dicomfs", "check", "--store", str(store)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout


def hashes_of(store: Path) -> dict[str, str]:
    return {str(p): file_md5(str(p)) for p in (store / "incoming").rglob("*.dcm")}


def test_rm_r_deletes_through_the_index_only_with_allow_delete(tmp_path: Path) -> None:
    store = tmp_path / "store"
    old_corpus(store, age_days=0)
    mount = Mount(store, tmp_path / "mnt")
    try:
        (series,) = sorted((mount.path / "by-patient").glob("*/*/*"))[:1]
        result = subprocess.run(["rm", "-r", str(series)], capture_output=True, text=True)
        assert "Read-only file system" in result.stderr
    finally:
        mount.stop()
    mount = Mount(store, tmp_path / "mnt", "--allow-delete")
    try:
        (series,) = sorted((mount.path / "by-patient").glob("*/*/*"))[:1]
        sh("rm", "-r", str(series))
        assert not series.exists()
        wait_until(lambda: all(len(files_under(mount.path / view)) == 9 for view in VIEWS),
                   seconds=2)  # fmt: skip
        assert len(list((store / "incoming").rglob("*.dcm"))) == 9
        audit = subprocess.run(
            [sys.executable, "-m", "dicomfs", "audit", "--store", str(store), "--json",
             "--event", "deleted"], capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert len(json.loads(audit)) == 3
    finally:
        mount.stop()


def test_owner_and_group_of_the_files_are_given_by_name(tmp_path: Path) -> None:
    try:
        user, group = pwd.getpwnam("daemon"), grp.getgrnam("daemon")
    except KeyError:
        pytest.skip("needs the daemon user and group")
    store = tmp_path / "store"
    corpus.write(store / "a.dcm", corpus.Spec())
    with Index(store) as index:
        reconcile(index, store)
    mount = Mount(store, tmp_path / "mnt", "--uid", "daemon", "--gid", "daemon", "--mode", "0444")
    try:
        (path,) = (tmp_path / "mnt" / "by-uid").rglob("*.dcm")
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (user.pw_uid, group.gr_gid)
    finally:
        mount.stop()


def dated_corpus(store: Path) -> None:
    """Patients with several studies, several of them on one day, over a few years:
    two series of three instances each."""
    dates = {0: ("20040609", "20050101"), 1: ("20040609", "20040701"),
             2: ("20040609", "20040610"), 3: ("20050101", "20060101"),
             4: ("20070101", "20080202")}  # fmt: skip
    for patient, days in dates.items():
        for day in days:
            study = f"{corpus.UID_ROOT}7.{patient}.{day}"
            for series in (1, 2):
                for number in (1, 2, 3):
                    spec = corpus.Spec(
                        patient_name=f"PATIENT{patient}", patient_id=f"ID{patient}",
                        study_uid=study, series_uid=f"{study}.{series}",
                        sop_uid=f"{study}.{series}.{number}", study_date=day,
                        series_number=series, instance_number=number,
                    )  # fmt: skip
                    corpus.write(store / "incoming" / f"{spec.sop_uid}.dcm", spec)
    with Index(store) as index:
        reconcile(index, store)


def instances_indexed(store: Path) -> int:
    return int(str(index_rows(store, "SELECT count(*) FROM instances")[0][0]))


def test_rm_r_at_every_level_deletes_everything_below_and_exits_0(tmp_path: Path) -> None:
    store = tmp_path / "store"
    dated_corpus(store)
    mount = Mount(store, tmp_path / "mnt", "--allow-delete")
    patients, dates = mount.path / "by-patient", mount.path / "by-date"
    study_2006 = f"{corpus.UID_ROOT}7.3.20060101"
    try:
        for target in (
            patients / "PATIENT3_ID3" / "20060101_Brain" / "000001_T1_axial",  # a series
            next((mount.path / "by-modality").glob(f"*/*/20060101.DAY/{study_2006}.UID")),
            patients / "PATIENT1_ID1",  # a patient
            dates / "2004" / "06" / "09",  # a day of three patients
            dates / "2004" / "06",  # a month
            dates / "2005",  # a year
            mount.path / "by-received",  # a whole view: the rest
        ):
            below = len(sh("find", str(target), "-type", "f").split())
            before = instances_indexed(store)
            result = subprocess.run(["rm", "-r", str(target)], capture_output=True, text=True)
            assert (result.returncode, result.stderr) == (0, ""), target
            assert below > 0, target
            assert not target.exists() or target.parent == mount.path, target
            assert instances_indexed(store) == before - below
            for view in VIEWS:
                assert len(sh("find", str(mount.path / view), "-type", "f").split()) == (
                    before - below
                ), view
        assert sh("ls", "-A", str(mount.path / "by-received")) == ""  # the view stays, empty
        assert len(list((store / "incoming").rglob("*.dcm"))) == 0
        assert index_rows(store, "SELECT count(*) FROM audit WHERE event = 'deleted'") == [(60,)]
    finally:
        mount.stop()


def test_rm_r_at_the_pace_of_a_large_tree_removes_each_directory_it_emptied(
    tmp_path: Path,
) -> None:
    """What rm -r does on a large tree: files first, then each directory, by a name the
    kernel has dropped meanwhile (the mount told it that directory's rows went with its
    last file), and looks up again."""
    store = tmp_path / "store"
    dated_corpus(store)
    mount = Mount(store, tmp_path / "mnt", "--allow-delete")
    year = mount.path / "by-date" / "2006"  # one study: every directory below goes with it
    try:
        walked = list(os.walk(year, topdown=False))
        for directory, _, files in walked:
            for name in files:
                os.unlink(os.path.join(directory, name))
        # The mount tells the kernel the emptied directories are gone: by-date no longer
        # lists the year, and the names below it must be looked up again.
        wait_until(lambda: "2006" not in os.listdir(mount.path / "by-date"))
        for directory, _, _ in walked:  # deepest first, year last
            os.rmdir(directory)
            assert not os.path.exists(directory)  # removed, it is not found any more
        assert "2006" not in os.listdir(mount.path / "by-date")
        assert instances_indexed(store) == 54
    finally:
        mount.stop()


def dicomfs(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomfs", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    return line


def test_a_mountpoint_named_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    store = tmp_path / "store"
    corpus.write(store / "a.dcm", corpus.Spec())
    with Index(store) as index:
        reconcile(index, store)
    typo = tmp_path / "typo" / "mnt"
    with unmounted_after(typo):
        line = one_line_error(dicomfs("mount", "--store", str(store), str(typo)))
        assert line == f"Error: mount point {typo} does not exist: check the path, or make " \
                       f"it first (mkdir -p {typo})"  # fmt: skip
        served = dicomfs("serve", "--store", str(store), "--mount", str(typo),
                         "--bind", "127.0.0.1", "--port", str(free_port()))  # fmt: skip
        assert one_line_error(served) == line
        assert not typo.parent.exists()


@contextlib.contextmanager
def unmounted_after(mountpoint: Path) -> Iterator[None]:
    """Whatever the test did, nothing stays mounted there (a mount ends its process)."""
    try:
        yield
    finally:
        if os.path.ismount(mountpoint) or _stale(mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def test_mounting_over_a_directory_that_holds_files_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    corpus.write(store / "a.dcm", corpus.Spec())
    with Index(store) as index:
        reconcile(index, store)
    busy = tmp_path / "papers"
    busy.mkdir()
    (busy / "thesis.tex").write_text("mine")
    (busy / "figures").mkdir()
    expected = (f"Error: {busy} is not empty: mounting there would hide its 2 entries; "
                "choose an empty directory")  # fmt: skip
    with unmounted_after(busy):
        assert one_line_error(dicomfs("mount", "--store", str(store), str(busy))) == expected
        background = dicomfs("mount", "--background", "--store", str(store), str(busy),
                             env={"XDG_STATE_HOME": str(tmp_path / "state")})  # fmt: skip
        assert one_line_error(background) == expected
        served = dicomfs("serve", "--store", str(store), "--mount", str(busy),
                         "--bind", "127.0.0.1", "--port", str(free_port()))  # fmt: skip
        assert one_line_error(served) == expected
        assert not os.path.ismount(busy)
        assert (busy / "thesis.tex").read_text() == "mine"


def test_the_default_mountpoint_is_made_on_first_use(tmp_path: Path) -> None:
    store = tmp_path / "store"
    corpus.write(store / "a.dcm", corpus.Spec())
    with Index(store) as index:
        reconcile(index, store)
    home = {"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state")}
    for env, made in (
        ({**home, "DICOMFS_MOUNT": ""}, tmp_path / "home" / "dicom"),
        ({**home, "DICOMFS_MOUNT": str(tmp_path / "env" / "mnt")}, tmp_path / "env" / "mnt"),
    ):
        with unmounted_after(made):
            result = dicomfs("mount", "--background", "--store", str(store), env=env)
            assert result.returncode == 0, result.stderr
            assert "by-uid" in sh("ls", str(made))
