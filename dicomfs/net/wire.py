"""PDUs on one connection (PS3.8 9.3): read whole, with deadlines and a size limit.

A peer that sends half a PDU and goes quiet (a hung scanner, a half-open
connection, an attacker) must not hold its association for ever, and a header
may claim a body of up to 4 GiB: every read has a deadline, and a body longer than
agreed is refused before a byte of it is read. A refusal says A-ABORT to the peer
and closes the connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import ssl
import struct
import time

from .. import config

HEADER = struct.Struct(">BxL")  # PDU type, reserved, length of the body
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF = 0x01, 0x02, 0x03, 0x04
RELEASE_RQ, RELEASE_RP, ABORT = 0x05, 0x06, 0x07
# A-ABORT reasons of the service provider (PS3.8 9.3.8).
NOT_SPECIFIED, UNRECOGNIZED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 0x00, 0x01, 0x02, 0x06
PDV_HEADER = struct.Struct(">LBB")  # item length, presentation context ID, control header
COMMAND, LAST = 0x01, 0x02  # bits of a PDV's message control header
_RECV_CHUNK = 1 << 20
SEND_TIMEOUT = 30.0  # a peer that reads nothing of our answers for this long is gone


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds; see the README's table of receiver timeouts."""

    request: float = config.ASSOCIATION_REQUEST_TIMEOUT  # from the connection to a request
    pdu: float = config.PDU_TIMEOUT  # from the first byte of a PDU to its last
    idle: float = config.IDLE_TIMEOUT  # with no PDU at all


class Closed(Exception):
    """The connection is over: the peer closed it, or we refused what it sent (the
    message says why, for the log; empty when the peer simply went away)."""


class TimedOut(Closed):
    """The peer let a deadline pass."""


class Connection:
    """One peer's socket, read a PDU at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._header = bytearray(HEADER.size)
        self._quick_ack = not isinstance(sock, ssl.SSLSocket)  # TLS cannot be asked
        with contextlib.suppress(OSError):  # a connection gone already fails at its first read
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # our replies go at once

    def read_pdu(
        self, buffer: bytearray, limit: int, *, wait: float, take: float
    ) -> tuple[int, memoryview]:
        """The next PDU's type and body (a view into buffer, grown as needed): its
        first byte within `wait` seconds, the rest within `take` seconds of that.
        Closed if the peer went away, took too long, or sent more than limit."""
        header = memoryview(self._header)
        try:
            got = self._recv(header, 0, time.monotonic() + wait, first=True)
        except TimedOut:
            raise TimedOut(f"no PDU for {wait:g} s") from None
        if got == 0:
            raise Closed("")
        deadline = time.monotonic() + take
        try:
            self._recv(header, got, deadline)
            pdu_type, length = HEADER.unpack(self._header)
            if length > limit:
                self.abort(INVALID_PARAMETER)
                raise Closed(f"a PDU of {length} bytes, more than the {limit} agreed")
            if len(buffer) < length:
                buffer.extend(bytes(length - len(buffer)))
            body = memoryview(buffer)[:length]
            self._recv(body, 0, deadline)
        except TimedOut:
            raise TimedOut(f"a PDU took more than {take:g} s") from None
        return pdu_type, body

    def _recv(self, view: memoryview, got: int, deadline: float, first: bool = False) -> int:
        """Fill view from got on; with first, return once some bytes came (0 if the
        peer closed before any)."""
        sock = self.sock
        while got < len(view):
            left = deadline - time.monotonic()
            if left <= 0:
                self.abort(NOT_SPECIFIED)
                raise TimedOut()
            try:
                sock.settimeout(left)
                count = sock.recv_into(view[got:], min(len(view) - got, _RECV_CHUNK))
            except (TimeoutError, BlockingIOError, InterruptedError):
                continue  # the deadline decides
            except OSError as exc:
                raise Closed("") from exc
            if count == 0:
                if first and got == 0:
                    return 0
                raise Closed("the peer closed the connection in the middle of a PDU")
            got += count
            if self._quick_ack:  # see tcp.py: a sender with Nagle on waits for our ACK
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            if first:
                return got
        return got

    def send(self, data: bytes, timeout: float = SEND_TIMEOUT) -> None:
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(data)
        except OSError as exc:
            raise Closed("") from exc

    def send_pdu(self, pdu_type: int, body: bytes, timeout: float = SEND_TIMEOUT) -> None:
        self.send(HEADER.pack(pdu_type, len(body)) + body, timeout)

    def send_command(self, context_id: int, command: bytes) -> None:
        """A command set alone, as one P-DATA-TF of one PDV."""
        pdv = PDV_HEADER.pack(len(command) + 2, context_id, COMMAND | LAST) + command
        self.send_pdu(P_DATA_TF, pdv)

    def abort(self, reason: int) -> None:
        """Say A-ABORT (from the service provider) if the connection still takes it
        within a second: a peer that reads nothing must not hold up a stop."""
        with contextlib.suppress(Closed):
            self.send_pdu(ABORT, bytes([0, 0, 2, reason]), timeout=1.0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


def pdvs(body: memoryview) -> list[tuple[int, int, memoryview]]:
    """The PDV items of a P-DATA-TF body: (context ID, control header, data).
    ValueError if an item's length does not fit the body."""
    items = []
    position, end = 0, len(body)
    while position < end:
        if position + PDV_HEADER.size > end:
            raise ValueError("a PDV item cut short")
        length, context_id, control = PDV_HEADER.unpack_from(body, position)
        stop = position + 4 + length
        if length < 2 or stop > end:
            raise ValueError(f"a PDV item of {length} bytes in a PDU of {end}")
        items.append((context_id, control, body[position + 6 : stop]))
        position = stop
    return items
