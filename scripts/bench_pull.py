"""Pull benchmark: how long after an instance reaches the scanner (Orthanc here) it
shows in the mount, with `dicomfs pull --follow --interval 1` and `dicomfs serve`."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_ingest import STORESCU, environment, free_port, wait_for_port

from dicomfs.dicom import corpus
from dicomfs.mount.run import is_ready

INSTANCES = 20
PACE = 0.7  # seconds between instances, as a scanner reconstructs them


def bench_pull(work: Path) -> None:
    if not Path(STORESCU).exists() or shutil.which("Orthanc") is None:
        print("pull: skipped (needs dcmtk and orthanc: scripts/install --test)")
        return
    root = work / "pull-run"
    shutil.rmtree(root, ignore_errors=True)
    exam = root / "exam"
    corpus.write_regular(exam, patients=1, studies=1, series=1, instances=INSTANCES + 1, seed=9)
    files = sorted(exam.rglob("*.dcm"))
    receiver_port, pacs_port = free_port(), free_port()
    config = {
        "Name": "scanner", "StorageDirectory": str(root / "orthanc"),
        "IndexDirectory": str(root / "orthanc"), "DicomAet": "ORTHANC", "DicomPort": pacs_port,
        "HttpPort": free_port(), "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomModalities": {"dicomfs": ["DICOMFS", "127.0.0.1", receiver_port]}, "Plugins": [],
    }  # fmt: skip
    (root / "orthanc").mkdir(parents=True)
    (root / "orthanc.json").write_text(json.dumps(config))
    mnt = root / "mnt"
    mnt.mkdir()
    processes = []
    try:
        processes.append(start(["Orthanc", str(root / "orthanc.json")]))
        wait_for_port(pacs_port, processes[-1])
        dicomfs = [sys.executable, "-m", "dicomfs"]
        serve = ["serve", "--create", "--store", str(root / "store"), "--mount", str(mnt)]
        processes.append(start([*dicomfs, *serve, "--bind", "127.0.0.1", "--port",
                                str(receiver_port)]))  # fmt: skip
        wait_for_port(receiver_port, processes[-1])
        while not is_ready(mnt):
            time.sleep(0.05)
        send(files[0], pacs_port)  # the exam has begun
        study = "1.2.826.0.1.3680043.8.498.9.0.0"
        processes.append(start([*dicomfs, "pull", "--store", str(root / "store"), "--from",
                                f"ORTHANC@127.0.0.1:{pacs_port}", "--study", study, "--follow",
                                "--interval", "1", "--port", str(receiver_port)]))  # fmt: skip
        latencies = []
        for path in files[1:]:
            time.sleep(PACE)
            send(path, pacs_port)
            reached_peer = time.monotonic()
            sop = path.name.removeprefix("MR.").removesuffix(".dcm")
            target = mnt / "by-uid" / study / sop.rsplit(".", 1)[0] / f"{sop}.dcm"
            while not os.path.exists(target):
                if time.monotonic() - reached_peer > 30:
                    raise RuntimeError(f"{sop} never showed in the mount")
                time.sleep(0.01)
            latencies.append(time.monotonic() - reached_peer)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    latencies.sort()
    print(f"pull --follow --interval 1, {len(latencies)} instances sent one by one to Orthanc:")
    print(f"  from reaching the peer to showing in the mount: median "
          f"{statistics.median(latencies):.2f} s, slowest {latencies[-1]:.2f} s")  # fmt: skip


def start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=environment(True), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def send(path: Path, port: int) -> None:
    subprocess.run([STORESCU, "-aec", "ORTHANC", "127.0.0.1", str(port), str(path)],
                   env=environment(True), check=True, stdout=subprocess.DEVNULL)  # fmt: skip
