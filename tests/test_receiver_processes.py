"""serve's receiver processes (net/processes.py): connections spread over them, one
count of associations for all, and a crash of any of them is a crash of serve."""

from __future__ import annotations

import collections
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from dicomfs.dicom import corpus

from .peers import Serve, dcmtk, serving
from .test_receiver import rejection, rows

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/storescu").exists(), reason="needs dcmtk (scripts/install --test)"
)
PATIENCE = 60.0  # seconds, on a loaded machine


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def connections_by_process(port: int) -> collections.Counter[int]:
    """How many established TCP connections to the port each process holds (as
    `ss -tnp` says)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(f"socket:[{fields[9]}]")
    held: collections.Counter[int] = collections.Counter()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
            except OSError:
                continue  # gone, or not ours to look at
            held[int(proc.name)] += sum(link in inodes for link in links)
    return +held


def mr_client() -> AE:
    ae = AE(ae_title="PYCLIENT")
    ae.add_requested_context(MRImageStorage)
    return ae


def test_associations_at_once_are_spread_over_the_receiver_processes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with serving(store, "--processes", "2") as server:
        receivers = children(server.process.pid)
        assert len(receivers) == 2
        ae = mr_client()
        associations = [ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
                        for _ in range(4)]  # fmt: skip
        try:
            for number, association in enumerate(associations):
                assert association.is_established
                spec = corpus.Spec(series_number=number + 1, instance_number=1)
                assert association.send_c_store(corpus.dataset(spec)).Status == 0
            assert connections_by_process(server.port) == dict.fromkeys(receivers, 2)
        finally:
            for association in associations:
                association.release()
        assert len(rows(store, "SELECT sop_uid FROM instances")) == 4
    wait_for(lambda: not any(map(alive, receivers)), "receiver processes outlived serve")


def test_the_associations_of_every_receiver_process_count_against_the_maximum(
    tmp_path: Path,
) -> None:
    with serving(tmp_path / "store", "--processes", "2", "--max-associations", "3") as server:
        ae = mr_client()
        let_in = [ae.associate("127.0.0.1", server.port, ae_title="DICOMFS") for _ in range(3)]
        try:
            assert all(association.is_established for association in let_in)
            assert rejection(ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")) == (
                0x02, 0x03, 0x02,  # transient: local limit exceeded
            )  # fmt: skip
        finally:
            let_in.pop().release()

        def another_is_let_in() -> bool:
            association = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
            if association.is_established:
                let_in.append(association)
            return association.is_established

        try:
            wait_for(another_is_let_in, "still refused once an association had ended")
        finally:
            for association in let_in:
                association.release()


def test_kill_9_of_serve_takes_its_receiver_processes_with_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    server = Serve(store, "--processes", "2")
    receivers = children(server.process.pid)
    server.kill()
    wait_for(lambda: not any(map(alive, receivers)), "receiver processes outlived serve")
    with serving(store):  # nothing of the old serve holds the store
        pass


def test_a_receiver_process_that_dies_stops_serve_with_an_error(tmp_path: Path) -> None:
    store, sent = tmp_path / "store", tmp_path / "sent"
    corpus.write_regular(sent, patients=1, studies=1, series=1, instances=3)
    server = Serve(store, "--processes", "2")
    try:
        assert dcmtk("storescu", "-aec", "DICOMFS", "+sd", "+r", "127.0.0.1", str(server.port),
                     str(sent)).returncode == 0  # fmt: skip
        receivers = children(server.process.pid)
        os.kill(receivers[0], signal.SIGKILL)
        assert server.process.wait(timeout=PATIENCE) != 0
    finally:
        server.stop()
    log = server.log.read_text()
    assert "receiver 1" in log
    assert "ended by itself" in log
    assert "a restart recovers what it left" in log
    wait_for(lambda: not any(map(alive, receivers)), "the other receiver process outlived serve")
    with serving(store):
        pass
    assert len(rows(store, "SELECT sop_uid FROM instances")) == 3


def test_one_process_receives_in_serves_own(tmp_path: Path) -> None:
    store, sent = tmp_path / "store", tmp_path / "sent"
    corpus.write_regular(sent, patients=1, studies=1, series=2, instances=3)
    with serving(store, "--processes", "1") as server:
        assert children(server.process.pid) == []
        assert dcmtk("storescu", "-aec", "DICOMFS", "+sd", "+r", "127.0.0.1", str(server.port),
                     str(sent)).returncode == 0  # fmt: skip
    assert len(rows(store, "SELECT sop_uid FROM instances")) == 6
