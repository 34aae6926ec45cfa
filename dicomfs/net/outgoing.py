"""C-STORE as the sender, over our own wire: the sub-operations of a retrieval.

C-GET sends them on the requester's own association, C-MOVE on one dicomfs opens to
the destination (requester.py). An instance goes as it is stored: its data set is
read from its file, past the Part 10 header, and sent in P-DATA-TFs as long as the
peer takes. It is converted only when the peer accepted its SOP class in no context
of its stored transfer syntax: then to an uncompressed one, if pydicom can decode
it; else the sub-operation fails, saying why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import encode

from ..dicom.header import data_set_start
from ..lines import one_line
from ..store import files as store_files
from ..store.index.query import Retrievable
from . import commands, wire

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)  # the fallbacks, best first
_WHOLE = 4 << 20  # an instance up to this size is read whole; a larger one as it is sent
REASON_LIMIT = 200  # characters of a reason, in the log and the audit record


@dataclasses.dataclass(frozen=True, slots=True)
class Offer:
    """A presentation context the peer accepted for us to send instances on."""

    context_id: int
    sop_class: str
    syntax: str


def choose(offers: Sequence[Offer], sop_class: str, syntax: str) -> Offer | None:
    """The context to send an instance of this class and stored syntax on: one of
    that syntax, else an uncompressed one; None if the peer accepted neither."""
    mine = [offer for offer in offers if offer.sop_class == sop_class]
    for wanted in (syntax, *UNCOMPRESSED):
        for offer in mine:
            if offer.syntax == wanted:
                return offer
    return None


class Unsendable(Exception):
    """This instance cannot be sent (the message says why): a failed sub-operation."""


class Vanished(Unsendable):
    """Its file has gone from the store behind the index."""


@dataclasses.dataclass
class Payload:
    """An instance's data set, ready to send: `data` (read whole, or converted), or
    `size` bytes of the open file from `offset`."""

    fd: int
    offset: int = 0
    size: int = 0
    data: bytes | memoryview | None = None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def payload(root: int, item: Retrievable, offer: Offer) -> Payload:
    """What to send of an instance on this context. root: the store's directory,
    below which its file is opened, never through a symlink."""
    try:
        fd = store_files.open_beneath(root, item.path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Vanished(f"its file {item.path} has gone from the store") from None
    except OSError as exc:
        raise Unsendable(f"its file {item.path} cannot be opened: {exc.strerror}") from None
    sent = Payload(fd)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, min(size, _WHOLE), 0)  # most instances whole, in one read
        located = data_set_start(head)
        if located is None or located[1] != offer.syntax:
            sent.data = _converted(fd, offer.syntax, item)
        elif size <= _WHOLE:
            sent.data = memoryview(head)[located[0] :]
        else:
            sent.offset, sent.size = located[0], size - located[0]
    except OSError as exc:
        sent.close()
        raise Unsendable(f"its file {item.path} cannot be read: {exc.strerror}") from None
    except BaseException:
        sent.close()
        raise
    return sent


def _converted(fd: int, syntax: str, item: Retrievable) -> bytes:
    """The instance's data set in `syntax` (an uncompressed little-endian one),
    decompressed first if pydicom can decode it. A big-endian one is not converted:
    its pixel data would need its bytes swapped, which pydicom does not do when it
    writes another byte order."""
    stored = syntax_name(item.transfer_syntax)
    target = UID(syntax)
    try:
        with os.fdopen(os.dup(fd), "rb") as file:
            dataset = dcmread(file, force=True)
        if not dataset.original_encoding[1]:
            raise Unsendable(
                "stored big endian, which the peer does not take; dicomfs does not swap "
                "the byte order of pixel data"
            )
        source = getattr(dataset, "file_meta", {}).get("TransferSyntaxUID")
        if source is not None and UID(source).is_compressed:
            dataset.decompress()
        encoded = encode(dataset, target.is_implicit_VR, True)
    except Unsendable:
        raise
    except Exception as exc:  # pydicom says why: no decoder for it, a damaged file
        raise Unsendable(
            f"stored as {stored}, which the peer does not take, and it cannot be "
            f"converted to {target.name} here: {one_line(exc, REASON_LIMIT)}"
        ) from None
    if encoded is None:
        raise Unsendable(f"it cannot be encoded as {target.name}")
    return encoded


def syntax_name(uid: str) -> str:
    """A stored transfer syntax's name; a file without a Part 10 header has none."""
    if is_transfer_syntax(uid):
        return UID(uid).name
    return "no known transfer syntax (a file without a Part 10 header)"


