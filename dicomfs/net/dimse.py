"""DICOM messages with pynetdicom: AE set-up, presentation contexts, statuses, C-STORE.

The one module that sets up pynetdicom's AEs and answers a C-STORE. The receiver
(C-STORE from scanners and PACS, and the instances a C-MOVE sends us) and the
puller (C-FIND, C-MOVE, C-GET) are thin users of it, and so is any other DICOM
service of dicomfs; each status and association rejection they send or read has
a name here, with what the standard says it means.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import ssl
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydicom import uid
from pydicom.dataset import Dataset
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    build_context,
    build_role,
)
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.status import QR_GET_SERVICE_CLASS_STATUS, QR_MOVE_SERVICE_CLASS_STATUS

from .. import config
from ..store import files as store_files
from ..store.index import Sender
from ..store.writer import IndexWriter
from . import ingest, spool
from .tcp import QuickAckSocket

log = logging.getLogger(__name__)

# --- statuses (PS3.7 Annex C; C-STORE PS3.4 B.2.3; C-FIND, C-MOVE, C-GET PS3.4 C.4) ------

SUCCESS = 0x0000
PENDING = 0xFF00  # a match (C-FIND) or sub-operations under way (C-MOVE, C-GET): more follow
PENDING_WITH_WARNING = 0xFF01  # a C-FIND match, some optional keys not supported
CANCEL = 0xFE00  # the requester cancelled what it asked (C-CANCEL)
SUB_OPERATIONS_FAILED = 0xB000  # warning: some sub-operations failed, the others succeeded
PROCESSING_FAILURE = 0x0110  # failure: an error of the side that answers, not of the request
SOP_CLASS_NOT_SUPPORTED = 0x0122  # refused: the service is not offered (to this AE title)
NOT_AUTHORIZED = 0x0124  # refused: the peer does not allow this AE title to do it
OUT_OF_RESOURCES = 0xA700  # refused: no room (a full disk) or no means to take it now
MOVE_DESTINATION_UNKNOWN = 0xA801  # refused: C-MOVE to an AE title the peer does not know
CANNOT_UNDERSTAND = 0xC210  # error: the dataset cannot be read as an instance
# Ranges of codes with one meaning, each code a detail of it.
OUT_OF_RESOURCES_ANY = range(0xA700, 0xA800)
IDENTIFIER_MISMATCH_ANY = range(0xA900, 0xAA00)  # the identifier does not match the SOP class
UNABLE_TO_PROCESS_ANY = range(0xC000, 0xD000)
GOING_ON = (SUCCESS, PENDING, SUB_OPERATIONS_FAILED)  # a retrieve that is not refused


def status_of(response: Dataset | None) -> int | None:
    """The status of a response; None when the peer went away (no response, or an
    empty one, as pynetdicom gives when the association is aborted)."""
    if response is None or "Status" not in response:
        return None
    return int(response.Status)


def meaning(status: int, service: str = "") -> str:
    """What the standard says a status means; service "move" or "get" for the codes
    that only those services define."""
    table = {"move": QR_MOVE_SERVICE_CLASS_STATUS, "get": QR_GET_SERVICE_CLASS_STATUS}
    if status in table.get(service, {}):
        return table[service][status][1]
    for codes, said in (
        (OUT_OF_RESOURCES_ANY, "refused: out of resources"),
        (IDENTIFIER_MISMATCH_ANY, "identifier does not match SOP class"),
        (UNABLE_TO_PROCESS_ANY, "unable to process"),
    ):
        if status in codes:
            return said
    return "a status the standard does not define"


# --- association rejections (A-ASSOCIATE-RJ, PS3.8 9.3.4) ---------------------------------


@dataclasses.dataclass(frozen=True)
class Rejection:
    result: int  # 1 permanent, 2 transient (the sender may try again later)
    source: int  # 1 the service user (us), 3 the service provider (presentation)
    reason: int  # per source


STOPPING = Rejection(0x02, 0x03, 0x01)  # transient, by the provider: temporary congestion
TOO_MANY = Rejection(0x02, 0x03, 0x02)  # transient, by the provider: local limit exceeded
CALLING_AET_NOT_RECOGNISED = Rejection(0x01, 0x01, 0x03)  # permanent, by the service user
NOT_ALLOWED = Rejection(0x01, 0x01, 0x01)  # permanent, by the service user: no reason given


APPLICATION_CONTEXT_NOT_SUPPORTED = Rejection(0x01, 0x01, 0x02)  # permanent, by the user


# --- AEs and their presentation contexts ---------------------------------------------------

FIND_MODEL = StudyRootQueryRetrieveInformationModelFind
QUERY_MODELS = (PatientRootQueryRetrieveInformationModelFind, FIND_MODEL)  # what we answer
MOVE_MODEL = StudyRootQueryRetrieveInformationModelMove
GET_MODEL = StudyRootQueryRetrieveInformationModelGet
MOVE_MODELS = (PatientRootQueryRetrieveInformationModelMove, MOVE_MODEL)  # what we answer
GET_MODELS = (PatientRootQueryRetrieveInformationModelGet, GET_MODEL)
# A requested context: an abstract syntax alone (pynetdicom's default transfer
# syntaxes), or with the transfer syntaxes offered for it.
Context = str | tuple[str, list[str]]

# What C-GET offers to receive, per SOP class: one presentation context for the
# uncompressed syntaxes, and one for each common compressed syntax, so the peer
# can send every instance as it holds it (stored as sent) instead of converting it,
# which peers often cannot (Orthanc, for one, cannot decode JPEG 2000).
UNCOMPRESSED: list[str] = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian]
COMPRESSED: list[str] = [
    uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1,
    uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000,
    uid.RLELossless, uid.DeflatedExplicitVRLittleEndian,
]  # fmt: skip
# An association has at most 128 presentation contexts; one is the C-GET model's.
CLASSES_PER_ASSOCIATION = 127 // (1 + len(COMPRESSED))
# Offered when the peer does not say which SOP classes it holds.
COMMON_CLASSES = [
    uid.CTImageStorage, uid.EnhancedCTImageStorage, uid.MRImageStorage,
    uid.EnhancedMRImageStorage, uid.SecondaryCaptureImageStorage,
    uid.ComputedRadiographyImageStorage, uid.DigitalXRayImageStorageForPresentation,
    uid.UltrasoundImageStorage, uid.UltrasoundMultiFrameImageStorage,
    uid.XRayAngiographicImageStorage, uid.PositronEmissionTomographyImageStorage,
    uid.NuclearMedicineImageStorage,
]  # fmt: skip


# The longest P-DATA-TF we accept: at pynetdicom's default of 16 KB, a 128 KB instance
# takes eight PDUs, and each costs Python; the spool writes each as it comes.
MAX_PDU = 1 << 20


def receiving_contexts() -> list[PresentationContext]:
    """What the receiver accepts: C-ECHO; C-FIND, C-MOVE and C-GET in the patient and
    study root information models; and every storage SOP class in every transfer
    syntax (an instance is stored as it was sent), in either role: the peer's C-STORE
    to us, or (when the peer asks for the SCP role, for a C-GET) ours to it."""
    contexts = [build_context(Verification)]
    for model in (*QUERY_MODELS, *MOVE_MODELS, *GET_MODELS):
        contexts.append(build_context(model, UNCOMPRESSED))
    for storage in AllStoragePresentationContexts:
        assert storage.abstract_syntax is not None
        context = build_context(storage.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        context.scu_role = context.scp_role = True
        contexts.append(context)
    return contexts


def requesting_ae(aet: str, contexts: Iterable[Context]) -> AE:
    """An AE that asks a peer (a pull) for these presentation contexts."""
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.PEER_TIMEOUT
    for context in contexts:
        if isinstance(context, tuple):
            ae.add_requested_context(*context)
        else:
            ae.add_requested_context(context)
    return ae


def get_contexts(sop_classes: Sequence[str]) -> tuple[list[Context], list[Any]]:
    """What a C-GET association asks for, to receive instances of these SOP classes
    (at most CLASSES_PER_ASSOCIATION): the presentation contexts, and the SCP role
    for each class (PS3.4 C.4.3.3: the instances come on the same association)."""
    contexts: list[Context] = [GET_MODEL]
    for sop_class in sop_classes:
        contexts.append((sop_class, UNCOMPRESSED))
        contexts += [(sop_class, [syntax]) for syntax in COMPRESSED]
    roles = [build_role(sop_class, scp_role=True) for sop_class in sop_classes]
    return contexts, roles


def quick_ack(assoc: Any) -> None:
    """Keep a sender that leaves Nagle's algorithm on from waiting 40 ms per
    instance (see tcp.py). On TLS only our own replies go at once: pynetdicom checks
    that the socket is an SSLSocket, so it cannot be wrapped."""
    transport = assoc.dul.socket
    sock = transport.socket if transport is not None else None
    if isinstance(sock, ssl.SSLSocket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    elif isinstance(sock, socket.socket):
        transport.socket = QuickAckSocket(sock)


# --- who is asking ---------------------------------------------------------------------


def username(value: bytes | None) -> str | None:
    """The DICOM username offered (user identity negotiation), or None: an empty or
    blank one, or one with control characters (a NUL, an escape sequence, a line
    break), is no username at all."""
    text = (value or b"").decode("utf-8", "replace").strip()
    if not text or any(unicodedata.category(ch) == "Cc" for ch in text):
        return None
    return text


# --- C-STORE -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of one C-STORE: the status the peer hears, and what was stored, or
    why nothing was."""

    status: int
    stored: ingest.Stored | None = None
    reason: str = ""


