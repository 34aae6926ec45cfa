"""dicomfs as the lab's service, as its operator sees it: serve from the configuration
file alone, `dicomfs status` while scanners send, the log's line per association, and a
clean stop."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from dicomfs import config as dicomfs_config
from dicomfs import control
from dicomfs.dicom import corpus
from dicomfs.net import receiver as receiver_module
from dicomfs.net.receiver import Policy, exposure
from dicomfs.store.index import Index
from dicomfs.store.writer import IndexWriter
from tests.peers import Serve, dcmtk, free_port
from tests.test_cli import dicomfs

DEADLINE = 60.0  # seconds: what a loaded machine may take to show a change


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    """check()'s first true result, or fail after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while not (result := check()):
        assert time.monotonic() < deadline, f"still not {what} after {DEADLINE:g} s"
        time.sleep(0.05)
    return result


def write_series(folder: Path, seed: int, instances: int) -> list[Path]:
    """One MR series of 128 KB instances (256 x 256, 16 bit), a patient of its own."""
    specs = list(corpus.regular_specs(1, 1, 1, instances, seed=seed, matrix=256))
    paths = [folder / f"{n}.dcm" for n in range(len(specs))]
    for path, spec in zip(paths, specs, strict=True):
        corpus.write(path, spec)
    return paths


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Path, Path, Path, int]]:
    """A store made as install-service makes it, an empty mount point, and a
    configuration file that names them: (config, store, mount, port)."""
    store, mount, port = tmp_path / "store", tmp_path / "dicom", free_port()
    dicomfs("index", "--create", "--store", str(store))
    mount.mkdir()
    config = tmp_path / "dicomfs.toml"
    config.write_text(
        f'store = "{store}"\n\n[mount]\npath = "{mount}"\nmode = "0440"\n\n'
        f'[receiver]\nport = {port}\nbind = "127.0.0.1"\naet = "SPLDICOM"\n'
        'allow_aet = ["BAY3T", "PACS", "CONSOLE"]\n\n[expiry]\nretention = "1h"\n'
    )
    return config, store, mount, port


def test_an_operators_day(lab: tuple[Path, Path, Path, int], tmp_path: Path) -> None:
    config, store, mount, port = lab
    bay3t = write_series(tmp_path / "bay3t", seed=1, instances=20)
    pacs = write_series(tmp_path / "pacs", seed=2, instances=12)
    serve = Serve(store, mount=mount, port=port, config=config)
    try:
        report = control.ask(store)
        assert report is not None
        assert report["mount"] == {"path": str(mount), "state": "mounted"}
        assert report["receiver"] == {
            "aet": "SPLDICOM", "bind": "127.0.0.1", "port": port,
            "letting_in": "calling AE titles BAY3T, PACS, CONSOLE",
            "processes": dicomfs_config.RECEIVER_PROCESSES,  # one per core, at most 4
        }  # fmt: skip
        assert report["associations"] == []
        assert report["today"] == {}

        # A console holds its association open: status shows it, and what it sent so far.
        ae = AE("CONSOLE")
        ae.add_requested_context(MRImageStorage)
        held = ae.associate("127.0.0.1", port, ae_title="SPLDICOM")
        assert held.is_established
        for path in bay3t[:3]:
            assert held.send_c_store(pydicom.dcmread(path)).Status == 0
        live = control.ask(store)
        assert live is not None
        assert [(a["calling_aet"], a["instances"]) for a in live["associations"]] == [
            ("CONSOLE", 3)
        ]
        assert live["today"]["CONSOLE"]["open"] == 1  # under way, and counted already
        assert live["received_today"]["instances"] == 3

        for aet, folder in (("BAY3T", tmp_path / "bay3t"), ("PACS", tmp_path / "pacs")):
            sent = dcmtk("storescu", "-aet", aet, "-aec", "SPLDICOM", "+sd", "+r", "127.0.0.1",
                         str(port), str(folder), nodelay=True)  # fmt: skip
            assert sent.returncode == 0, sent.stderr
        refused = dcmtk("storescu", "-aet", "STRANGER", "-aec", "SPLDICOM", "127.0.0.1",
                        str(port), str(pacs[0]))  # fmt: skip
        assert refused.returncode != 0
        held.release()

        report = wait_for("the console's association over", lambda: (
            (r := control.ask(store)) and not r["associations"] and r))  # fmt: skip
        today = report["today"]
        assert today["BAY3T"]["associations"] == 1
        assert today["BAY3T"]["instances"] == 20
        assert today["PACS"]["instances"] == 12
        assert today["CONSOLE"]["instances"] == 3
        assert today["STRANGER"]["refused"] == 1
        assert today["STRANGER"]["associations"] == 0
        assert report["received_today"]["instances"] == 35
        assert report["stored"]["instances"] == 32  # the console's three were BAY3T's too
        assert report["stored"]["series"] == 2
        assert report["expiring_within_24h"]["series"] == 2  # a retention of 1 h
        assert any("STRANGER" in error["message"] for error in report["errors"])

        shown = dicomfs("--config", str(config), "status").stdout
        assert "  receiver  SPLDICOM on 127.0.0.1:" in shown
        assert f"  mount     {mount} (mounted)" in shown
        assert "    BAY3T             1 association, 20 instances, " in shown
        as_json = json.loads(dicomfs("--config", str(config), "status", "--json").stdout)
        assert as_json["today"]["PACS"]["instances"] == 12
        assert sorted(os.listdir(mount / "by-patient")) != []
    finally:
        serve.process.send_signal(signal.SIGTERM)
        serve.process.wait(timeout=DEADLINE)
        serve.stop()
    assert serve.process.returncode == 0
    assert not os.path.ismount(mount)
    assert not (store / ".dicomfs" / control.SOCKET_NAME).exists()
    stopped = dicomfs("--config", str(config), "status", check=False)
    assert stopped.returncode == 3
    assert "no dicomfs serve is running" in stopped.stderr
    as_json = dicomfs("--config", str(config), "status", "--json", check=False)
    assert json.loads(as_json.stdout) == {"running": False, "store": str(store)}
    checked = dicomfs("check", "--store", str(store))
    assert checked.returncode == 0
    with Index(store) as index:
        assert index.conn.execute("SELECT count(*) FROM instances").fetchone()[0] == 32
    log = serve.log.read_text()
    for aet, count in (("BAY3T", 20), ("PACS", 12), ("CONSOLE", 3)):
        assert f"INFO association from {aet}@127.0.0.1 (to SPLDICOM): {count} instances, " in log
    assert "calling AE title 'STRANGER' is not allowed" in log
    assert "Traceback" not in log


