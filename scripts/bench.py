"""dicomfs benchmarks: ratios against the same work done another way, in one run."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom

from dicomfs.mount.run import is_ready
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile
from dicomfs.store.views import VIEW_NAMES

sys.path.insert(0, str(Path(__file__).parent))
import bench_corpus
from bench_ingest import bench_ingest, status_mb
from bench_page import bench_page
from bench_pull import bench_pull
from bench_qr import bench_qr
from bench_several import bench_several

PER_PATIENT = 300  # one study of 3 series of 100 instances, as the 1 M corpus
REALISTIC = range(99_999, 100_000)  # a patient number the corpus never reaches


def generate(store: Path, instances: int) -> None:
    """A tidy corpus of small instances (patients x 3 series x 100), written fast from one
    template, plus one realistic MR study: 5 series of 300 slices of 256x256 (128 KB)."""
    patients = max(1, instances // PER_PATIENT)
    marker = store / f".complete-v3-{patients}"
    if marker.exists():
        return
    started = time.perf_counter()

    def progress(done: int) -> None:
        print(f"\r  writing the corpus: {done} instances", end="", file=sys.stderr, flush=True)

    bench_corpus.write_patients(store, range(patients), progress=progress)
    bench_corpus.write_patients(store, REALISTIC, series=5, instances=300, matrix=256)
    marker.touch()
    print(f"\r  corpus written in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def timed(func, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = func(*args)
    return time.perf_counter() - start, result


def plain_pydicom_loop(files: list[Path]) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            pydicom.dcmread(path, stop_before_pixels=True)
    return len(files)


def bench_index(store: Path) -> None:
    shutil.rmtree(store / ".dicomfs", ignore_errors=True)
    files = sorted(store.glob("p*/*.dcm"))
    n = len(files)
    baseline = n <= 200_000  # the plain loop would take longer than everything else at 1 M
    if baseline:
        plain_pydicom_loop(files[:2000])  # warm the page cache and the imports
        base_s, _ = timed(plain_pydicom_loop, files)
    with Index(store) as index:
        ours_s, report = timed(reconcile, index, store)
        assert report.indexed == n, report.as_dict()
        again_s, again = timed(reconcile, index, store)
        assert again.unchanged == n
    print(f"index build, {n} files, {os.cpu_count()} cores:")
    if baseline:
        print(f"  plain pydicom loop     {n / base_s:9.0f} files/s  ({base_s:.1f} s)")
    print(f"  dicomfs index          {n / ours_s:9.0f} files/s  ({ours_s:.1f} s; goal >= 4,000)")
    if baseline:
        print(f"  ratio                  {base_s / ours_s:9.2f}x   (goal >= 1.5x)")
    print(f"  no-change reconcile    {again_s:9.2f} s     (goal < 10 s at 1 M)")


def shell_time(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


@contextlib.contextmanager
def mounted(command: list[str], mnt: Path) -> Iterator[subprocess.Popen[bytes]]:
    mnt.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([*command, str(mnt)])
    try:
        while not is_ready(mnt):
            if proc.poll() is not None:
                raise RuntimeError(f"{command[0]} ended with status {proc.returncode}")
            time.sleep(0.05)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        subprocess.run(["fusermount3", "-u", "-q", str(mnt)], check=False)


def copy_target() -> Path:
    """Where the copies go: memory (/dev/shm) where there is one, so that the figure is
    the reading, not the disk's writeback of what earlier copies wrote."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="dicomfs-bench-", dir=shm if shm.is_dir() else None))


def copy_time(source: Path, work: Path) -> float:
    """The best of three `cp -r` of source into work, page caches warm."""
    best = float("inf")
    for attempt in range(4):
        target = work / f"copy{attempt}"
        seconds = shell_time("cp", "-r", str(source), str(target))
        shutil.rmtree(target)
        if attempt:  # the first warms the caches
            best = min(best, seconds)
    return best


def paired_copies(disk: Path, mount: Path, work: Path, rounds: int = 7) -> list[float]:
    """disk time / mount time of `cp -r`, one pair a round, after one copy of each to
    warm the caches: this kind of host's speed drifts within minutes, so each ratio
    compares copies made a moment apart."""

    def copy(source: Path) -> float:
        target = work / "copy"
        seconds = shell_time("cp", "-r", str(source), str(target))
        shutil.rmtree(target)
        return seconds

    copy(disk), copy(mount)
    return [copy(disk) / copy(mount) for _ in range(rounds)]


