"""Keeping a sender that leaves Nagle's algorithm on from waiting 40 ms per instance.

dcmtk's storescu (and most scanners) write a C-STORE as two PDUs, command then
dataset. Without TCP_NODELAY on the sender, Nagle holds the second write until
the first is acknowledged, and Linux delays that acknowledgement by up to
40 ms. Asking for an immediate ACK (TCP_QUICKACK) after every read and write
on our side removes the wait. The kernel leaves quick-ACK mode by itself, hence
the re-arming.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any


def quick_ack(sock: socket.socket) -> None:
    """Ask for an immediate ACK of what came (re-armed after every read)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


class QuickAckSocket:
    """A socket wrapper for pynetdicom's transport: everything passes through."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # our replies go at once
        self._arm()

    def _arm(self) -> None:
        quick_ack(self._sock)

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        self._arm()
        return data

    def recv_into(self, buffer: Any, size: int = 0) -> int:
        count = self._sock.recv_into(buffer, size)
        self._arm()
        return count

    def send(self, data: bytes) -> int:
        sent = self._sock.send(data)
        self._arm()
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
