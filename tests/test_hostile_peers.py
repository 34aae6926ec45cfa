"""`dicomfs serve` against peers that misbehave: stalled, half-open, oversized, malformed.

Raw sockets and a pynetdicom client stand in for a hung scanner, a flaky network
and an attacker; dcmtk's storescu is the real sender that must get through.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import MRImageStorage, Verification  # type: ignore[attr-defined]

from dicomfs.dicom import corpus

from .peers import Serve, dcmtk, self_signed, send_raw_store, serving
from .test_receiver import client, rows, wait_for_audit

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/storescu").exists(), reason="needs dcmtk (scripts/install --test)"
)


def half_a_request() -> bytes:
    """The first bytes of an A-ASSOCIATE-RQ that claims 300 bytes."""
    return b"\x01\x00" + struct.pack(">L", 300) + b"\x00\x01\x00\x00" + b"DICOMFS".ljust(16)


def wait_until(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed the connection (whatever it said first)."""
    sock.settimeout(0)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except OSError:
        pass
    return True


def send_corpus(server: Serve, folder: Path) -> None:
    result = dcmtk("storescu", "-aec", "DICOMFS", "+sd", "+r", "127.0.0.1", str(server.port),
                   str(folder), nodelay=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def open_fds(server: Serve) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


@contextlib.contextmanager
def connections(port: int, count: int, first_bytes: bytes) -> Iterator[list[socket.socket]]:
    opened = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(first_bytes)
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def test_half_open_connections_do_not_keep_a_sender_out(tmp_path: Path) -> None:
    corpus.write_regular(tmp_path / "sent", patients=1, studies=1, series=1, instances=10)
    limits = ("--max-associations", "4", "--request-timeout", "300s")
    with (
        serving(tmp_path / "store", *limits) as server,
        connections(server.port, 70, half_a_request()) as stalled,
    ):
        wait_until(lambda: "closing the oldest" in server.log.read_text())
        send_corpus(server, tmp_path / "sent")
        assert rows(server.store, "SELECT count(*) FROM instances") == [(10,)]
        # They were there all along: most are still waiting for their request's deadline.
        assert sum(not closed_by_server(sock) for sock in stalled) >= 60


def test_a_request_sent_a_byte_at_a_time_is_cut_off_at_its_deadline(tmp_path: Path) -> None:
    with (
        serving(tmp_path / "store", "--request-timeout", "2s") as server,
        connections(server.port, 1, b"\x01") as (trickle,),
    ):
        for byte in half_a_request()[1:]:  # a byte a second: each read gets something
            with contextlib.suppress(OSError):
                trickle.send(bytes([byte]))
            if closed_by_server(trickle):
                break
            time.sleep(1)
        wait_until(lambda: closed_by_server(trickle), seconds=30)
        assert "no complete association request in time" in server.log.read_text()


def test_a_pdu_that_stops_halfway_and_an_idle_association_are_closed(tmp_path: Path) -> None:
    with serving(tmp_path / "store", "--pdu-timeout", "2s", "--idle-timeout", "2s") as server:
        ae, _ = client()
        stalled = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
        idle = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
        assert stalled.is_established
        assert idle.is_established
        raw = stalled.dul.socket.socket
        raw.sendall(b"\x04\x00" + struct.pack(">L", 1000) + b"\x00" * 10)  # 10 of 1000 bytes
        wait_until(lambda: not stalled.is_established and not idle.is_established, seconds=30)
        assert "a PDU took more than 2 s" in server.log.read_text()
        echo = dcmtk("echoscu", "-aec", "DICOMFS", "127.0.0.1", str(server.port))
        assert echo.returncode == 0, echo.stderr


def test_a_pdu_longer_than_agreed_is_refused_before_it_is_read(tmp_path: Path) -> None:
    with serving(tmp_path / "store") as server:
        before = _peak_rss_mb(server)
        accepted = 0
        with socket.create_connection(("127.0.0.1", server.port)) as liar:
            liar.sendall(b"\x01\x00" + struct.pack(">L", 2**31))  # "2 GiB of request follow"
            block = b"\x00" * (1 << 20)
            with contextlib.suppress(OSError):
                for _ in range(200):
                    accepted += liar.send(block)
        assert accepted < 64 << 20, f"the server took {accepted >> 20} MB of a refused PDU"
        assert _peak_rss_mb(server) < before + 32
        # After the association: a P-DATA longer than the maximum we announced.
        ae, _ = client()
        assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
        assert assoc.is_established
        ours = assoc.acceptor.maximum_length
        assoc.dul.socket.socket.sendall(b"\x04\x00" + struct.pack(">L", ours + 1))
        wait_until(lambda: not assoc.is_established)
        assert "more than the" in server.log.read_text()


def _peak_rss_mb(server: Serve) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def test_a_refused_address_is_closed_before_anything_is_read(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with serving(store, "--allow-address", "10.0.0.0/8") as server:
        with socket.create_connection(("127.0.0.1", server.port)) as stranger:
            wait_until(lambda: closed_by_server(stranger))  # it has sent nothing at all
        refused = wait_for_audit(store, "--event", "rejected")
    assert refused  # ours, and the probe that waited for serve to listen
    assert {(r["address"], r["outcome"]) for r in refused} == {
        ("127.0.0.1", "address 127.0.0.1 is not allowed")
    }


@pytest.mark.parametrize("user", [b"\x00", b"   ", b"ali\x1b]0;x\x07ce", b"bob\nFORGED"])
def test_a_blank_or_control_character_username_is_no_username(tmp_path: Path, user: bytes) -> None:
    from pynetdicom.pdu_primitives import UserIdentityNegotiation

    with serving(tmp_path / "store", "--require-user") as server:
        ae, _ = client()
        identity = UserIdentityNegotiation()
        identity.user_identity_type = 1
        identity.primary_field = user
        assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS", ext_neg=[identity])
        assert assoc.is_rejected


def _association(server: Serve) -> Any:
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(MRImageStorage, "1.2.840.10008.1.2.1")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
    assert assoc.is_established
    return assoc


def test_data_on_a_context_never_accepted_ends_that_association_cleanly(
    tmp_path: Path,
) -> None:
    with serving(tmp_path / "store") as server:
        _association(server).release()
        baseline = open_fds(server)
        assoc = _association(server)
        dataset = corpus.dataset(corpus.Spec())
        encoded = encode(dataset, False, True)
        assert encoded is not None
        assert send_raw_store(assoc, dataset.SOPInstanceUID, encoded, context_id=7) is None
        wait_until(lambda: not assoc.is_established)
        wait_until(lambda: open_fds(server) <= baseline and not server.spooled())
        assert "never accepted" in server.log.read_text()
        corpus.write(tmp_path / "good.dcm", corpus.Spec())
        send_corpus(server, tmp_path / "good.dcm")
        assert rows(server.store, "SELECT count(*) FROM instances") == [(1,)]


def test_a_command_set_that_never_ends_is_cut_off_before_it_fills_memory(
    tmp_path: Path,
) -> None:
    with serving(tmp_path / "store") as server:
        assoc = _association(server)
        fragment = b"\x00" * 40_000  # a command fragment, never the last: control 0x01
        pdu = b"\x04\x00" + struct.pack(">L", len(fragment) + 6)
        pdu += struct.pack(">LBB", len(fragment) + 2, 1, 0x01) + fragment
        raw = assoc.dul.socket.socket
        with contextlib.suppress(OSError):
            for _ in range(100):  # 4 MB of it, if nobody stops it
                raw.sendall(pdu)
        wait_until(lambda: not assoc.is_established, seconds=30)
        assert "a command set longer than 65536 bytes" in server.log.read_text()
        corpus.write(tmp_path / "good.dcm", corpus.Spec())
        send_corpus(server, tmp_path / "good.dcm")  # and the receiver goes on
        assert rows(server.store, "SELECT count(*) FROM instances") == [(1,)]


def nested_dataset(sop_uid: str, depth: int) -> bytes:
    """An MR instance (explicit VR little endian) whose ReferencedSeriesSequence nests
    `depth` sequences deep; pydicom itself cannot write one that deep."""
    spec = corpus.Spec(sop_uid=sop_uid)

    def element(group: int, number: int, vr: bytes, value: bytes) -> bytes:
        value += b"\x00" * (len(value) % 2)
        return struct.pack("<HH2sH", group, number, vr, len(value)) + value

    opening = struct.pack("<HH2s2xI", 0x0008, 0x1115, b"SQ", 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return (
        element(0x0008, 0x0016, b"UI", str(MRImageStorage).encode())
        + element(0x0008, 0x0018, b"UI", sop_uid.encode())
        + (opening + item) * depth
        + closing * depth
        + element(0x0010, 0x0010, b"PN", b"NESTED^DEEP")
        + element(0x0020, 0x000D, b"UI", spec.study_uid.encode())
        + element(0x0020, 0x000E, b"UI", spec.series_uid.encode())
    )


def test_deeply_nested_instances_are_refused_one_by_one_releasing_everything(
    tmp_path: Path,
) -> None:
    with serving(tmp_path / "store") as server:
        _association(server).release()
        baseline = open_fds(server)
        assoc = _association(server)
        for number in range(20):
            sop_uid = f"1.2.826.0.1.3680043.8.498.4242.{number}"
            status = send_raw_store(assoc, sop_uid, nested_dataset(sop_uid, 2000))
            assert status == 0xC210  # cannot understand
            assert not server.spooled()  # released at once, not when the association ends
        assert open_fds(server) <= baseline + 2  # the association's own socket, at most
        good = corpus.dataset(corpus.Spec())
        assert assoc.send_c_store(good).Status == 0
        assoc.release()
        log = server.log.read_text()
    refusals = [line for line in log.splitlines() if " ERROR refused " in line]
    assert sum("nested more than" in line for line in refusals) == 20  # one line each
    assert "Traceback" not in log


def test_a_silent_connection_does_not_hold_up_tls_senders(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = ("--tls-cert", str(cert), "--tls-key", str(key), "--request-timeout", "300s")
    with serving(tmp_path / "store", *tls) as server, connections(server.port, 3, b"") as silent:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        context.check_hostname = False
        ae, _ = client()
        ae.acse_timeout = ae.network_timeout = 60
        assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS",
                             tls_args=(context, None))  # fmt: skip
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        assert not any(closed_by_server(sock) for sock in silent)  # still within their deadline


def association_request(calling: bytes, called: bytes = b"DICOMFS") -> bytes:
    """An A-ASSOCIATE-RQ for Verification, with any bytes as the calling AE title."""

    def item(kind: int, body: bytes) -> bytes:
        return struct.pack(">BBH", kind, 0, len(body)) + body

    context = item(0x20, b"\x01\x00\x00\x00" + item(0x30, b"1.2.840.10008.1.1")
                   + item(0x40, b"1.2.840.10008.1.2"))  # fmt: skip
    user = item(0x50, item(0x51, struct.pack(">L", 16384)))
    body = (b"\x00\x01\x00\x00" + called.ljust(16)[:16] + calling.ljust(16)[:16] + b"\x00" * 32
            + item(0x10, b"1.2.840.10008.3.1.1.1") + context + user)  # fmt: skip
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


@pytest.mark.parametrize("calling", [b"\x1b[31mEVIL", b"\x1b]0;pwned\x07X", b"A\nINFO stopped X"])
def test_a_hostile_ae_title_cannot_rewrite_the_terminal_or_forge_a_log_line(
    tmp_path: Path, calling: bytes
) -> None:
    with serving(tmp_path / "store", "--allow-aet", "BAY3T") as server:
        with socket.create_connection(("127.0.0.1", server.port)) as peer:
            peer.sendall(association_request(calling))
            wait_until(lambda: closed_by_server(peer))
        echo = dcmtk("echoscu", "-aet", "BAY3T", "-aec", "DICOMFS", "127.0.0.1", str(server.port))
        assert echo.returncode == 0, echo.stderr
        log = server.log.read_bytes()
    assert b"\x1b" not in log
    assert b"\x07" not in log
    for line in log.decode().splitlines():  # a log line, or a quoted and indented traceback
        assert re.match(r"\d{4}-\d\d-\d\d |  \| ", line), line


def test_a_refused_address_is_audited_once_and_its_request_never_read(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with serving(store, "--allow-address", "10.0.0.0/8") as server:
        echo = dcmtk("echoscu", "-aet", "ONCE", "-aec", "DICOMFS", "127.0.0.1", str(server.port))
        assert echo.returncode != 0
        refused = wait_for_audit(store, "--event", "rejected")
        log = server.log.read_text()
    assert refused
    assert all(not r["calling_aet"] for r in refused)  # its AE title was never read
    assert log.count("refused an association") == len(refused)