def test_serve_from_the_file_alone_expires_what_is_due(
    lab: tuple[Path, Path, Path, int], tmp_path: Path
) -> None:
    config, store, mount, port = lab
    text = config.read_text().replace('retention = "1h"', 'retention = "2s"')
    config.write_text(text + 'sweep_interval = "1s"\n')
    write_series(tmp_path / "scan", seed=3, instances=4)
    serve = Serve(store, mount=mount, port=port, config=config)
    try:
        sent = dcmtk("storescu", "-aet", "BAY3T", "-aec", "SPLDICOM", "+sd", "+r", "127.0.0.1",
                     str(port), str(tmp_path / "scan"), nodelay=True)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        wait_for("expired", lambda: not os.listdir(mount / "by-patient"))
        stored = control.ask(store)["stored"]  # type: ignore[index]
        assert stored["instances"] == 0
    finally:
        serve.stop()
    assert "expired 1 series" in serve.log.read_text()


def test_a_nearly_full_disk_is_said_in_the_log_and_in_status(
    lab: tuple[Path, Path, Path, int],
) -> None:
    config, store, mount, port = lab
    config.write_text(config.read_text() + '\n[disk]\nwarn_free = "100T"\n')  # more than any
    serve = Serve(store, mount=mount, port=port, config=config)
    try:
        report = control.ask(store)
        assert report is not None
        assert report["disk"]["nearly_full"] is True
        assert report["disk"]["warning_at"] == "100T"
        assert "NEARLY FULL" in dicomfs("--config", str(config), "status").stdout
    finally:
        serve.stop()
    assert "WARNING the store's disk is nearly full" in serve.log.read_text()


def test_a_receiver_open_to_anyone_on_the_network_is_a_warning() -> None:
    anyone, named = Policy(), Policy(networks=["10.1.0.0/16"])
    assert "anyone who reaches port 104 may send, and query and retrieve" in str(
        exposure(anyone, "0.0.0.0", 104)
    )
    assert exposure(anyone, "127.0.0.1", 104) is None  # this machine alone
    assert exposure(named, "0.0.0.0", 104) is None
    assert str(named) == "addresses 10.1.0.0/16"
    # Neither narrows who may connect: any user name is taken, and 0.0.0.0/0 is all.
    assert exposure(Policy(require_user=True), "0.0.0.0", 104) is not None
    assert exposure(Policy(networks=["0.0.0.0/0"]), "::", 104) is not None


def test_a_receiver_listens_on_ipv6_and_names_an_ipv4_peer_plainly(tmp_path: Path) -> None:
    assert receiver_module._plain_address("::ffff:10.1.2.3") == "10.1.2.3"
    assert receiver_module._plain_address("fd00::4") == "fd00::4"
    store = tmp_path / "store"
    Index(store).close()
    writer = IndexWriter(store)
    receiver = receiver_module.Receiver(store, writer, policy=Policy(networks=["::1"]))
    try:
        receiver.start("::1", 0)
        ae = AE("WS1")
        ae.add_requested_context("1.2.840.10008.1.1")  # Verification
        assoc = ae.associate("::1", receiver.port, ae_title="DICOMFS")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
    finally:
        receiver.stop()
        writer.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can be refused this")
def test_root_is_refused_a_store_another_user_owns(tmp_path: Path) -> None:
    """What root made in the service's store would be root's: the service could no
    longer read or remove it."""
    store = tmp_path / "store"
    dicomfs("index", "--create", "--store", str(store))
    os.chown(store, 65534, 65534)  # nobody's, as the service's is dicomfs's
    for command in (["find", "doe"], ["index"], ["remote", "add", "pacs", "P@127.0.0.1:104"]):
        refused = dicomfs(*command, "--store", str(store), check=False)
        assert refused.returncode == 1, command
        assert "run dicomfs as that user (sudo -u" in refused.stderr
    assert not (store / ".dicomfs" / "remotes.json").exists()
    # A store at the root of a disk of root's: its own directory tells whose it is.
    os.chown(store, 0, 0)
    os.chown(store / ".dicomfs", 65534, 65534)
    refused = dicomfs("index", "--store", str(store), check=False)
    assert refused.returncode == 1
    assert "belongs to the user nobody" in refused.stderr
