"""An association dicomfs opens to a C-MOVE's destination, to send it instances.

The request and the answer are encoded and read with pynetdicom's PDU classes, as
the acceptor's are; the instances then go over our own wire (outgoing.py), as a
C-GET's do. The presentation contexts asked for are each SOP class in each transfer
syntax its instances are stored in, and in the uncompressed ones as a fallback.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable

from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext

from .. import config
from . import wire
from .outgoing import UNCOMPRESSED, Offer, is_transfer_syntax
from .remotes import Remote

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
MAX_CONTEXTS = 128  # an association's most (context IDs 1, 3, ... 255)
MAX_PDU = 1 << 20  # the longest PDU we take (the destination only sends responses)


class Unreachable(Exception):
    """No association with the destination (the message says why)."""


def contexts_for(stored: Iterable[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """The contexts to ask for, to send instances of these (SOP class, stored transfer
    syntax) pairs: each pair's, then each class's uncompressed one; at most
    MAX_CONTEXTS (instances of what does not fit fail as their sub-operations)."""
    pairs = sorted(set(stored))
    # A file without a Part 10 header has no syntax of its own: it goes converted.
    wanted = [(sop_class, [syntax]) for sop_class, syntax in pairs if is_transfer_syntax(syntax)]
    wanted += [(sop_class, list(UNCOMPRESSED)) for sop_class in sorted({c for c, _ in pairs})]
    return wanted[:MAX_CONTEXTS]


class Outbound:
    """An open association to a destination: its connection, the contexts it accepted
    and the longest PDU it takes. Use as a context manager: it is released at the
    end (aborted if the block raised)."""

    def __init__(self, connection: wire.Connection, offers: list[Offer], max_pdu: int) -> None:
        self.connection = connection
        self.offers = offers
        self.max_pdu = max_pdu
        self.lost = False  # the destination ended it: nothing to release, nobody to wait for

    def __enter__(self) -> Outbound:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None and not self.lost:
            self.release()
        elif not self.lost:
            self.connection.abort(wire.NOT_SPECIFIED)
        self.connection.close()

    def release(self) -> None:
        """A-RELEASE, waiting a while for the destination to say yes."""
        with contextlib.suppress(wire.Closed):
            self.connection.send_pdu(wire.RELEASE_RQ, bytes(4))
            buffer = bytearray()
            timeout = config.PEER_TIMEOUT
            while True:  # the responses it still owed us may come first
                pdu_type, _ = self.connection.read_pdu(buffer, MAX_PDU, wait=timeout, take=timeout)
                if pdu_type in (wire.RELEASE_RP, wire.ABORT):
                    return


def associate(remote: Remote, calling_aet: str, wanted: list[tuple[str, list[str]]]) -> Outbound:
    """Open an association to remote, asking for the wanted contexts; Unreachable if
    it cannot be reached, does not answer in time, or rejects the association."""
    timeout = config.PEER_TIMEOUT
    try:
        sock = socket.create_connection((remote.host, remote.port), timeout=timeout)
    except OSError as exc:
        raise Unreachable(f"cannot connect to {remote}: {exc.strerror or exc}") from None
    connection = wire.Connection(sock)
    try:
        requested = _requested(wanted)
        connection.send(_request(remote, calling_aet, requested))
        pdu_type, body = connection.read_pdu(bytearray(), MAX_PDU, wait=timeout, take=timeout)
        if pdu_type == wire.ASSOCIATE_RJ:
            result, source, reason = bytes(body[1:4])
            raise Unreachable(
                f"{remote} rejected the association (result {result}, source {source}, "
                f"reason {reason}): does it know our AE title {calling_aet!r}?"
            )
        if pdu_type != wire.ASSOCIATE_AC:
            raise Unreachable(f"{remote} answered a PDU of type 0x{pdu_type:02X}")
        accepted = A_ASSOCIATE_AC()
        accepted.decode(wire.HEADER.pack(pdu_type, len(body)) + bytes(body))
        answer = accepted.to_primitive()
    except wire.Closed as exc:
        connection.close()
        raise Unreachable(f"{remote} did not accept an association: {exc or 'closed'}") from None
    except Unreachable:
        connection.close()
        raise
    except Exception as exc:  # an answer pynetdicom cannot read
        connection.abort(wire.INVALID_PARAMETER)
        connection.close()
        raise Unreachable(f"{remote} answered what cannot be read ({exc})") from None
    classes = {int(cx.context_id or 0): str(cx.abstract_syntax) for cx in requested}
    offers = [
        Offer(int(cx.context_id), classes[int(cx.context_id)], str(cx.transfer_syntax[0]))
        for cx in answer.presentation_context_definition_results_list
        if cx.result == 0x00 and cx.context_id is not None and int(cx.context_id) in classes
    ]
    max_pdu = next(
        (int(item.maximum_length_received or 0) for item in answer.user_information
         if isinstance(item, MaximumLengthNotification)), 0
    )  # fmt: skip
    return Outbound(connection, offers, max_pdu)


def _requested(wanted: list[tuple[str, list[str]]]) -> list[PresentationContext]:
    contexts = []
    for number, (sop_class, syntaxes) in enumerate(wanted):
        context = PresentationContext()
        context.context_id = 2 * number + 1
        context.abstract_syntax = sop_class
        context.transfer_syntax = list[str | bytes | UID](syntaxes)
        contexts.append(context)
    return contexts


def _request(remote: Remote, calling_aet: str, contexts: list[PresentationContext]) -> bytes:
    request = A_ASSOCIATE()
    request.application_context_name = APPLICATION_CONTEXT
    request.calling_ae_title = calling_aet
    request.called_ae_title = remote.aet
    request.presentation_context_definition_list = contexts
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = MAX_PDU
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
    request.user_information = [maximum, implementation, version]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(request)
    return bytes(pdu.encode())