class StoreHandler:
    """The EVT_C_STORE handler of every association that receives instances: each is
    stored by ingest (durable and indexed) before the peer hears Success, and anything
    that goes wrong is a failure status for that instance alone.

    sender(event) says who sent the instance; recorded(event, sender, outcome), if
    given, hears what became of each (the receiver counts them for the audit trail).
    """

    def __init__(
        self,
        store: Path,
        writer: IndexWriter,
        sender: Callable[[Any], Sender],
        recorded: Callable[[Any, Sender, Outcome], None] | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.sender = sender
        self.recorded = recorded
        spool.install(store_files.tmp_dir(store))

    def __call__(self, event: Any) -> int:
        """Never raises: pynetdicom releases the instance's spool file only when the
        handler returns, and answers an exception with a traceback in the log."""
        sender = self.sender(event)
        outcome = self._store(event, sender)
        if self.recorded is not None:
            self.recorded(event, sender, outcome)
        return outcome.status

    def _store(self, event: Any, sender: Sender) -> Outcome:
        def stored() -> ingest.Stored:
            return ingest.store_spooled(self.store, Path(event.dataset_path), sender, self.writer)

        return store_outcome(stored, getattr(event.request, "AffectedSOPInstanceUID", "?"), sender)


def store_outcome(store: Callable[[], ingest.Stored], sop_uid: str, sender: Sender) -> Outcome:
    """What became of one instance that store() puts into the store; never raises."""
    try:
        stored = store()
    except Exception as exc:
        status, reason = refusal(exc)
        log.error("refused %s from %s@%s: %s (status 0x%04X)", sop_uid, sender.aet,
                  sender.address, reason, status)  # fmt: skip
        log.debug("why", exc_info=True)
        return Outcome(status, reason=reason)
    return Outcome(SUCCESS, stored)


def refusal(exc: Exception) -> tuple[int, str]:
    """The status and reason a sender hears for an instance that was not stored."""
    if isinstance(exc, ingest.Unreadable):
        return CANNOT_UNDERSTAND, str(exc)
    if isinstance(exc, ingest.Refused):
        return OUT_OF_RESOURCES, str(exc)
    return PROCESSING_FAILURE, f"could not store it: {type(exc).__name__}: {exc}"[:300]