def is_transfer_syntax(uid: str) -> bool:
    """Whether the index's transfer syntax of an instance is one ('' without a Part 10
    header)."""
    try:
        return UID(uid).is_transfer_syntax
    except ValueError:
        return False


@dataclasses.dataclass
class Prepared:
    """An instance ready to go: its context, its data, its message ID and, unless it
    is too large to hold, its whole message encoded."""

    offer: Offer
    payload: Payload
    message_id: int
    request: bytes  # the C-STORE-RQ's command set
    message: bytearray | None  # with its data set, in P-DATA-TFs


def prepare(
    offers: Sequence[Offer], root: int, item: Retrievable, message_id: int, max_pdu: int,
    move_originator: tuple[str, int] = ("", 0),
) -> Prepared:  # fmt: skip
    """An instance's C-STORE-RQ and data set, read and encoded; Unsendable if the
    peer takes it in no context, or its file cannot be read or converted."""
    offer = choose(offers, item.sop_class, item.transfer_syntax)
    if offer is None:
        raise Unsendable(
            f"the peer took {UID(item.sop_class).name} in no context of "
            f"{syntax_name(item.transfer_syntax)} nor of an uncompressed little-endian "
            "syntax (or did not take the SCP role for it)"
        )
    sent = payload(root, item, offer)
    request = commands.store_request(
        message_id, item.sop_class, item.sop_uid, move_originator=move_originator[0],
        move_originator_id=move_originator[1],
    )  # fmt: skip
    message = None
    if sent.data is not None:
        message = wire.encode_message(offer.context_id, request, max_pdu, sent.data)
    return Prepared(offer, sent, message_id, request, message)


def send(connection: wire.Connection, ready: Prepared, max_pdu: int) -> None:
    """The C-STORE-RQ of a prepared instance; its response is read by the caller."""
    if ready.message is not None:
        connection.send(ready.message)
        return
    file = (ready.payload.fd, ready.payload.offset, ready.payload.size)
    connection.send_message(ready.offer.context_id, ready.request, max_pdu, file=file)


class CommandReader:
    """Reads the command sets a peer sends while we answer it: the responses to our
    C-STORE-RQs, a C-CANCEL-RQ. A data set, or anything but P-DATA, is out of turn:
    A-ABORT, and Closed."""

    def __init__(self, connection: wire.Connection, limit: int, timeout: float) -> None:
        self._connection = connection
        self._limit = limit
        self._timeout = timeout
        self._buffer = bytearray()
        self._command = bytearray()
        self._ready: list[commands.Request] = []

    def next(self) -> commands.Request:
        """The next command set, waiting at most the timeout for it."""
        while not self._ready:
            self._read()
        return self._ready.pop(0)

    def _read(self) -> None:
        connection = self._connection
        pdu_type, body = connection.read_pdu(
            self._buffer, self._limit, wait=self._timeout, take=self._timeout
        )
        wire.expect_p_data(connection, pdu_type, "the peer aborted the association")
        try:
            for _, control, data in wire.pdvs(body):
                if not control & wire.COMMAND:
                    connection.abort(wire.UNEXPECTED_PDU)
                    raise wire.Closed("a data set out of turn")
                self._command += data
                if len(self._command) > wire.MAX_COMMAND:
                    connection.abort(wire.INVALID_PARAMETER)
                    raise wire.Closed(f"a command set longer than {wire.MAX_COMMAND} bytes")
                if control & wire.LAST:
                    self._ready.append(commands.read(self._command))
                    self._command.clear()
        except ValueError as exc:
            connection.abort(wire.INVALID_PARAMETER)
            raise wire.Closed(f"a command that cannot be read: {exc}") from None


