"""What a DICOM peer may make the receiver wait for, or hold in memory.

pynetdicom reads every PDU whole, with blocking reads, and believes the length
its header claims. A peer that sends half a PDU and goes quiet (a hung scanner,
a half-open connection, an attacker) holds its association's thread for as long
as it likes, and a header may claim up to 4 GiB, which pynetdicom then buffers.

PduGuard takes over the one read pynetdicom does (DULServiceProvider._read_pdu_data:
the 6-byte PDU header, then the body whose length the header gives) and
- refuses a PDU longer than we agreed to receive (before the association, longer
  than any association request needs), before reading its body;
- gives the association request, counted from the connection, and each PDU,
  counted from its first byte, a deadline;
- refuses data on a presentation context that was never accepted, which would
  otherwise crash pynetdicom's reactor and leave the instance's spool file behind.
A refusal sends an A-ABORT, closes the connection and logs one line; pynetdicom
then sees a closed connection and ends the association as usual.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import struct
import time
from typing import Any

import pynetdicom

from .. import config

log = logging.getLogger(__name__)

# pynetdicom versions whose _read_pdu_data reads recv(6), then recv(length), through
# AssociationSocket.recv; others run without the guard (and say so in the log).
SUPPORTED_VERSIONS = ("2.", "3.")
# An A-ASSOCIATE-RQ of 128 presentation contexts, each with a dozen transfer
# syntaxes, is about 100 KB.
MAX_REQUEST_PDU = 256 * 1024
HEADER = struct.Struct(">BBL")
P_DATA_TF = 0x04
# A-ABORT from the service provider: reason 0 (not specified), 6 (invalid parameter).
_ABORT = b"\x07\x00\x00\x00\x00\x04\x00\x00\x02%c"
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds; see the README's table of receiver timeouts."""

    request: float = config.ASSOCIATION_REQUEST_TIMEOUT  # from the connection to a request
    pdu: float = config.PDU_TIMEOUT  # from the first byte of a PDU to its last
    idle: float = config.IDLE_TIMEOUT  # with no PDU at all (pynetdicom's own timer)


def supported() -> bool:
    return pynetdicom.__version__.startswith(SUPPORTED_VERSIONS)


class PduGuard:
    """Replaces one association's AssociationSocket.recv; see the module's text."""

    def __init__(self, assoc: Any, timeouts: Timeouts) -> None:
        self._assoc = assoc
        self._transport = assoc.dul.socket
        self._peer = assoc.requestor.address
        self._request_deadline = time.monotonic() + timeouts.request
        self._pdu_timeout = timeouts.pdu
        self._deadline = 0.0  # of the PDU being read
        self._in_body = False  # its header has been read, its body not yet
        self._remaining = 0  # the length of its body
        self._pdu_type = 0
        self._requested = False  # the association request has been read
        self._accepted: frozenset[int] = frozenset()  # presentation context IDs
        self._shut = False
        self._timeout = self._transport.socket.gettimeout()  # pynetdicom's, for its sends

    def install(self) -> None:
        self._transport.recv = self.recv

    def shut(self) -> None:
        """Read nothing more from this peer: pynetdicom sees a closed connection."""
        self._shut = True

    def recv(self, nr_bytes: int) -> bytearray:
        if self._shut:
            return bytearray()
        if not self._in_body:
            return self._read_header()
        # pynetdicom asks for the whole body at once (hence SUPPORTED_VERSIONS).
        body = self._read(self._remaining)
        self._in_body = False
        self._requested = True  # the first PDU is the request (or the connection ends)
        if self._pdu_type == P_DATA_TF and len(body) == self._remaining:
            problem = self._context_problem(body)
            if problem:
                self.refuse(problem, reason=6)
                return bytearray()
        return body

    def _read_header(self) -> bytearray:
        if self._requested:
            self._deadline = time.monotonic() + self._pdu_timeout
        else:
            self._deadline = self._request_deadline
        header = self._read(HEADER.size)
        if len(header) < HEADER.size:
            return header  # closed or timed out: pynetdicom sees a closed connection
        pdu_type, _, length = HEADER.unpack(header)
        limit = self._limit(pdu_type)
        if length > limit:
            self.refuse(f"a PDU of {length} bytes, more than the {limit} agreed", reason=6)
            return bytearray()
        self._pdu_type, self._remaining, self._in_body = pdu_type, length, True
        return header

    def _limit(self, pdu_type: int) -> int:
        if pdu_type == P_DATA_TF and self._requested:
            return int(self._assoc.acceptor.maximum_length or MAX_REQUEST_PDU)
        return MAX_REQUEST_PDU

    def _read(self, size: int) -> bytearray:
        """size bytes, or fewer if the peer closed or the deadline passed."""
        buffer = bytearray(size)
        view = memoryview(buffer)
        sock = self._transport.socket
        got = 0
        while got < size:
            left = self._deadline - time.monotonic()
            if left <= 0:
                self.refuse(self._late(), reason=0)
                break
            try:
                sock.settimeout(left)
                count = sock.recv_into(view[got:], min(size - got, _CHUNK))
            except (TimeoutError, BlockingIOError):
                continue  # the deadline decides
            except OSError:
                break
            if count == 0:
                break
            got += count
        with contextlib.suppress(OSError):
            sock.settimeout(self._timeout)
        view.release()
        del buffer[got:]
        return buffer

    def _late(self) -> str:
        if not self._requested:
            return "no complete association request in time"
        return f"a PDU took more than {self._pdu_timeout:g} s"

    def _context_problem(self, body: bytearray) -> str | None:
        """Each PDV item of a P-DATA-TF: 4-byte length, then its presentation context ID."""
        if not self._accepted:  # known once the association is accepted, before any data
            self._accepted = frozenset(cx.context_id for cx in self._assoc.accepted_contexts)
        position = 0
        while position + 5 <= len(body):
            (length,) = struct.unpack_from(">L", body, position)
            context = body[position + 4]
            if context not in self._accepted:
                return f"data on presentation context {context}, which was never accepted"
            position += 4 + length
        return None

    def refuse(self, why: str, *, reason: int) -> None:
        """Abort and close the connection; pynetdicom then ends the association."""
        log.warning("closing the connection from %s: %s", self._peer, why)
        close(self._transport.socket, abort_reason=reason)


def close(sock: Any, *, abort_reason: int | None = None) -> None:
    """Close a peer's connection (optionally saying A-ABORT first) from any thread."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        if abort_reason is not None:
            sock.settimeout(1)
            sock.sendall(_ABORT % abort_reason)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
