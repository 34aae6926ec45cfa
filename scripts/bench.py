"""dicomfs benchmarks: ratios against the same work done another way, in one run."""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pydicom

from dicomfs.dicom import corpus
from dicomfs.mount.run import is_ready
from dicomfs.mount.views import VIEWS
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile

sys.path.insert(0, str(Path(__file__).parent))
from bench_ingest import bench_ingest
from bench_pull import bench_pull


def generate(root: Path, instances: int) -> list[Path]:
    """A tidy corpus of `instances` small files: 100 per series, 3 series per study."""
    per_series, series, studies = 100, 3, 1
    patients = max(1, instances // (per_series * series * studies))
    marker = root / f".complete-v2-{patients}"
    if not marker.exists():
        jobs = [(root, p) for p in range(patients)]
        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(mp_context=context) as pool:
            list(pool.map(_write_patient, jobs, chunksize=8))
        marker.touch()
    return sorted(root.glob("p*/*.dcm"))


def _write_patient(job: tuple[Path, int]) -> None:
    root, patient = job
    for spec in corpus.regular_specs(1, 1, 3, 100, seed=patient + 1000):
        own = dataclasses.replace(  # one patient each, as in a real store
            spec, patient_name=f"PATIENT{patient:05d}^TEST", patient_id=f"ID{patient:05d}"
        )
        corpus.write(root / f"p{patient:05d}" / f"{spec.sop_uid}.dcm", own)


def realistic_study(root: Path) -> Path:
    """One MR study of true size: 3 series of 100 slices of 256x256 (128 KB each)."""
    folder = root / "mr-study"
    if not folder.exists():
        for spec in corpus.regular_specs(1, 1, 3, 100, seed=999, matrix=256):
            corpus.write(folder / f"{spec.sop_uid}.dcm", spec)
    return folder


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


def bench_index(store: Path, files: list[Path]) -> None:
    shutil.rmtree(store / ".dicomfs", ignore_errors=True)
    plain_pydicom_loop(files[:2000])  # warm the page cache and the imports
    base_s, _ = timed(plain_pydicom_loop, files)
    with Index(store) as index:
        ours_s, report = timed(reconcile, index, store)
        assert report.indexed == len(files), report.as_dict()
        again_s, again = timed(reconcile, index, store)
        assert again.unchanged == len(files)
    n = len(files)
    print(f"index build, {n} files, {os.cpu_count()} cores:")
    print(f"  plain pydicom loop     {n / base_s:9.0f} files/s  ({base_s:.1f} s)")
    print(f"  dicomfs index          {n / ours_s:9.0f} files/s  ({ours_s:.1f} s)")
    print(f"  ratio                  {base_s / ours_s:9.2f}x   (goal >= 1.5x)")
    print(f"  no-change reconcile    {again_s:9.2f} s     (goal < 5 s)")


def shell_time(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_mount(store: Path, work: Path) -> None:
    """Reads and listings through the mount against the same work on the plain disk."""
    work.mkdir(parents=True, exist_ok=True)
    mnt = work.parent / (work.name + "-mnt")
    mnt.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomfs", "mount", "--store", str(store), str(mnt)]
    )
    try:
        while not is_ready(mnt):
            time.sleep(0.05)
        first_ls = {view: shell_time("ls", str(mnt / view)) for view in VIEWS}
        study_dir = store / "mr-study"
        study_uid = pydicom.dcmread(next(study_dir.iterdir()), stop_before_pixels=True)
        through = mnt / "by-uid" / study_uid.StudyInstanceUID
        for source in (study_dir, through):  # warm both page caches
            shell_time("cp", "-r", str(source), str(work / "warm"))
            shutil.rmtree(work / "warm")
        disk_cp = shell_time("cp", "-r", str(study_dir), str(work / "c1"))
        mount_cp = shell_time("cp", "-r", str(through), str(work / "c2"))
        shutil.rmtree(work / "c1")
        shutil.rmtree(work / "c2")
        disk_find = shell_time("find", str(store), "-type", "f")
        mount_find = shell_time("find", str(mnt / "by-patient"), "-type", "f")
        rss = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmRSS:")[1].split()[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    print("mount:")
    print(
        f"  cp -r of a 300-slice MR study (39 MB)  disk/mount time ratio {disk_cp / mount_cp:5.2f}"
        f"  (goal >= 0.5; disk {disk_cp:.3f} s, mount {mount_cp:.3f} s)"
    )
    print(
        f"  find -type f            mount/disk time ratio  {mount_find / disk_find:6.2f}  "
        f"(goal <= 3; disk {disk_find:.3f} s, mount {mount_find:.3f} s)"
    )
    slowest = max(first_ls, key=lambda view: first_ls[view])
    print(
        f"  first ls of each view   {first_ls[slowest]:6.3f} s at most ({slowest})  (goal < 0.2 s)"
    )
    print(f"  daemon RSS              {rss / 1024:6.0f} MB  (goal < 200 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="corpus directory to reuse between runs")
    parser.add_argument(
        "--only",
        choices=["index", "mount", "ingest", "pull"],
        action="append",
        help="run only these",
    )
    args = parser.parse_args()
    only = set(args.only or ["index", "mount", "ingest", "pull"])
    work = args.keep or Path(tempfile.mkdtemp(prefix="dicomfs-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if only & {"index", "mount"}:
            t, files = timed(generate, work / "store", args.instances)
            realistic_study(work / "store")
            files = sorted((work / "store").rglob("*.dcm"))
            print(f"corpus: {len(files)} instances in {work / 'store'} (made in {t:.0f} s)")
            if "index" in only or not (work / "store" / ".dicomfs").exists():
                bench_index(work / "store", files)
            if "mount" in only:
                bench_mount(work / "store", work / "copies")
        if "ingest" in only:
            bench_ingest(work)
        if "pull" in only:
            bench_pull(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
