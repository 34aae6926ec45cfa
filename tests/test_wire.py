"""PDUs read whole from a socket, however the bytes come, within their deadlines."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.net import wire

from .peers import self_signed


@pytest.fixture
def pair() -> Iterator[tuple[wire.Connection, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # real TCP, on loopback
        peer = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    connection = wire.Connection(ours)
    yield connection, peer
    connection.close()
    peer.close()


def pdu(pdu_type: int, body: bytes) -> bytes:
    return wire.HEADER.pack(pdu_type, len(body)) + body


def read(connection: wire.Connection, *, wait: float = 5, take: float = 5) -> tuple[int, bytes]:
    pdu_type, body = connection.read_pdu(bytearray(), 1 << 20, wait=wait, take=take)
    return pdu_type, bytes(body)


def test_pdus_that_come_in_one_write_are_read_one_by_one(
    pair: tuple[wire.Connection, socket.socket],
) -> None:
    connection, peer = pair
    first, second, third = b"a" * 1000, b"", b"c" * 7
    peer.sendall(pdu(wire.P_DATA_TF, first) + pdu(wire.RELEASE_RQ, second) + pdu(0x04, third))
    assert read(connection) == (wire.P_DATA_TF, first)
    assert read(connection) == (wire.RELEASE_RQ, second)
    assert read(connection) == (wire.P_DATA_TF, third)


def test_a_pdu_that_comes_a_byte_at_a_time_is_read_whole(
    pair: tuple[wire.Connection, socket.socket],
) -> None:
    connection, peer = pair
    data = pdu(wire.P_DATA_TF, b"0123456789") + pdu(wire.ABORT, bytes(4))

    def trickle() -> None:
        for byte in data:
            peer.sendall(bytes([byte]))
            time.sleep(0.001)

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        assert read(connection) == (wire.P_DATA_TF, b"0123456789")
        assert read(connection) == (wire.ABORT, bytes(4))
    finally:
        sender.join()


def test_a_blocking_read_still_keeps_its_deadline(
    pair: tuple[wire.Connection, socket.socket],
) -> None:
    connection, peer = pair
    peer.sendall(wire.HEADER.pack(wire.P_DATA_TF, 100) + b"only part of it")
    started = time.monotonic()
    with pytest.raises(wire.TimedOut, match=r"a PDU took more than 0\.3 s"):
        read(connection, take=0.3)
    assert time.monotonic() - started >= 0.3  # not before it
    assert peer.recv(100) == pdu(wire.ABORT, bytes([0, 0, 2, wire.NOT_SPECIFIED]))  # told why
    with pytest.raises(wire.TimedOut, match=r"no PDU for 0\.2 s"):
        read(connection, wait=0.2)


def test_bytes_that_are_no_dicom_pdu_are_refused_at_their_first_six(
    pair: tuple[wire.Connection, socket.socket],
) -> None:
    connection, peer = pair
    peer.sendall(b"GET / HTTP/1.1\r\nHost: dicomfs\r\n\r\n")  # a browser at the DICOM port
    with pytest.raises(wire.Closed, match=r"not a DICOM PDU \(type 0x47\)"):
        read(connection)
    assert peer.recv(100) == pdu(wire.ABORT, bytes([0, 0, 2, wire.UNRECOGNIZED_PDU]))


def test_over_tls_each_read_asks_for_an_immediate_ack_too(tmp_path: Path) -> None:
    """A sender that leaves Nagle on waits for our ACK of its command before it sends
    the data set: over TLS as over plain TCP, each read asks the kernel to ACK at once
    (TCP_QUICKACK, which the kernel drops by itself in a request-and-reply exchange)."""
    cert, key = self_signed(tmp_path)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(cert, key)
    calling = ssl.create_default_context(cafile=str(cert))
    calling.check_hostname = False
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        tls_peer: list[ssl.SSLSocket] = []
        handshake = threading.Thread(target=lambda: tls_peer.append(calling.wrap_socket(peer)))
        handshake.start()
        ours = serving.wrap_socket(listener.accept()[0], server_side=True)
        handshake.join()
    connection = wire.Connection(ours)
    try:
        for number in range(3):
            tls_peer[0].sendall(pdu(wire.P_DATA_TF, b"command %d" % number))
            assert read(connection) == (wire.P_DATA_TF, b"command %d" % number)
            assert ours.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK)
            ours.sendall(b"reply")  # as an answer would: the kernel leaves quick-ACK mode
            assert tls_peer[0].recv(5) == b"reply"
    finally:
        connection.close()
        tls_peer[0].close()
