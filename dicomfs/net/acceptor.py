"""One association as its acceptor (PS3.8, PS3.7): negotiation, then C-ECHO, C-STORE,
C-FIND, C-GET and C-MOVE.

Each association has a thread of its own that reads its peer's PDUs whole, with
blocking reads and deadlines (wire.py), and writes a C-STORE's data set fragments
straight into a spool file in the store's tmp directory as they come; the Host (the
receiver) then stores and indexes the complete file before the peer hears the
status. A C-FIND's matches and a retrieval's sub-operations are sent by this thread
too, one at a time, and it reads a C-CANCEL between two of them. The association
request is read and the accept encoded with pynetdicom's
PDU classes and its presentation context negotiation; everything after is ours:
pynetdicom's own association machinery polls its socket and builds a pydicom
dataset for every command, which halves what one core receives.

Anything the peer sends out of turn (an unexpected PDU, data on a context never
accepted, a malformed command) is answered with A-ABORT and a log line; a half-
received instance leaves no file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from pydicom.uid import UID, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from .. import config
from ..dicom import meta
from ..store import files as store_files
from . import commands, dimse, outgoing, queries, requester, retrieve, spool, wire
from .wire import Timeouts

log = logging.getLogger(__name__)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # the DICOM application context (PS3.7 A.2.1)
MAX_REQUEST_PDU = 256 * 1024  # 128 contexts of a dozen transfer syntaxes each: ~100 KB
_WRITE_CHUNK = 1 << 20
# A query's identifier is a few kilobytes: one that keeps growing is a peer filling memory.
MAX_IDENTIFIER = 1024 * 1024
QUERYING = (commands.C_FIND_RQ, *commands.RETRIEVALS)  # requests with an identifier
ARTIM = 2.0  # seconds a rejected peer has to close the connection first (PS3.8 9.1.5)


class Host(Protocol):
    """What an association asks of the receiver it belongs to."""

    def admit(self, association: Association) -> dimse.Rejection | None:
        """Whether to accept its request (its AE titles and user are known now)."""

    def instance(
        self, association: Association, request: commands.Request, spooled: Spooled
    ) -> tuple[int, str]:
        """Store a complete instance: (status, error comment) for its sender. With
        Success its file has been moved into the store; otherwise it is removed."""

    def find(
        self, association: Association, request: commands.Request, identifier: bytes, syntax: str
    ) -> Iterator[bytes]:
        """The matches of a C-FIND's identifier, each encoded in syntax; raises
        queries.Refused to answer a failure status instead."""

    def retrieval(
        self, association: Association, request: commands.Request, identifier: bytes, syntax: str
    ) -> retrieve.Job:
        """What a C-MOVE or C-GET sends, and to where; raises queries.Refused to answer
        a failure status instead. The caller ends it with retrieved()."""

    def retrieved(
        self, association: Association, job: retrieve.Job, progress: retrieve.Progress
    ) -> None:
        """A retrieval is over, whole or not (the association may have ended): record
        what it sent, and release what the job holds."""

    def ended(self, association: Association) -> None:
        """Its thread is about to end: nothing more comes from it."""


class Spooled:
    """A C-STORE data set being written to a file in the store's tmp directory, as
    a Part 10 file. A failed write (a full disk) is kept, not raised: the instance
    gets a failure status and the association goes on."""

    def __init__(
        self, file: tuple[int, str] | OSError, request: commands.Request, syntax: str
    ) -> None:
        """file: the one to write (SpoolFiles.take), or why there is none."""
        self.fd, self.path = (-1, "") if isinstance(file, OSError) else file
        self.error = file if isinstance(file, OSError) else None
        self.head = bytearray()  # the file's first bytes: its header is read from here
        file_meta = spool.file_meta(
            sop_class_uid=request.sop_class,
            sop_instance_uid=request.sop_instance,
            transfer_syntax=syntax,
        )
        self.write(b"\x00" * 128 + b"DICM" + file_meta)

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if len(self.head) < meta.FIRST_READ:
            self.head += view[: meta.FIRST_READ - len(self.head)]
        while view and self.error is None:
            try:
                view = view[os.write(self.fd, view[:_WRITE_CHUNK]) :]
            except OSError as exc:
                self.error = exc

    def sync(self) -> None:
        os.fsync(self.fd)

    def discard(self, *, stored: bool = False) -> None:
        """Close it, and remove the file unless it was stored (moved into the store)."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if not stored:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class SpoolFiles:
    """The files an association's instances are spooled into.

    Making a file waits for the journal when the disk has just been flushed (up to
    a millisecond): the next file is made once an instance has been answered, while
    its sender reads and sends the next one, off the path from an instance's last
    byte to its status. (Made by another thread, it costs more than it saves.)"""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._next: tuple[int, str] | None = None

    def take(self) -> tuple[int, str] | OSError:
        """A file for the next instance, or why there is none (a full disk)."""
        made, self._next = self._next, None
        return made or self._make()

    def prepare(self) -> None:
        if self._next is None:
            made = self._make()
            self._next = made if not isinstance(made, OSError) else None  # take() tries again

    def close(self) -> None:
        if self._next is not None:
            fd, path = self._next
            self._next = None
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _make(self) -> tuple[int, str] | OSError:
        try:
            return store_files.create_temp(self._directory, "rx-", ".dcm")
        except OSError as exc:
            return exc


