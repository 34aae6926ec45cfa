"""What `dicomfs pull` says when it gets no association: peers on raw loopback sockets."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomfs.net import puller, remotes

from .peers import free_port

Answer = Callable[[socket.socket], None]


@contextlib.contextmanager
def raw_peer(answer: Answer) -> Iterator[int]:
    """A loopback port whose first connection is answered by answer(connection), then
    closed."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):  # the listener closed: nobody came
            connection, _ = listener.accept()
            with connection:
                answer(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
        thread.join(timeout=10)


def close_at_once(connection: socket.socket) -> None:
    pass


def read_request(connection: socket.socket) -> None:
    header = connection.recv(6, socket.MSG_WAITALL)
    (length,) = struct.unpack(">L", header[2:6])
    connection.recv(length, socket.MSG_WAITALL)


def abort_the_request(connection: socket.socket) -> None:
    read_request(connection)
    connection.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-ABORT


def reject_the_request(connection: socket.socket) -> None:
    read_request(connection)
    # A-ASSOCIATE-RJ: permanent, by the service user, called AE title not recognised
    connection.sendall(b"\x03\x00\x00\x00\x00\x04\x00\x01\x01\x07")


def associate(port: int) -> str:
    remote = remotes.parse("pacs", f"PACS@127.0.0.1:{port}")
    with (
        pytest.raises(puller.PullError) as refused,
        puller.associate(remote, "DICOMFS", [Verification]),
    ):
        pass
    return str(refused.value)


@pytest.mark.parametrize("answer", [close_at_once, abort_the_request, reject_the_request])
def test_a_peer_that_ends_the_association_at_once_refused_it(answer: Answer) -> None:
    with raw_peer(answer) as port:
        message = associate(port)
    assert message == (
        f"pacs (PACS@127.0.0.1:{port}) refused the association: check that it knows our "
        "AE title DICOMFS and that PACS is its own"
    )


def test_a_port_nobody_listens_on_could_not_be_reached() -> None:
    port = free_port()
    assert associate(port) == f"pacs (PACS@127.0.0.1:{port}) could not be reached"
