"""Query/retrieve benchmark: the same corpus in `dicomfs serve` and in Orthanc, asked by
dcmtk's findscu (study-level queries) and getscu (a series of 300 MR instances)."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bench_corpus
import pydicom
from bench_ingest import STORESCU, environment, free_port, wait_for_port
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dsutils import encode

from dicomfs.net import queries
from dicomfs.store.index import Index

FINDSCU, GETSCU = "/usr/bin/findscu", "/usr/bin/getscu"
ROUNDS = 5
REPEAT = 20  # queries per findscu run, on one association
SERIES_PATIENT = 0  # its one series holds the 300 instances C-GET fetches
OTHERS = range(1, 1001)  # a thousand more studies for C-FIND to look through
QUERIES = {
    "every study (1,001 matches)": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID",
                                    "PatientName", "PatientID", "StudyDate",
                                    "ModalitiesInStudy", "NumberOfStudyRelatedInstances"],
    "one patient's studies by PatientID": ["QueryRetrieveLevel=STUDY", "PatientID=ID00500",
                                           "StudyInstanceUID", "StudyDate",
                                           "NumberOfStudyRelatedInstances"],
    "studies by PatientName pattern": ["QueryRetrieveLevel=STUDY", "PatientName=PATIENT0050*",
                                       "StudyInstanceUID"],
}  # fmt: skip


def bench_qr(work: Path, large: Path | None = None) -> None:
    """large: an indexed store of the main corpus, for C-FIND at its size."""
    if large is not None:
        bench_large_find(large)
    if not Path(GETSCU).exists() or shutil.which("Orthanc") is None:
        print("query/retrieve: skipped (needs dcmtk and orthanc: scripts/install --test)")
        return
    corpus, complete = work / "qr-corpus", work / "qr-corpus.complete"
    if not complete.exists():
        shutil.rmtree(corpus, ignore_errors=True)
        bench_corpus.write_patients(corpus, range(SERIES_PATIENT, SERIES_PATIENT + 1), series=1,
                                    instances=300, matrix=256)  # fmt: skip
        bench_corpus.write_patients(corpus, OTHERS, series=1, instances=1)
        complete.touch()
    runs = work / "qr-runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        dicomfs_port = start_dicomfs(runs, corpus, processes)
        orthanc_port = start_orthanc(runs, corpus, processes)
        peers = {"dicomfs": (dicomfs_port, "DICOMFS"), "orthanc": (orthanc_port, "ORTHANC")}
        series_uid = series_of(corpus)
        print("query/retrieve with dcmtk, loopback; the same corpus in each; "
              "ratios are the median of the rounds' (Orthanc's time / dicomfs's):")  # fmt: skip
        for label, keys in QUERIES.items():
            seconds = paired(peers, lambda port, aet, k=keys: find(port, aet, k))  # type: ignore[misc]
            report(f"C-FIND, {label}", seconds, REPEAT, "ms a query", 1000 / REPEAT)
        out = Path("/dev/shm") if Path("/dev/shm").is_dir() else runs
        seconds = paired(peers, lambda port, aet: get(port, aet, series_uid, out))
        report("C-GET of a series of 300 MR instances of 128 KB", seconds, 300, "instances/s")
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(runs, ignore_errors=True)


def bench_large_find(store: Path) -> None:
    """C-FIND's own part (the index's query and the matches' encoding, no network) on
    the large corpus: a patient-level or study-level query answers in under 0.3 s."""
    identifiers = {
        "every study, with counts": ("STUDY", dict.fromkeys(STUDY_KEYS, "")),
        "studies of one PatientID": ("STUDY", {**dict.fromkeys(STUDY_KEYS, ""),
                                               "PatientID": "ID00500"}),
        "studies by PatientName pattern": ("STUDY", {**dict.fromkeys(STUDY_KEYS, ""),
                                                     "PatientName": "patient0050*"}),
        "studies of three months": ("STUDY", {**dict.fromkeys(STUDY_KEYS, ""),
                                              "StudyDate": "20040101-20040331"}),
        "every patient, with counts": ("PATIENT", dict.fromkeys(PATIENT_KEYS, "")),
    }  # fmt: skip
    with Index(store, readonly=True) as index:
        (count,) = index.conn.execute("SELECT count(*) FROM instances").fetchone()
        print(f"  C-FIND at {count:,} instances, the index's part (no network), the slowest "
              "of three (goal < 0.3 s):")  # fmt: skip
        for label, (level, keys) in identifiers.items():
            asked = Dataset()
            asked.QueryRetrieveLevel = level
            for keyword, value in keys.items():
                setattr(asked, keyword, value)
            identifier = encode(asked, False, True)
            times, found = [], 0
            for _ in range(3):
                start = time.perf_counter()
                found = sum(
                    1
                    for _ in queries.matches(
                        index.conn, identifier, ExplicitVRLittleEndian, "DICOMFS"
                    )
                )
                times.append(time.perf_counter() - start)
            print(f"    {label}: {found:,} matches in {max(times) * 1000:.0f} ms")


STUDY_KEYS = ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "StudyDescription",
              "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
              "NumberOfStudyRelatedInstances")  # fmt: skip
PATIENT_KEYS = ("PatientID", "PatientName", "NumberOfPatientRelatedStudies",
                "NumberOfPatientRelatedInstances")  # fmt: skip


def start_dicomfs(runs: Path, corpus: Path, processes: list[subprocess.Popen[bytes]]) -> int:
    store = runs / "store"
    shutil.copytree(corpus, store, copy_function=shutil.copy)
    subprocess.run([sys.executable, "-m", "dicomfs", "index", "--store", str(store)],
                   check=True, capture_output=True)  # fmt: skip
    port = free_port()
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "dicomfs", "serve", "--store", str(store), "--no-mount",
         "--bind", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=(runs / "dicomfs.log").open("w"),
    ))  # fmt: skip
    wait_for_port(port, processes[-1])
    return port


def start_orthanc(runs: Path, corpus: Path, processes: list[subprocess.Popen[bytes]]) -> int:
    port, storage = free_port(), runs / "orthanc"
    storage.mkdir()
    config = {
        "Name": "bench", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": free_port(),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False, "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True, "Plugins": [],
    }  # fmt: skip
    (runs / "orthanc.json").write_text(json.dumps(config))
    processes.append(subprocess.Popen(
        ["Orthanc", str(runs / "orthanc.json")], env=environment(True),
        stdout=subprocess.DEVNULL, stderr=(runs / "orthanc.log").open("w"),
    ))  # fmt: skip
    wait_for_port(port, processes[-1])
    subprocess.run([STORESCU, "-aec", "ORTHANC", "+sd", "+r", "127.0.0.1", str(port),
                    str(corpus)], env=environment(True), check=True)  # fmt: skip
    return port


def series_of(corpus: Path) -> str:
    """The UID of the big series (one file's, read back)."""
    first = next((corpus / f"p{SERIES_PATIENT:05d}").glob("*.dcm"))
    return str(pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID)


def find(port: int, aet: str, keys: list[str]) -> float:
    args = [FINDSCU, "-S", "-aec", aet, "--repeat", str(REPEAT), "127.0.0.1", str(port)]
    for key in keys:
        args += ["-k", key]
    return timed(args)


def get(port: int, aet: str, series_uid: str, out: Path) -> float:
    target = out / f"dicomfs-bench-get-{port}"
    target.mkdir(exist_ok=True)
    try:
        return timed([GETSCU, "-S", "-aec", aet, "-od", str(target),
                      "-k", "QueryRetrieveLevel=SERIES", "-k", f"SeriesInstanceUID={series_uid}",
                      "127.0.0.1", str(port)], expect=300, out=target)  # fmt: skip
    finally:
        shutil.rmtree(target, ignore_errors=True)


def timed(args: list[str], expect: int = 0, out: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=environment(True), check=True, capture_output=True)
    seconds = time.perf_counter() - start
    if out is not None and len(list(out.iterdir())) != expect:
        raise RuntimeError(f"{args[0]} got {len(list(out.iterdir()))} files, not {expect}")
    return seconds


def paired(
    peers: dict[str, tuple[int, str]], work: Callable[[int, str], float]
) -> dict[str, list[float]]:
    """The work against each peer, ROUNDS times, back to back and in turn first: this
    kind of host's speed drifts within minutes. One run first warms both."""
    seconds: dict[str, list[float]] = {name: [] for name in peers}
    for port, aet in peers.values():
        work(port, aet)
    for round_number in range(ROUNDS):
        order = list(peers) if round_number % 2 == 0 else list(peers)[::-1]
        for name in order:
            seconds[name].append(work(*peers[name]))
    return seconds


def report(
    label: str, seconds: dict[str, list[float]], count: int, unit: str, scale: float = 0.0
) -> None:
    ratios = sorted(o / d for o, d in zip(seconds["orthanc"], seconds["dicomfs"], strict=True))

    def figure(name: str) -> str:
        median = statistics.median(seconds[name])
        value = median * scale if scale else count / median
        return f"{name} {value:.1f} {unit}"

    print(f"  {label}: {figure('dicomfs')}, {figure('orthanc')}; dicomfs / orthanc "
          f"{statistics.median(ratios):.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f}; "
          f"goal >= 1.0)")  # fmt: skip
