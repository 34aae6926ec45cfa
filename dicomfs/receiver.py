"""The DICOM receiver: C-ECHO and C-STORE of every storage SOP class, with pynetdicom.

Each association runs in its own pynetdicom thread. An instance is answered
with Success only once ingest.store_received has made it durable and indexed;
anything that goes wrong with one instance is a failure status for that
instance alone. Who sent what is recorded on each instance and, per
association and study, in the audit trail.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from . import audit, ingest, spool
from . import store as store_files
from .index import Sender
from .tcp import QuickAckSocket
from .writer import IndexWriter

log = logging.getLogger(__name__)

DEFAULT_PORT = 11112
DEFAULT_AET = "DICOMFS"
DEFAULT_MAX_ASSOCIATIONS = 16
POLL_DELAY = 0.0001


@dataclasses.dataclass(frozen=True)
class Policy:
    """Who may send. Empty lists allow everyone."""

    calling_aets: Sequence[str] = ()
    networks: Sequence[str] = ()  # addresses or networks: 10.1.2.3, 10.1.0.0/16
    require_user: bool = False

    def refusal(self, calling_aet: str, address: str, user: str | None) -> str | None:
        """Why an association is refused, or None to accept it."""
        if self.calling_aets and calling_aet not in self.calling_aets:
            return f"calling AE title {calling_aet!r} is not allowed"
        if self.networks and not any(
            ipaddress.ip_address(address) in ipaddress.ip_network(net, strict=False)
            for net in self.networks
        ):
            return f"address {address} is not allowed"
        if self.require_user and not user:
            return "no DICOM user identity was offered, and one is required"
        return None


@dataclasses.dataclass
class _Tally:
    """What one association sent of one study, for its audit record."""

    patient_id: str
    patient_name: str
    instances: int = 0
    bytes: int = 0
    failed: int = 0
    last_failure: str = ""


class Receiver:
    def __init__(
        self,
        store: Path,
        writer: IndexWriter,
        *,
        aet: str = DEFAULT_AET,
        policy: Policy | None = None,
        max_associations: int = DEFAULT_MAX_ASSOCIATIONS,
    ) -> None:
        self.store = store
        self.writer = writer
        self.policy = policy or Policy()
        spool.install(store_files.tmp_dir(store))
        self.ae = AE(ae_title=aet)
        self.ae.maximum_associations = max_associations
        self.ae.network_timeout = 120
        self.ae.dimse_timeout = 120
        # How long a peer may leave an association half-open (before its request, or
        # after an abort of ours over a malformed PDU) before the connection is closed.
        self.ae.acse_timeout = 10
        self.ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            self.ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self._users: dict[int, str] = {}  # association -> DICOM username
        self._tallies: dict[int, dict[str, _Tally]] = {}
        self._lock = threading.Lock()
        self._server: Any = None

    def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_connect),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_USER_ID, self._on_user_id),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
        self._server = self.ae.start_server(
            (host, port), block=False, evt_handlers=handlers, ssl_context=tls
        )
        log.info("receiving as %s on %s:%d", self.ae.ae_title, host, port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # --- association life -------------------------------------------------------------

    def _on_connect(self, event: evt.Event) -> None:
        # pynetdicom's network thread sleeps between polls when idle; at its default
        # 1 ms each instance waits several times over. 0.1 ms costs little CPU.
        event.assoc.dul._run_loop_delay = POLL_DELAY
        transport = event.assoc.dul.socket
        if transport is not None and isinstance(transport.socket, socket.socket):
            if isinstance(transport.socket, ssl.SSLSocket):  # pynetdicom checks its type
                transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                transport.socket = QuickAckSocket(transport.socket)  # type: ignore[assignment]

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        calling, called = _ae_titles(event)
        identity = assoc.requestor.user_identity
        user = _text(identity.primary_field) if identity else None
        reason = self.policy.refusal(calling, assoc.requestor.address, user)
        if reason is None:
            return
        log.warning("refused an association from %s@%s: %s", calling,
                    assoc.requestor.address, reason)  # fmt: skip
        self._audit(
            [
                audit.Record(
                    "rejected",
                    outcome=reason,
                    calling_aet=calling,
                    address=assoc.requestor.address,
                    called_aet=called,
                    user=user,
                )
            ]
        )
        # Permanent, by the service user; "calling AE title not recognised" when that is it.
        assoc.acse.send_reject(0x01, 0x01, 0x03 if "AE title" in reason else 0x01)
        assoc.kill()  # as pynetdicom does for its own rejections: the reject goes out first

    def _on_user_id(self, event: Any) -> tuple[bool, bytes | None]:
        # Recorded, not verified: dicomfs has no user database of its own.
        user = _text(event.primary_field)
        with self._lock:
            self._users[id(event.assoc)] = user
        return True, None

    def _on_close(self, event: evt.Event) -> None:
        key = id(event.assoc)
        with self._lock:
            tallies = self._tallies.pop(key, {})
            user = self._users.pop(key, None)
        spool.SpoolFile.discard_unfinished(event.assoc.dul.ident)
        if not tallies:
            return
        sender = self._sender(event, user)
        self._audit(
            [
                audit.Record(
                    "received",
                    outcome="ok" if not t.failed else f"{t.failed} failed: {t.last_failure}",
                    calling_aet=sender.aet,
                    address=sender.address,
                    called_aet=sender.called_aet,
                    user=sender.user,
                    patient_id=t.patient_id,
                    patient_name=t.patient_name,
                    study_uid=study_uid,
                    instances=t.instances,
                    bytes=t.bytes,
                )
                for study_uid, t in tallies.items()
            ]
        )

    # --- instances ----------------------------------------------------------------------

    def _on_store(self, event: evt.Event) -> int:
        assoc = event.assoc
        with self._lock:
            user = self._users.get(id(assoc))
        sender = self._sender(event, user)
        try:
            stored = ingest.store_spooled(self.store, event.dataset_path, sender, self.writer)
        except ingest.Refused as exc:
            sop = getattr(event.request, "AffectedSOPInstanceUID", "?")
            log.error("refused %s from %s@%s: %s (status 0x%04X)", sop, sender.aet,
                      sender.address, exc, exc.status)  # fmt: skip
            self._count_failure(assoc, str(exc))
            return exc.status
        self._count(assoc, stored)
        return ingest.SUCCESS

    def _sender(self, event: evt.Event, user: str | None) -> Sender:
        calling, called = _ae_titles(event)
        address = event.assoc.requestor.address
        return Sender(aet=calling, address=address, called_aet=called, user=user)

    def _count(self, assoc: Any, stored: ingest.Stored) -> None:
        meta = stored.meta
        with self._lock:
            tallies = self._tallies.setdefault(id(assoc), {})
            tally = tallies.setdefault(meta.study_uid, _Tally(meta.patient_id, meta.patient_name))
            tally.instances += 1
            tally.bytes += stored.size

    def _count_failure(self, assoc: Any, reason: str) -> None:
        with self._lock:
            tallies = self._tallies.setdefault(id(assoc), {})
            tally = tallies.setdefault("", _Tally("", ""))  # study unknown: not understood
            tally.failed += 1
            tally.last_failure = reason

    def _audit(self, records: list[audit.Record]) -> None:
        try:
            self.writer.run(lambda index: audit.append(index.conn, records))
        except Exception:
            log.exception("could not write the audit trail")


def _ae_titles(event: evt.Event) -> tuple[str, str]:
    """(calling, called) AE titles as the peer sent them in its request."""
    request = event.assoc.requestor.primitive
    assert request is not None  # set before any handler of ours runs
    return request.calling_ae_title, request.called_ae_title


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace").strip()