def first_listings(mnt: Path) -> dict[str, float]:
    """The first `ls` of each directory on one path down every view, by path."""
    times = {}
    for view in VIEW_NAMES:
        directory = mnt / view
        while True:
            times[str(directory.relative_to(mnt))] = shell_time("ls", str(directory))
            children = sorted(entry for entry in directory.iterdir() if entry.is_dir())
            if not children:
                break
            directory = children[len(children) // 2]
    return times


def bench_mount(store: Path, work: Path) -> None:
    """Reads and listings through the mount against the same work on the plain disk and
    through a bare pyfuse3 mirror of the store."""
    work.mkdir(parents=True, exist_ok=True)
    study = store / f"p{REALISTIC[0]:05d}"
    head = pydicom.dcmread(next(study.iterdir()), stop_before_pixels=True)
    dicomfs = [sys.executable, "-m", "dicomfs", "mount", "--store", str(store)]
    mirror = [sys.executable, str(Path(__file__).parent / "passthrough.py"), str(store)]
    copies = copy_target()
    disk_cp = copy_time(study, copies)
    disk_find = min(shell_time("find", str(store), "-type", "f") for _ in range(3))
    with mounted(mirror, work / "mirror") as _:
        mirror_cp = copy_time(work / "mirror" / study.name, copies)
        mirror_find = shell_time("find", str(work / "mirror"), "-type", "f")
    mnt = work / "mnt"
    with mounted(dicomfs, mnt) as proc:
        listings = first_listings(mnt)
        station = mnt / "by-modality" / "MR0000.MOD" / f"{head.StationName}.STA"
        through = station / f"{head.StudyDate}.DAY" / f"{head.StudyInstanceUID}.UID"
        ratios = sorted(paired_copies(study, through, copies))
        mount_find = shell_time("find", str(mnt / "by-patient"), "-type", "f")
        repeat_find = shell_time("find", str(mnt / "by-patient"), "-type", "f")
        rss = status_mb(proc.pid, "VmRSS")
    shutil.rmtree(copies)
    n = sum(1 for _ in store.glob("p*/*.dcm"))
    print(f"mount, {n} instances (the disk's page cache warm):")
    print(
        f"  cp -r of 1,500 MR instances (196 MB) via by-modality, disk/mount time"
        f"  {statistics.median(ratios):5.2f}  (goal >= 0.7; {len(ratios)} pairs, "
        f"{ratios[0]:.2f}-{ratios[-1]:.2f}; disk {disk_cp:.3f} s)"
    )
    print(
        f"  the same through a bare pyfuse3 mirror             {disk_cp / mirror_cp:5.2f}"
        f"  (a stock pyfuse3 loop; {mirror_cp:.3f} s)"
    )
    print(
        f"  first find by-patient -type f, mount/disk       {mount_find / disk_find:6.1f}x"
        f"  (goal <= 12; disk {disk_find:.3f} s, mount {mount_find:.3f} s)"
    )
    print(
        f"  repeat find, mount/disk                         {repeat_find / disk_find:6.1f}x"
        f"  (goal <= 6; {repeat_find:.3f} s)"
    )
    print(
        f"  first find through the bare pyfuse3 mirror      {mirror_find / disk_find:6.1f}x"
        f"  ({mirror_find:.3f} s)"
    )
    slowest = max(listings, key=lambda path: listings[path])
    print(f"  first ls of a view directory  {listings[slowest]:6.3f} s at most ({slowest};"
          " goal < 0.1 s)")  # fmt: skip
    print(f"  daemon RSS after find         {rss:6.0f} MB  (goal < 200 MB)")


def bench_find(store: Path) -> None:
    """`dicomfs find` as users type it: a patient's ID, a name, a whole year."""
    dicomfs = [sys.executable, "-m", "dicomfs", "find", "--store", str(store)]
    patient = max(0, sum(1 for _ in store.glob("p*")) // 2 - 1)

    def best(*args: str) -> float:
        return min(shell_time(*args) for _ in range(3))

    base = best(sys.executable, "-m", "dicomfs", "--help")  # the command's start-up alone
    print("find (each time less the command's own start-up, "
          f"{base:.2f} s):")  # fmt: skip
    for term, goal in ((f"ID{patient:05d}", 0.1), (f"patient{patient:05d}", 0.1), ("2004", 2)):
        seconds = max(0.0, best(*dicomfs, term) - base)
        print(f"  dicomfs find {term:14s} {seconds:6.2f} s  (goal < {goal} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="corpus directory to reuse between runs")
    parser.add_argument(
        "--only",
        choices=["index", "mount", "find", "ingest", "pull", "qr", "page", "several"],
        action="append",
        help="run only these",
    )
    args = parser.parse_args()
    only = set(args.only or ["index", "mount", "find", "ingest", "pull", "qr", "page", "several"])
    work = args.keep or Path(tempfile.mkdtemp(prefix="dicomfs-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if only & {"index", "mount", "find"}:
            generate(work / "store", args.instances)
            if "index" in only or not (work / "store" / ".dicomfs").exists():
                bench_index(work / "store")
            if "mount" in only:
                bench_mount(work / "store", work / "mount")
            if "find" in only:
                bench_find(work / "store")
        if "ingest" in only:
            bench_ingest(work)
        if "pull" in only:
            bench_pull(work)
        if "qr" in only:
            large = work / "store"
            bench_qr(work, large if (large / ".dicomfs").exists() else None)
        if "page" in only:
            bench_page(work, mounted)
        if "several" in only:
            main_store = work / "store"
            bench_several(work, main_store if (main_store / ".dicomfs").exists() else None)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
