"""Ingest benchmark: the same corpus sent with dcmtk's storescu to dicomfs, Orthanc and
dcmtk's storescp, each on a loopback port chosen at run time."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dicomfs.dicom import corpus

STORESCU = "/usr/bin/storescu"  # not pynetdicom's tool of the same name in the venv


BARE_PYNETDICOM = """
import sys
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
ae = AE("BARE")
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
def receiver(kind: str, root: Path, nodelay: bool) -> Iterator[tuple[int, str]]:
    """Start one receiver on a fresh directory; yield (port, called AE title)."""
    port = free_port()
    target = root / f"{kind}-{port}"
    target.mkdir(parents=True)
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
        (root / f"orthanc-{port}.json").write_text(json.dumps(config))
        args, aet = ["Orthanc", str(root / f"orthanc-{port}.json")], "ORTHANC"
    elif kind == "pynetdicom":  # the library's own ceiling: Success, nothing stored
        args, aet = [sys.executable, "-c", BARE_PYNETDICOM, str(port)], "BARE"
    else:
        args, aet = ["/usr/bin/storescp", "-od", str(target), str(port)], "STORESCP"
    process = subprocess.Popen(
        args, env=environment(nodelay), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, process)
        yield port, aet
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def send(folder: Path, port: int, aet: str, nodelay: bool) -> float:
    """Seconds storescu takes to send every file of folder in one association."""
    start = time.perf_counter()
    subprocess.run(
        [STORESCU, "-aec", aet, "+sd", "+r", "127.0.0.1", str(port), str(folder)],
        env=environment(nodelay), check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - start


def bench_ingest(work: Path) -> None:
    if not Path(STORESCU).exists() or shutil.which("Orthanc") is None:
        print("ingest: skipped (needs dcmtk and orthanc: scripts/install --test)")
        return
    corpus_dir = work / "ingest-corpus"
    if not corpus_dir.exists():
        corpus.write_regular(corpus_dir / "all", patients=2, studies=2, series=5, instances=100)
        # Without TCP_NODELAY the others manage ~20 instances/s: a tenth of the corpus.
        subset = sorted((corpus_dir / "all").rglob("*.dcm"))[:200]
        for path in subset:
            target = corpus_dir / "some" / path.relative_to(corpus_dir / "all")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    runs = work / "ingest-runs"
    shutil.rmtree(runs, ignore_errors=True)
    print("ingest with dcmtk storescu, one association, loopback:")
    for nodelay, folder in ((True, corpus_dir / "all"), (False, corpus_dir / "some")):
        count = sum(1 for _ in folder.rglob("*.dcm"))
        rates = {}
        for kind in ("storescp", "orthanc", "pynetdicom", "dicomfs"):
            with receiver(kind, runs, nodelay) as (port, aet):
                rates[kind] = count / send(folder, port, aet, nodelay)
        label = "TCP_NODELAY=1 everywhere" if nodelay else "plain (Nagle on)"
        print(f"  {label}, {count} instances:")
        for kind, rate in rates.items():
            note = " (receives, stores nothing)" if kind == "pynetdicom" else ""
            print(f"    {kind:10} {rate:8.0f} instances/s{note}")
        print(
            f"    dicomfs / orthanc {rates['dicomfs'] / rates['orthanc']:5.2f}   "
            f"dicomfs / storescp {rates['dicomfs'] / rates['storescp']:5.2f}   "
            "(goal >= 1.0 against Orthanc)"
        )
    shutil.rmtree(runs, ignore_errors=True)
