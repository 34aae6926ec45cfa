"""Ingest benchmark: the same corpus sent with dcmtk's storescu to dicomfs, Orthanc and
dcmtk's storescp, each on a loopback port chosen at run time."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bench_corpus

from dicomfs.dicom import corpus

STORESCU = "/usr/bin/storescu"  # not pynetdicom's tool of the same name in the venv


BARE_PYNETDICOM = """
import sys
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
ae = AE("BARE")
ae.maximum_pdu_size = 1 << 20
for context in AllStoragePresentationContexts:
    ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
def fast_polling(event):
    event.assoc.dul._run_loop_delay = 0.0001
handlers = [(evt.EVT_C_STORE, lambda event: 0x0000), (evt.EVT_CONN_OPEN, fast_polling)]
ae.start_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=handlers)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} ended with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def environment(nodelay: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if nodelay:
        env["TCP_NODELAY"] = "1"  # dcmtk (and Orthanc, built on it) read this
    return env


@contextmanager
def receiver(kind: str, root: Path, nodelay: bool) -> Iterator[tuple[int, str, int]]:
    """Start one receiver on a fresh directory; yield (port, called AE title, pid)."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=root))  # runs are kept: a new one
    if kind == "dicomfs":
        args = [sys.executable, "-m", "dicomfs", "serve", "--store", str(target), "--no-mount",
                "--bind", "127.0.0.1", "--port", str(port)]  # fmt: skip
        aet = "DICOMFS"
    elif kind == "orthanc":
        config = {
            "Name": "bench", "StorageDirectory": str(target), "IndexDirectory": str(target),
            "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": free_port(),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False, "Plugins": [],
        }  # fmt: skip
        target.with_suffix(".json").write_text(json.dumps(config))
        args, aet = ["Orthanc", str(target.with_suffix(".json"))], "ORTHANC"
    elif kind == "pynetdicom":  # the library's own ceiling: Success, nothing stored
        args, aet = [sys.executable, "-c", BARE_PYNETDICOM, str(port)], "BARE"
    else:
        args, aet = ["/usr/bin/storescp", "-od", str(target), str(port)], "STORESCP"
    log = target.with_suffix(".log")  # beside the run
    process = subprocess.Popen(
        args, env=environment(nodelay), stdout=subprocess.DEVNULL, stderr=log.open("w")
    )
    try:
        wait_for_port(port, process)
        yield port, aet, process.pid
    except RuntimeError as exc:
        raise RuntimeError(f"{exc} (sending to {kind}; its log: {log})") from exc
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], patience: float = 30) -> None:
    """SIGTERM, and SIGKILL if it has not ended within patience seconds."""
    process.terminate()
    try:
        process.wait(timeout=patience)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def send(associations: list[list[Path]], port: int, aet: str, nodelay: bool) -> float:
    """Seconds until storescu has sent every file below the folders, one association
    for each list of folders, all at once."""
    start = time.perf_counter()
    senders = [
        subprocess.Popen(
            [STORESCU, "-aec", aet, "+sd", "+r", "127.0.0.1", str(port), *map(str, folders)],
            env=environment(nodelay),
            stdout=subprocess.DEVNULL,
        )
        for folders in associations
    ]
    for sender in senders:
        if sender.wait() != 0:
            raise RuntimeError(f"storescu ended with status {sender.returncode}")
    return time.perf_counter() - start


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (serve's receiver processes)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += process_tree(int(child))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time of the process and its descendants alive now."""
    total = 0
    for member in process_tree(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def proportional_mb(pid: int) -> float:
    """The memory a process takes, its pages shared with others counted in shares
    (Pss of /proc/PID/smaps_rollup), in MB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def status_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/PID/status in MB: VmRSS (now), VmHWM (the peak)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 1024


@dataclasses.dataclass(frozen=True)
class Workload:
    label: str
    associations: list[list[Path]]  # the folders each one sends; all at once
    nodelay: bool = True
    goal: str = ">= 1.2x Orthanc"
    rounds: int = 5

    @property
    def count(self) -> int:
        folders = [folder for association in self.associations for folder in association]
        return sum(1 for folder in folders for _ in folder.rglob("*.dcm"))


def write_corpora(root: Path) -> list[Workload]:
    """Realistic instances (MR 256x256 and CT 512x512, 16 bit), written fast from one
    template each; and the small instances of the earlier benchmark."""
    if not (root / ".complete-v2").exists():
        shutil.rmtree(root, ignore_errors=True)
        # 8 patients of 125 MR slices: 4 associations send 2 patients each.
        bench_corpus.write_patients(root / "mr", range(8), series=1, instances=125, matrix=256)
        bench_corpus.write_patients(
            root / "ct", range(100, 103), series=1, instances=100, matrix=512, modality="CT"
        )
        corpus.write_regular(root / "small", patients=2, studies=2, series=5, instances=100)
        # Without TCP_NODELAY the others manage ~20 instances/s: a tenth of the corpus.
        for path in sorted((root / "small").rglob("*.dcm"))[:200]:
            target = root / "plain" / path.relative_to(root / "small")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
        (root / ".complete-v2").touch()
    mr = sorted((root / "mr").iterdir())
    return [
        Workload("1 association, 1,000 MR instances of 128 KB", [[root / "mr"]]),
        Workload("1 association, 300 CT instances of 512 KB", [[root / "ct"]]),
        Workload(
            "4 associations at once, 1,000 MR instances of 128 KB",
            [mr[2 * n : 2 * n + 2] for n in range(4)],
        ),
        Workload(
            "1 association, 2,000 small instances", [[root / "small"]], goal="report", rounds=2
        ),
        Workload(
            "plain storescu (Nagle on), 200 small instances",
            [[root / "plain"]],
            nodelay=False,
            goal=">= 10x Orthanc",
            rounds=2,
        ),
    ]


# Orthanc and dicomfs run back to back, in turn first, so that they see the same machine:
# this host's speed drifts by a third within minutes.
KINDS = ("storescp", "pynetdicom", "orthanc", "dicomfs")


# What the runs write is kept until every workload is done: removing a receiver's files
# between runs put the cost of the removal on whichever receiver came next (ext4
# skips the inodes freed in the last seconds, and the freeing itself is still being
# written), and that cost depended on how each receiver lays out its files.
SPACE_NEEDED = 12 << 30  # bytes: every run of every workload, kept until the end


def bench_ingest(work: Path) -> None:
    if not Path(STORESCU).exists() or shutil.which("Orthanc") is None:
        print("ingest: skipped (needs dcmtk and orthanc: scripts/install --test)")
        return
    workloads = write_corpora(work / "ingest-corpus")
    runs = work / "ingest-runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    if shutil.disk_usage(runs).free < SPACE_NEEDED:
        print(f"ingest: skipped (needs {SPACE_NEEDED >> 30} GB free beside {work})")
        return
    try:
        _bench_workloads(workloads, runs)
        bench_large(work, runs)
    finally:
        shutil.rmtree(runs, ignore_errors=True)


def _bench_workloads(workloads: list[Workload], runs: Path) -> None:
    print("ingest with dcmtk storescu, loopback; rates and ratios are the median of the rounds:")
    for workload in workloads:
        rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
        cpu: list[float] = []
        for round_number in range(workload.rounds):
            for kind in KINDS if round_number % 2 == 0 else KINDS[::-1]:
                with receiver(kind, runs, workload.nodelay) as (port, aet, pid):
                    before = cpu_seconds(pid)
                    seconds = send(workload.associations, port, aet, workload.nodelay)
                    rates[kind].append(workload.count / seconds)
                    if kind == "dicomfs":
                        cpu.append((cpu_seconds(pid) - before) / workload.count)
        print(f"  {workload.label}, {workload.rounds} rounds:")
        for kind in KINDS:
            note = {"pynetdicom": " (receives, stores nothing)",
                    "storescp": " (no fsync: the ceiling)"}.get(kind, "")  # fmt: skip
            print(f"    {kind:10} {statistics.median(rates[kind]):8.0f} instances/s{note}")
        against = {
            other: sorted(d / o for d, o in zip(rates["dicomfs"], rates[other], strict=True))
            for other in ("orthanc", "storescp")
        }
        print(
            f"    dicomfs / orthanc {statistics.median(against['orthanc']):5.2f} "
            f"(rounds {against['orthanc'][0]:.2f}-{against['orthanc'][-1]:.2f})   "
            f"dicomfs / storescp {statistics.median(against['storescp']):5.2f}   "
            f"dicomfs CPU {statistics.median(cpu) * 1000:.1f} ms an instance   "
            f"(goal {workload.goal})"
        )


def bench_large(work: Path, runs: Path) -> None:
    """Four associations at once, each sending one 128 MB instance: serve's peak RSS."""
    folder = work / "ingest-large"
    if not (folder / ".complete").exists():
        for n in range(4):
            spec = corpus.Spec(sop_uid=f"{corpus.UID_ROOT}99.{n}", matrix=8192)  # 128 MB
            corpus.write(folder / str(n) / "large.dcm", spec)
        (folder / ".complete").touch()
    with receiver("dicomfs", runs, True) as (port, aet, pid):
        members = process_tree(pid)
        peak = 0.0  # of serve and its receiver processes together
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            sending = pool.submit(send, [[folder / str(n)] for n in range(4)], port, aet, True)
            while not sending.done():
                peak = max(peak, sum(map(proportional_mb, members)))
                time.sleep(0.02)
            sending.result()
        rss = sum(status_mb(member, "VmHWM") for member in members)
    print(f"  4 associations of one 128 MB instance each, serve and its {len(members) - 1} "
          f"receiver processes: peak {peak:.0f} MB together (proportional set size), "
          f"the sum of their peak RSS {rss:.0f} MB (goal < 200 MB)")  # fmt: skip
