"""Quick ACKs for senders that leave Nagle on: the kernel leaves quick-ACK mode by itself in a
request-and-reply exchange, and the wrapper asks for it again after every read and write,
while behaving as the socket it wraps."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from dicomfs.net.tcp import QuickAckSocket


@pytest.fixture
def connected() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(ours, the peer's) ends of a loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        peer = socket.create_connection(server.getsockname())
        ours, _ = server.accept()
    with ours, peer:
        yield ours, peer


def quick_ack(sock: socket.socket | QuickAckSocket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK))


def leave_quick_ack_mode(ours: socket.socket, peer: socket.socket) -> None:
    """What a C-STORE does to a plain socket: the peer sends, we answer at once, and the
    kernel takes us for an interactive exchange, whose ACKs it delays. (A busy machine may
    answer too late to count as interactive: then it takes a few more rounds.)"""
    for _ in range(20):
        peer.sendall(b"request" * 10)
        assert ours.recv(100)
        ours.sendall(b"reply" * 10)
        assert peer.recv(100) == b"reply" * 10
        if not quick_ack(ours):
            return
    raise AssertionError("the kernel stayed in quick-ACK mode")


def test_without_it_the_kernel_leaves_quick_ack_mode(
    connected: tuple[socket.socket, socket.socket],
) -> None:
    leave_quick_ack_mode(*connected)  # asserts it: hence the wrapper


@pytest.mark.parametrize("call", ["recv", "recv_into", "send"])
def test_it_asks_for_quick_acks_again_after_every_read_and_write(
    connected: tuple[socket.socket, socket.socket], call: str
) -> None:
    ours, peer = connected
    wrapped = QuickAckSocket(ours)
    assert quick_ack(wrapped)
    assert ours.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # our replies go at once
    for _ in range(3):
        leave_quick_ack_mode(ours, peer)
        peer.sendall(b"request" * 10)
        if call == "recv":
            assert wrapped.recv(100) == b"request" * 10
        elif call == "recv_into":
            buffer = bytearray(100)
            assert wrapped.recv_into(buffer, 100) == 70
            assert bytes(buffer[:70]) == b"request" * 10
        else:
            assert ours.recv(100)
            assert wrapped.send(b"reply" * 10) == 50
            assert quick_ack(ours)
            assert peer.recv(100) == b"reply" * 10
        assert quick_ack(ours)


def test_it_behaves_as_the_socket_it_wraps(connected: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = connected
    wrapped = QuickAckSocket(ours)
    assert wrapped.fileno() == ours.fileno()
    assert wrapped.getpeername() == peer.getsockname()
    wrapped.settimeout(0.2)
    assert ours.gettimeout() == 0.2
    with pytest.raises(TimeoutError):
        wrapped.recv(10)  # nothing sent: the socket's own timeout holds
    peer.close()
    assert wrapped.recv(10) == b""  # the peer went away: end of stream, as a socket says it