class Delivery:
    """A retrieval's instances sent as C-STORE sub-operations over one connection:
    the requester's own (C-GET) or one to the destination (C-MOVE). Each waits for
    its response. A C-CANCEL-RQ of `cancels` (a C-GET's message ID) read meanwhile
    is remembered for cancelled(). With `lost_fails` (a C-MOVE's own association to
    its destination), the connection's end fails the sub-operation under way and
    every later one; else (a C-GET's) it ends the association, as Closed."""

    def __init__(
        self, connection: wire.Connection, offers: Sequence[Offer], root: int, max_pdu: int,
        *, timeout: float, gate: Callable[[], AbstractContextManager[None]] = nullcontext,
        cancels: int | None = None, move_originator: str = "", move_originator_id: int = 0,
        lost_fails: bool = False,
    ) -> None:  # fmt: skip
        self._connection = connection
        self._offers = offers
        self._root = root
        self._max_pdu = max_pdu
        self._gate = gate  # held while sending: the association may be shut meanwhile
        self._cancels = cancels
        self._originator = (move_originator, move_originator_id)
        self._responses = CommandReader(connection, wire.MAX_RESPONSE_PDU, timeout)
        self._message_id = 0
        self._cancel_seen = False
        self._lost_fails = lost_fails
        self._lost = ""  # why the connection ended, once it has
        # the next instance, read while the peer stores this one (or why it cannot be)
        self._ahead: tuple[Retrievable, Prepared | Unsendable] | None = None

    def deliver(self, item: Retrievable, upcoming: Retrievable | None = None) -> int:
        """Send one instance; the status its receiver answered. The upcoming one, if
        given, is opened and read while the receiver stores this one: off the path
        from one response to the next instance."""
        if self._lost:
            raise Unsendable(self._lost)
        try:
            return self._deliver(item, upcoming)
        except wire.Closed as exc:
            if not self._lost_fails:
                raise
            self._lost = f"the association with the destination ended ({exc or 'closed'})"
            raise Unsendable(self._lost) from None

    @property
    def lost(self) -> bool:
        """Whether the connection has ended under it."""
        return bool(self._lost)

    def close(self) -> None:
        """Release what was read ahead and not sent (a cancel, an error)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and isinstance(ahead[1], Prepared):
            ahead[1].payload.close()

    def _deliver(self, item: Retrievable, upcoming: Retrievable | None) -> int:
        ready = self._prepared(item)
        try:
            with self._gate():
                send(self._connection, ready, self._max_pdu)
        finally:
            ready.payload.close()
        if upcoming is not None:
            try:
                self._ahead = (upcoming, self._prepare(upcoming))
            except Unsendable as exc:  # its turn says so
                self._ahead = (upcoming, exc)
        while True:
            command = self._responses.next()
            if command.field == commands.C_STORE_RSP and command.responding_to == ready.message_id:
                return command.status
            self._other(command)

    def _prepared(self, item: Retrievable) -> Prepared:
        """The instance, ready to go: read ahead already, or now."""
        ahead = self._ahead
        if ahead is None or ahead[0] is not item:
            self.close()
            return self._prepare(item)
        self._ahead = None
        if isinstance(ahead[1], Unsendable):
            raise ahead[1]
        return ahead[1]

    def _prepare(self, item: Retrievable) -> Prepared:
        self._message_id = self._message_id % 0xFFFF + 1
        return prepare(self._offers, self._root, item, self._message_id, self._max_pdu,
                       self._originator)  # fmt: skip

    def cancelled(self) -> bool:
        """Whether a C-CANCEL has come. It is read while a response is awaited: one
        that comes just after a response is read with the next, so at most one more
        instance goes (and no system call a sub-operation asks whether one came)."""
        return self._cancel_seen

    def _other(self, command: commands.Request) -> None:
        if command.field == commands.C_CANCEL_RQ and command.responding_to == self._cancels:
            self._cancel_seen = True
            return
        self._connection.abort(wire.UNEXPECTED_PDU)
        raise wire.Closed(f"a command (0x{command.field:04X}) while instances were sent to it")
