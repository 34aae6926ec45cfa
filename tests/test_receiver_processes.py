"""serve's receiver processes (net/processes.py): connections spread over them, one
count of associations for all, and a crash of any of them is a crash of serve."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from dicomfs.dicom import corpus

from .peers import DCMTK, Serve, dcmtk, serving
from .test_cli import dicomfs
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


def storescu(port: int, folder: Path, *options: str) -> subprocess.Popen[bytes]:
    """dcmtk's storescu sending the folder, in the background."""
    command = [str(DCMTK / "storescu"), *options, "-aec", "DICOMFS", "+sd", "+r", "127.0.0.1"]
    return subprocess.Popen([*command, str(port), str(folder)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def audited_senders(store: Path) -> set[str]:
    """The calling AE titles of the audit trail's records of instances received."""
    result = dicomfs("audit", "--store", str(store), "--json")
    return {str(record["calling_aet"]) for record in json.loads(result.stdout)
            if record["event"] == "received"}  # fmt: skip


def test_a_receiver_killed_mid_transfer_leaves_the_other_to_finish_and_audit(
    tmp_path: Path,
) -> None:
    """Killed while it held the turn to write the index, a receiver process must not
    hold up the other: its associations are aborted, and audited, at once."""
    store = tmp_path / "store"
    for number in range(4):
        corpus.write_regular(tmp_path / f"sent{number}", patients=1, studies=1, series=1,
                             instances=400, seed=number + 1)  # fmt: skip
    server = Serve(store, "--processes", "2")
    try:
        receivers = children(server.process.pid)
        senders = [storescu(server.port, tmp_path / f"sent{n}", "-aet", f"SENDER{n}")
                   for n in range(4)]  # fmt: skip
        wait_for(lambda: sum(connections_by_process(server.port).values()) == 4,
                 "the four associations never opened")  # fmt: skip
        held = connections_by_process(server.port)
        wait_for(lambda: len(rows(store, "SELECT sop_uid FROM instances")) >= 100,
                 "nothing was stored")  # fmt: skip
        os.kill(receivers[0], signal.SIGKILL)
        assert server.process.wait(timeout=PATIENCE) != 0
        for sender in senders:
            sender.wait(timeout=PATIENCE)
    finally:
        server.stop()
    assert held == dict.fromkeys(receivers, 2)
    with serving(store):
        pass
    assert len(audited_senders(store)) == 2  # the survivor's two associations


def test_status_answers_when_a_receiver_process_does_not(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with serving(store, "--processes", "2") as server:
        receivers = children(server.process.pid)
        ae = mr_client()
        associations = [ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
                        for _ in range(2)]  # fmt: skip
        try:
            assert connections_by_process(server.port) == dict.fromkeys(receivers, 1)
            os.kill(receivers[0], signal.SIGSTOP)
            try:
                shown = json.loads(dicomfs("status", "--store", str(store), "--json").stdout)
            finally:
                os.kill(receivers[0], signal.SIGCONT)
            assert len(shown["associations"]) == 1  # the other's
            assert "did not say what it is doing" in server.log.read_text()
            # The late answer is not taken for the next question's.
            spec = corpus.Spec(series_number=7, instance_number=1)
            assert associations[0].send_c_store(corpus.dataset(spec)).Status == 0
            shown = json.loads(dicomfs("status", "--store", str(store), "--json").stdout)
            assert len(shown["associations"]) == 2
            assert shown["received_today"]["instances"] == 1
        finally:
            for association in associations:
                association.release()


def test_the_same_instance_sent_by_several_associations_at_once_is_indexed_as_stored(
    tmp_path: Path,
) -> None:
    sent = tmp_path / "sent"
    corpus.write_regular(sent, patients=1, studies=1, series=1, instances=20)
    store = tmp_path / "store"
    with serving(store) as server:
        for _ in range(2):
            senders = [storescu(server.port, sent) for _ in range(4)]
            assert [sender.wait(timeout=PATIENCE) for sender in senders] == [0] * 4
    check = dicomfs("check", "--store", str(store), check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert len(rows(store, "SELECT sop_uid FROM instances")) == 20