class Association:
    def __init__(
        self,
        sock: socket.socket,
        address: str,
        host: Host,
        *,
        supported: Sequence[PresentationContext],
        tmp_dir: Path,
        timeouts: Timeouts,
        max_pdu: int,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address = address
        self.calling_aet = self.called_aet = ""
        self.user: str | None = None
        self.began = time.time()  # for the log and dicomfs status
        self.accepted = False
        self.ending = ""  # how it ended, for the log: released, aborted by the peer, ...
        self._raw = sock
        self._host = host
        self._supported = supported
        self._tmp_dir = tmp_dir
        self._timeouts = timeouts
        self._max_pdu = max_pdu
        self._tls = tls
        self._started = time.monotonic()
        self._contexts: dict[int, str] = {}  # accepted: context ID -> transfer syntax
        self._offers: list[outgoing.Offer] = []  # where the peer takes C-STOREs (C-GET)
        self._peer_max_pdu = 0  # the longest PDU the peer takes (0: no limit)
        self._spooling: Spooled | None = None  # the data set being received, if any
        self._connection: wire.Connection | None = None
        self._outbound: wire.Connection | None = None  # a C-MOVE's, to its destination
        self._lock = threading.Lock()  # one sender at a time; nothing once shut
        self._shut = False
        self._thread = threading.Thread(
            target=self._run, name=f"association-{address}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def shut(self, *, say_abort: bool) -> None:
        """From any thread: answer nothing more, and close the connection (saying
        A-ABORT first if say_abort). The association's thread finishes the instance
        it is storing, if any, without answering it."""
        with self._lock:
            self._shut = True
            connection, outbound = self._connection, self._outbound
        if outbound is not None:
            outbound.close()  # wakes a wait for the destination's response
        sock = connection.sock if connection else self._raw
        # One TLS connection must not be written by two threads at once.
        if say_abort and connection is not None and not isinstance(sock, ssl.SSLSocket):
            connection.abort(wire.NOT_SPECIFIED)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked read

    # --- the association's thread -----------------------------------------------------

    def _run(self) -> None:
        files = SpoolFiles(self._tmp_dir)
        try:
            connection = self._connect()
            if connection is not None:
                try:
                    if self._negotiate(connection):
                        self._serve(connection, files)
                except wire.Closed as exc:
                    self.ending = self._why_closed(str(exc))
                    if str(exc) and not self.accepted:  # an accepted one says it at its end
                        log.warning("closing the connection from %s: %s", self.address, exc)
                except Exception:  # a defect of ours: this association ends, the others go on
                    log.exception("the association from %s failed", self.address)
                    self.ending = "failed (a defect of dicomfs: see the traceback above)"
                    connection.abort(wire.NOT_SPECIFIED)
                finally:
                    connection.close()
        finally:
            if self._spooling is not None:  # half-received when the association ended
                self._spooling.discard()
            files.close()
            self._host.ended(self)

    def _why_closed(self, reason: str) -> str:
        if self._shut:
            return "aborted: dicomfs is stopping"
        if reason.startswith("aborted"):
            return reason
        return f"closed: {reason}" if reason else "the peer closed the connection"

    def _connect(self) -> wire.Connection | None:
        sock = self._raw
        if self._tls is not None:
            try:
                sock.settimeout(self._request_left())
                sock = self._tls.wrap_socket(sock, server_side=True)
            except (OSError, ValueError) as exc:
                log.warning(
                    "closing the connection from %s: no TLS handshake (%s)", self.address, exc
                )
                with contextlib.suppress(OSError):
                    self._raw.close()
                return None
        connection = wire.Connection(sock)
        with self._lock:
            self._connection = connection
            shut = self._shut
        if shut:
            connection.close()
            return None
        return connection

    def _request_left(self) -> float:
        return max(0.0, self._started + self._timeouts.request - time.monotonic())

    def _negotiate(self, connection: wire.Connection) -> bool:
        """Read the request, and accept or reject it; True once accepted."""
        buffer = bytearray()
        try:
            left = self._request_left()
            pdu_type, body = connection.read_pdu(buffer, MAX_REQUEST_PDU, wait=left, take=left)
        except wire.TimedOut:
            raise wire.Closed("no complete association request in time") from None
        if pdu_type != wire.ASSOCIATE_RQ:
            connection.abort(wire.UNEXPECTED_PDU)
            raise wire.Closed(f"a PDU of type 0x{pdu_type:02X} before an association request")
        request = A_ASSOCIATE_RQ()
        try:
            request.decode(wire.HEADER.pack(pdu_type, len(body)) + bytes(body))
            primitive = request.to_primitive()
        except Exception as exc:
            connection.abort(wire.INVALID_PARAMETER)
            why = str(exc) or type(exc).__name__
            raise wire.Closed(f"an association request that cannot be read ({why})") from None
        self.calling_aet = str(primitive.calling_ae_title or "").strip()
        self.called_aet = str(primitive.called_ae_title or "").strip()
        items = primitive.user_information
        identity = next((i for i in items if isinstance(i, UserIdentityNegotiation)), None)
        self._peer_max_pdu = next(
            (i.maximum_length_received or 0 for i in items
             if isinstance(i, MaximumLengthNotification)), 0
        )  # fmt: skip
        self.user = dimse.username(identity.primary_field) if identity is not None else None
        if str(primitive.application_context_name) != APPLICATION_CONTEXT:
            rejection: dimse.Rejection | None = dimse.APPLICATION_CONTEXT_NOT_SUPPORTED
        else:
            rejection = self._host.admit(self)
        if rejection is not None:
            connection.send_pdu(
                wire.ASSOCIATE_RJ, bytes([0, rejection.result, rejection.source, rejection.reason])
            )
            connection.await_close(ARTIM)
            return False
        accept = self._accept(primitive)
        with self._lock:
            if self._shut:
                return False
            connection.send(accept)
        self.accepted = True
        return True

    def _accept(self, request: A_ASSOCIATE) -> bytes:
        roles = {
            UID(str(item.sop_class_uid)): (item.scu_role, item.scp_role)
            for item in request.user_information
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
        }
        results, role_items = negotiate_as_acceptor(
            request.presentation_context_definition_list, list(self._supported), roles or None
        )
        _syntaxes_to_send_in(results, request.presentation_context_definition_list,
                             self._supported)  # fmt: skip
        accepted = [cx for cx in results if cx.result == 0x00 and cx.context_id is not None]
        self._contexts = {cx.context_id or 0: str(cx.transfer_syntax[0]) for cx in accepted}
        self._offers = [
            outgoing.Offer(cx.context_id or 0, str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in accepted
            if cx.as_scu  # the peer took the SCP role for it (PS3.4 C.4.3.3)
        ]
        accept = A_ASSOCIATE()
        accept.application_context_name = APPLICATION_CONTEXT
        accept.calling_ae_title = request.calling_ae_title
        accept.called_ae_title = request.called_ae_title
        accept.result, accept.result_source = 0x00, 0x01
        accept.presentation_context_definition_results_list = results
        maximum = MaximumLengthNotification()
        maximum.maximum_length_received = self._max_pdu
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
        accept.user_information = [maximum, implementation, version, *role_items]
        pdu = A_ASSOCIATE_AC()
        pdu.from_primitive(accept)
        return bytes(pdu.encode())

    def _serve(self, connection: wire.Connection, files: SpoolFiles) -> None:
        """P-DATA until the peer releases or aborts the association."""
        buffer = bytearray(self._max_pdu + wire.HEADER.size)  # never grown: views of it live on
        command = bytearray()
        identifier = bytearray()  # a C-FIND's or retrieval's, read whole before it is answered
        request: commands.Request | None = None
        context_of_request = 0
        timeouts = self._timeouts
        while True:
            pdu_type, body = connection.read_pdu(
                buffer, self._max_pdu, wait=timeouts.idle, take=timeouts.pdu
            )
            if pdu_type == wire.RELEASE_RQ:
                with self._lock:
                    if not self._shut:
                        connection.send_pdu(wire.RELEASE_RP, bytes(4))
                self.ending = "released"
                return
            wire.expect_p_data(connection, pdu_type, aborted="aborted by the peer")
            try:
                items = wire.pdvs(body)
            except ValueError as exc:
                connection.abort(wire.INVALID_PARAMETER)
                raise wire.Closed(str(exc)) from None
            for context_id, control, data in items:
                if context_id not in self._contexts:
                    connection.abort(wire.INVALID_PARAMETER)
                    raise wire.Closed(
                        f"data on presentation context {context_id}, which was never accepted"
                    )
                if control & wire.COMMAND:
                    if request is not None:
                        connection.abort(wire.UNEXPECTED_PDU)
                        raise wire.Closed("a command in the middle of a data set")
                    command += data
                    if len(command) > wire.MAX_COMMAND:
                        connection.abort(wire.INVALID_PARAMETER)
                        raise wire.Closed(f"a command set longer than {wire.MAX_COMMAND} bytes")
                    if not control & wire.LAST:
                        continue
                    request, context_of_request = self._request(connection, command), context_id
                    command.clear()
                    if request.field == commands.C_CANCEL_RQ:
                        request = None  # what it cancels has been answered whole already
                    elif request.field in QUERYING:
                        identifier.clear()
                    elif request.has_data_set:
                        syntax = self._contexts[context_id]
                        self._spooling = Spooled(files.take(), request, syntax)
                    else:
                        self._answer(connection, context_id, request, None)
                        request = None
                    continue
                if request is None or context_id != context_of_request:
                    connection.abort(wire.UNEXPECTED_PDU)
                    raise wire.Closed("a data set without its command")
                if request.field in QUERYING:
                    identifier += data
                    if len(identifier) > MAX_IDENTIFIER:
                        connection.abort(wire.INVALID_PARAMETER)
                        raise wire.Closed(f"an identifier longer than {MAX_IDENTIFIER} bytes")
                    if control & wire.LAST:
                        if request.field == commands.C_FIND_RQ:
                            self._find(connection, context_id, request, bytes(identifier))
                        else:
                            self._retrieve(connection, context_id, request, bytes(identifier))
                        request = None
                    continue
                spooling = self._spooling
                if spooling is None:
                    connection.abort(wire.UNEXPECTED_PDU)
                    raise wire.Closed("a data set without its command")
                spooling.write(data)
                if control & wire.LAST:
                    self._spooling = None  # _answer stores or removes it
                    self._answer(connection, context_id, request, spooling)
                    request = None
                    files.prepare()

    def _request(self, connection: wire.Connection, command: bytes | bytearray) -> commands.Request:
        try:
            request = commands.read(command)
        except ValueError as exc:
            connection.abort(wire.INVALID_PARAMETER)
            raise wire.Closed(f"a command that cannot be read: {exc}") from None
        offered = (commands.C_STORE_RQ, commands.C_ECHO_RQ, commands.C_CANCEL_RQ, *QUERYING)
        if request.field not in offered:
            connection.abort(wire.UNEXPECTED_PDU)
            raise wire.Closed(f"a command (0x{request.field:04X}) this node does not offer")
        with_data = request.field in (commands.C_STORE_RQ, *QUERYING)
        if with_data != request.has_data_set:
            connection.abort(wire.INVALID_PARAMETER)
            raise wire.Closed(
                "a C-STORE, C-FIND, C-GET or C-MOVE without a data set, or another with one"
            )
        return request

    def _find(
        self, connection: wire.Connection, context_id: int, request: commands.Request,
        identifier: bytes,
    ) -> None:  # fmt: skip
        """Each match as it is found (pending), then the final status; a C-CANCEL from
        the requester ends the matches early."""
        status, comment = dimse.SUCCESS, ""
        try:
            found = self._host.find(self, request, identifier, self._contexts[context_id])
            for match in found:
                if self._cancel_asked(connection, request):
                    status = dimse.CANCEL
                    break
                pending = commands.response(request, dimse.PENDING, data_set=True)
                with self._sending():
                    connection.send_message(context_id, pending, self._peer_max_pdu, data=match)
        except queries.Refused as exc:
            status, comment = exc.status, str(exc)
        final = commands.response(request, status, comment)
        with self._sending():
            connection.send_command(context_id, final)

    def _retrieve(
        self, connection: wire.Connection, context_id: int, request: commands.Request,
        identifier: bytes,
    ) -> None:  # fmt: skip
        """A C-GET's or C-MOVE's sub-operations, a pending response after each, and the
        final status with the UIDs of the instances that failed."""
        syntax = self._contexts[context_id]
        implicit, little = syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian

        def respond(
            status: int, progress: retrieve.Progress | None, comment: str = "", hold: bool = False
        ) -> None:
            final = status != dimse.PENDING
            failed = None
            if final and progress is not None:
                failed = retrieve.failed_identifier(progress, implicit, little)
            counts = progress.counts(final=final) if progress is not None else None
            response = commands.response(
                request, status, comment, data_set=failed is not None, counts=counts
            )
            with self._sending():
                connection.send_message(
                    context_id, response, self._peer_max_pdu, data=failed, hold=hold
                )

        try:
            job = self._host.retrieval(self, request, identifier, syntax)
        except queries.Refused as exc:
            respond(exc.status, None, str(exc))
            return
        progress = retrieve.Progress(remaining=len(job.items))
        try:
            if job.destination is None:  # C-GET: to the requester, on this association
                delivery = outgoing.Delivery(
                    connection, self._offers, job.root, self._peer_max_pdu,
                    timeout=self._timeouts.idle, gate=self._sending, cancels=request.message_id,
                )  # fmt: skip
                # Each pending response goes ahead of the next instance, in one write.
                pending = lambda p: respond(dimse.PENDING, p, hold=True)  # noqa: E731
                try:
                    retrieve.run(job, progress, delivery.deliver, pending, delivery.cancelled)
                finally:
                    delivery.close()
            else:
                self._move(connection, job, progress, request, respond)
        finally:
            self._host.retrieved(self, job, progress)
        respond(progress.status(), progress, progress.comment)

    def _move(
        self, connection: wire.Connection, job: retrieve.Job, progress: retrieve.Progress,
        request: commands.Request, respond: Callable[[int, retrieve.Progress], None],
    ) -> None:  # fmt: skip
        """A C-MOVE's sub-operations, over an association to its destination."""
        assert job.destination is not None
        wanted = requester.contexts_for((i.sop_class, i.transfer_syntax) for i in job.items)
        try:
            outbound = requester.associate(job.destination, job.aet, wanted)
        except requester.Unreachable as exc:
            log.warning("C-MOVE from %s@%s: %s", self.calling_aet, self.address, exc)
            progress.unable(job, str(exc))
            return
        with self._lock:
            self._outbound = outbound.connection
            shut = self._shut
        if shut:
            outbound.connection.close()
            raise wire.Closed("")
        with outbound:
            delivery = outgoing.Delivery(
                outbound.connection, outbound.offers, job.root, outbound.max_pdu,
                timeout=config.PEER_TIMEOUT, move_originator=self.calling_aet,
                move_originator_id=request.message_id, lost_fails=True,
            )  # fmt: skip
            try:
                retrieve.run(job, progress, delivery.deliver,
                             lambda p: respond(dimse.PENDING, p),
                             lambda: self._cancel_asked(connection, request))  # fmt: skip
            finally:
                delivery.close()
                outbound.lost = delivery.lost
                with self._lock:
                    self._outbound = None

    @contextlib.contextmanager
    def _sending(self) -> Iterator[None]:
        """Held while sending to the peer; Closed once the association is shut."""
        with self._lock:
            if self._shut:
                raise wire.Closed("")
            yield

    def _cancel_asked(self, connection: wire.Connection, request: commands.Request) -> bool:
        """Whether the requester has cancelled the request being answered (reading
        only what has come already)."""
        return connection.waiting() and self._cancelled(connection, request)

    def _cancelled(self, connection: wire.Connection, request: commands.Request) -> bool:
        """Read what the requester sent while its C-FIND or C-MOVE was answered: a
        C-CANCEL of it (True), or the end of the association."""
        command = outgoing.CommandReader(connection, self._max_pdu, self._timeouts.pdu).next()
        if command.field != commands.C_CANCEL_RQ:
            connection.abort(wire.UNEXPECTED_PDU)
            raise wire.Closed("a request while another was answered (no asynchronous operations)")
        return command.responding_to == request.message_id

    def _answer(
        self,
        connection: wire.Connection,
        context_id: int,
        request: commands.Request,
        spooled: Spooled | None,
    ) -> None:
        status, comment = dimse.SUCCESS, ""  # a C-ECHO's
        if spooled is not None:
            status = dimse.PROCESSING_FAILURE  # should the host raise
            try:
                status, comment = self._host.instance(self, request, spooled)
            finally:
                spooled.discard(stored=status == dimse.SUCCESS)
        response = commands.response(request, status, comment)
        with self._lock:
            if not self._shut:
                connection.send_command(context_id, response)


def _syntaxes_to_send_in(
    results: list[PresentationContext], requested: list[PresentationContext],
    supported: Sequence[PresentationContext],
) -> None:  # fmt: skip
    """In each context where we send instances (a C-GET's), accept an uncompressed
    little-endian transfer syntax if the requester offers one (explicit VR first,
    the syntax most instances are stored in), else its first that we support. One
    context carries every instance of its SOP class, and an uncompressed syntax
    carries them all: those stored so as they are, the others decompressed where
    pydicom can; a compressed one would carry only those stored in it (dcmtk's
    getscu offers JPEG and uncompressed in one context)."""
    offered = {cx.context_id: cx.transfer_syntax for cx in requested}
    ours = {cx.abstract_syntax: cx.transfer_syntax for cx in supported}
    for cx in results:
        if cx.result != 0x00 or not cx.as_scu:
            continue
        mine = [s for s in offered.get(cx.context_id, []) if s in ours.get(cx.abstract_syntax, [])]
        uncompressed = [s for s in outgoing.UNCOMPRESSED if s in mine]  # explicit VR first
        if mine:
            cx.transfer_syntax = [(uncompressed or mine)[0]]
