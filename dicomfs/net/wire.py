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
import os
import select
import socket
import ssl
import struct
import time

from .. import config
from . import tcp

HEADER = struct.Struct(">BxL")  # PDU type, reserved, length of the body
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF = 0x01, 0x02, 0x03, 0x04
RELEASE_RQ, RELEASE_RP, ABORT = 0x05, 0x06, 0x07
# A-ABORT reasons of the service provider (PS3.8 9.3.8).
NOT_SPECIFIED, UNRECOGNIZED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 0x00, 0x01, 0x02, 0x06
PDV_HEADER = struct.Struct(">LBB")  # item length, presentation context ID, control header
COMMAND, LAST = 0x01, 0x02  # bits of a PDV's message control header
_RECV_CHUNK = 1 << 20
_SEND_CHUNK = 4 << 20  # written at once: a few MB of PDUs
_TICK = 1.0  # the longest a blocking read waits before it looks at its deadline
_TIMEVAL = struct.Struct("@ll")  # SO_RCVTIMEO's and SO_SNDTIMEO's struct timeval
SEND_TIMEOUT = 30.0  # a peer that reads nothing of our answers for this long is gone
# A command set is a few hundred bytes: one that keeps growing is a peer filling memory.
MAX_COMMAND = 64 * 1024
MAX_RESPONSE_PDU = 1 << 20  # the longest PDU we take while we send (responses, a cancel)


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
    """One peer's socket, read a PDU at a time.

    A plain socket is left blocking, with SO_RCVTIMEO and SO_SNDTIMEO as its
    timeouts: a read is then one recvfrom, where Python's own socket timeout adds a
    poll and an ioctl to every read, and every system call is a hand-off of the
    interpreter's lock that the other associations wait for. A read wakes at least
    once a second to look at its deadline. A TLS socket keeps Python's timeouts.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._header = bytearray(HEADER.size)
        self._carry = bytearray()  # read past the last PDU: the start of the next one
        self._plain = not isinstance(sock, ssl.SSLSocket)  # TLS keeps Python's timeouts
        self._tick = 0.0  # SO_RCVTIMEO now (0: not set)
        self._send_timeout = 0.0  # SO_SNDTIMEO now
        self._held = bytearray()  # to go ahead of the next message (send_message's hold)
        with contextlib.suppress(OSError):  # a connection gone already fails at its first read
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # our replies go at once
        if self._plain:
            with contextlib.suppress(OSError):
                sock.settimeout(None)

    def read_pdu(
        self, buffer: bytearray, limit: int, *, wait: float, take: float
    ) -> tuple[int, memoryview]:
        """The next PDU's type and body (a view into buffer, grown as needed): its
        first byte within `wait` seconds, the rest within `take` seconds of that.
        Closed if the peer went away, took too long, or sent more than limit."""
        header = memoryview(self._header)
        got = self._take_carry(header)
        if not got:
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
            if not ASSOCIATE_RQ <= pdu_type <= ABORT:  # not DICOM at all: HTTP, say
                self.abort(UNRECOGNIZED_PDU)
                raise Closed(f"not a DICOM PDU (type 0x{pdu_type:02X})")
            if length > limit:
                self.abort(INVALID_PARAMETER)
                raise Closed(f"a PDU of {length} bytes, more than the {limit} allowed")
            # The body is read with room for the next PDU's header, which saves a
            # read of its own whenever it has come already.
            if len(buffer) < length + HEADER.size:
                buffer.extend(bytes(length + HEADER.size - len(buffer)))
            room = memoryview(buffer)[: length + HEADER.size]
            got = self._recv(room, 0, deadline, least=length)
            self._carry[:] = room[length:got]
        except TimedOut:
            raise TimedOut(f"a PDU took more than {take:g} s") from None
        return pdu_type, room[:length]

    def _take_carry(self, header: memoryview) -> int:
        count = len(self._carry)
        header[:count] = self._carry
        self._carry.clear()
        return count

    def _recv(
        self, view: memoryview, got: int, deadline: float, *, first: bool = False,
        least: int | None = None,
    ) -> int:  # fmt: skip
        """Fill view from got on (or at least its first `least` bytes); with first,
        return once some bytes came (0 if the peer closed before any)."""
        sock = self.sock
        least = len(view) if least is None else least
        while got < least:
            left = deadline - time.monotonic()
            if left <= 0:
                self.abort(NOT_SPECIFIED)
                raise TimedOut()
            try:
                self._wait_at_most(left)
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
            tcp.quick_ack(sock)  # a TLS socket's too: its descriptor is the connection's
            if first:
                return got
        return got

    def _wait_at_most(self, left: float) -> None:
        """Let the next read block for at most left seconds (less, up to a second)."""
        if not self._plain:
            self.sock.settimeout(left)
            return
        tick = min(_TICK, left)
        if not tick / 2 <= self._tick <= tick:
            _set_timeout(self.sock, socket.SO_RCVTIMEO, tick)
            self._tick = tick

    def send(self, data: bytes | bytearray, timeout: float = SEND_TIMEOUT) -> None:
        if self._held:
            data, self._held = self._held + data, bytearray()
        try:
            if not self._plain:
                self.sock.settimeout(timeout)
            elif timeout != self._send_timeout:
                _set_timeout(self.sock, socket.SO_SNDTIMEO, timeout)
                self._send_timeout = timeout
            self.sock.sendall(data)
        except OSError as exc:  # BlockingIOError: SO_SNDTIMEO passed
            raise Closed("") from exc

    def send_pdu(self, pdu_type: int, body: bytes, timeout: float = SEND_TIMEOUT) -> None:
        self.send(HEADER.pack(pdu_type, len(body)) + body, timeout)

    def send_command(self, context_id: int, command: bytes) -> None:
        """A command set alone, as one P-DATA-TF of one PDV."""
        self.send_message(context_id, command, 0)

    def send_message(
        self, context_id: int, command: bytes, max_pdu: int, *,
        data: bytes | memoryview | None = None, file: tuple[int, int, int] | None = None,
        hold: bool = False,
    ) -> None:  # fmt: skip
        """A command set and the data set that follows it, if any: `data`, or `file`'s
        (fd, offset, size) bytes, as encode_message encodes them; a file's written a
        few MB at a time. Closed if the file is shorter than that (cut meanwhile):
        the peer cannot be told otherwise. With hold, the message is not sent yet but
        ahead of the next one: a C-GET's pending response, ahead of its next instance."""
        out = encode_message(context_id, command, max_pdu, data)
        if file is None:
            if hold:
                self._held += out
            else:
                self.send(out)
            return
        fd, position, size = file
        end = position + size
        while True:
            take = min(_SEND_CHUNK, end - position)
            chunk = os.pread(fd, take, position)
            if len(chunk) < take:
                self.abort(NOT_SPECIFIED)
                raise Closed("a file was cut short while it was sent")
            position += take
            if position >= end and size % 2:  # as encode_message pads it
                chunk += b"\x00"
            _add_data(out, context_id, memoryview(chunk), max_pdu, last=position >= end)
            self.send(out)
            out = bytearray()
            if position >= end:
                return

    def waiting(self) -> bool:
        """Whether the peer has sent something not read yet (without waiting for it)."""
        if self._carry:
            return True
        if not self._plain and self.sock.pending():  # type: ignore[attr-defined]
            return True
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):  # closed: the next read says so
            return True

    def abort(self, reason: int) -> None:
        """Say A-ABORT (from the service provider) if the connection still takes it
        within a second: a peer that reads nothing must not hold up a stop."""
        self._held = bytearray()
        with contextlib.suppress(Closed):
            self.send_pdu(ABORT, bytes([0, 0, 2, reason]), timeout=1.0)

    def await_close(self, seconds: float) -> None:
        """Let the peer close first, for `seconds` at most, as PS3.8's ARTIM timer has
        an acceptor do once it has rejected an association: a connection closed right
        after the rejection may reach the peer as an abort before it reads why."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._wait_at_most(left)
            try:
                if not self.sock.recv(4096):
                    return  # the peer closed
            except (TimeoutError, BlockingIOError, InterruptedError):
                continue
            except OSError:
                return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


def encode_message(
    context_id: int, command: bytes, max_pdu: int, data: bytes | memoryview | None = None
) -> bytearray:
    """A command set and its data set (if any) as P-DATA-TFs no longer than the peer
    takes (max_pdu; 0: no limit), a PDV each, in one buffer: written at once, an
    instance costs the peer one wake-up, not one per PDU."""
    out = bytearray(HEADER.pack(P_DATA_TF, len(command) + 6))
    out += PDV_HEADER.pack(len(command) + 2, context_id, COMMAND | LAST) + command
    if data is not None:
        if len(data) % 2:  # a data set is of even length (a deflated one written odd)
            data = bytes(data) + b"\x00"
        _add_data(out, context_id, memoryview(data), max_pdu, last=True)
    return out


def _add_data(
    out: bytearray, context_id: int, chunk: memoryview, max_pdu: int, *, last: bool
) -> None:
    """A data set's bytes (all, or a part) as P-DATA-TFs; the final one marked the
    data set's last if it is."""
    room = min(max_pdu or _SEND_CHUNK, _SEND_CHUNK) - 6  # a PDV's header
    room -= room % 2  # fragments of even length, as some peers insist
    for start in range(0, max(len(chunk), 1), room):
        part = chunk[start : start + room]
        final = last and start + room >= len(chunk)
        out += HEADER.pack(P_DATA_TF, len(part) + 6)
        out += PDV_HEADER.pack(len(part) + 2, context_id, LAST if final else 0)
        out += part


def expect_p_data(connection: Connection, pdu_type: int, aborted: str = "") -> None:
    """Closed unless the PDU read is a P-DATA-TF: the peer's A-ABORT ends the
    association (Closed with `aborted`), anything else is out of turn (A-ABORT)."""
    if pdu_type == ABORT:
        raise Closed(aborted)
    if pdu_type != P_DATA_TF:
        connection.abort(UNEXPECTED_PDU)
        raise Closed(f"a PDU of type 0x{pdu_type:02X} out of turn")


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


def _set_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    """SO_RCVTIMEO or SO_SNDTIMEO (a struct timeval); never 0, which means for ever."""
    whole, part = divmod(max(seconds, 0.001), 1.0)
    sock.setsockopt(socket.SOL_SOCKET, option, _TIMEVAL.pack(int(whole), int(part * 1e6)))
