"""The DICOM receiver: C-ECHO and C-STORE of every storage SOP class, with pynetdicom.

Each association runs in its own pynetdicom thread. Its instances go through
dimse.StoreHandler: each is answered with Success only once it is durable and
indexed, and anything that goes wrong with one instance is a failure status for
that instance alone. Who sent what is recorded on each instance and, per
association and study, in the audit trail. This module decides who may send,
how many at once, and how the receiver stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import ssl
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pynetdicom import __version__ as pynetdicom_version
from pynetdicom import evt

from .. import config
from ..store.index import Sender, audit
from ..store.writer import IndexWriter
from . import dimse, pdu_guard, spool, store_response
from .pdu_guard import Timeouts

log = logging.getLogger(__name__)

# Connections that have not yet sent a complete association request. They do not
# count against --max-associations; past this many, the oldest is closed, so
# half-open connections never keep a real sender out.
MAX_PENDING = 64
# pynetdicom's network thread sleeps this long between polls when idle. 0.1 ms once
# an association is accepted (at its default 1 ms each instance waits several times
# over); 10 ms before, so that many connections that never ask cost little CPU.
POLL_DELAY = 0.0001
PENDING_POLL_DELAY = 0.01
BACKLOG = 128  # connections the kernel holds for us to accept (Python's default: 5)
# At stop, how long the instances under way may take to be stored and counted
# once their associations are aborted.
STOP_TIMEOUT = 10.0
# At stop, how long the answers already given may take to go out before the abort.
DRAIN_TIMEOUT = 1.0


@dataclasses.dataclass(frozen=True)
class Policy:
    """Who may send. Empty lists allow everyone."""

    calling_aets: Sequence[str] = ()
    networks: Sequence[str] = ()  # addresses or networks: 10.1.2.3, 10.1.0.0/16
    require_user: bool = False

    def address_refusal(self, address: str) -> str | None:
        """Why a connection from this address is refused, or None."""
        if self.networks and not any(
            ipaddress.ip_address(address) in ipaddress.ip_network(net, strict=False)
            for net in self.networks
        ):
            return f"address {address} is not allowed"
        return None

    def refusal(self, calling_aet: str, address: str, user: str | None) -> str | None:
        """Why an association is refused, or None to accept it."""
        if self.calling_aets and calling_aet not in self.calling_aets:
            return f"calling AE title {calling_aet!r} is not allowed"
        refused = self.address_refusal(address)
        if refused:
            return refused
        if self.require_user and not user:
            return "no DICOM user identity was offered, and one is required"
        return None


class _Gate:
    """Everything an association sends its peer passes here (it stands in for
    pynetdicom's DULServiceProvider.send_pdu). Once shut, nothing more goes out: the
    A-ABORT of a stop is the last the peer hears of us, and pynetdicom never tries to
    answer on a closed connection (its state machine would log that with a traceback)."""

    def __init__(self, dul: Any) -> None:
        self._send = dul.send_pdu
        self._lock = threading.Lock()
        self._open = True
        dul.send_pdu = self.send

    def send(self, primitive: Any) -> None:
        with self._lock:
            if self._open:
                self._send(primitive)

    def shut(self) -> None:
        with self._lock:  # a send under way is queued whole first
            self._open = False


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
        aet: str = config.AE_TITLE,
        policy: Policy | None = None,
        max_associations: int = config.MAX_ASSOCIATIONS,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.policy = policy or Policy()
        self.timeouts = timeouts or Timeouts()
        self.max_associations = max_associations
        self.ae = dimse.receiving_ae(aet, self.timeouts)
        self._on_store = dimse.StoreHandler(store, writer, self._sender, self._count)
        self._guarded = pdu_guard.supported()
        if not self._guarded:
            log.warning("pynetdicom %s is not one dicomfs knows: running without the limits on "
                        "PDU sizes and times", pynetdicom_version)  # fmt: skip
        self._users: dict[int, str | None] = {}  # association -> DICOM username
        self._tallies: dict[int, dict[str, _Tally]] = {}
        self._pending: dict[int, Any] = {}  # connections before their request, oldest first
        self._accepted: dict[int, Any] = {}  # associations past their request
        self._closed_at_connect: weakref.WeakSet[Any] = weakref.WeakSet()  # refused unread
        self._gates: dict[int, _Gate] = {}
        self._stopping = False
        self._lock = threading.Lock()
        self._server: Any = None

    def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_connect),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_USER_ID, self._on_user_id),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
        self._server = self.ae.start_server(
            (host, port), block=False, evt_handlers=handlers, ssl_context=tls,
            contexts=dimse.copied_cheaply(self.ae.supported_contexts),
        )  # fmt: skip
        self._server.socket.listen(BACKLOG)  # listening already: this only widens the queue
        log.info("receiving as %s on %s:%d", self.ae.ae_title, host, port)

    def stop(self) -> None:
        """Stop accepting, abort every association, and wait (STOP_TIMEOUT at most) for
        the instances under way: when this returns, every instance a sender heard
        Success for is in the audit trail. An instance under way is not answered (its
        sender sends it again), and a half-received one leaves no file."""
        if self._server is None:
            return
        self._server.shutdown()  # listens no more; the threads that accepted have ended
        self._server = None
        with self._lock:
            self._stopping = True  # no association is accepted from now on
            pending = list(self._pending.values())
            accepted = list(self._accepted.values())
            gates = list(self._gates.values())
        if accepted:
            log.info("stopping: aborting %d associations (their senders send the rest "
                     "again later)", len(accepted))  # fmt: skip
        for gate in gates:
            gate.shut()  # nothing more is answered
        _drain(accepted, time.monotonic() + DRAIN_TIMEOUT)  # what was answered goes out
        with _quiet(logging.getLogger("pynetdicom")):  # "PDU shorter than expected": we cut it
            for assoc in pending:
                _close(assoc, say_abort=False)  # nothing to abort yet
            for assoc in accepted:
                _close(assoc, say_abort=True)
            for assoc in pending + accepted:
                assoc.kill()  # its connection closed, pynetdicom ends it, our _on_close done
            self._wait_for(accepted, time.monotonic() + STOP_TIMEOUT)
        spool.SpoolFile.discard_orphans()  # of associations ended before they saw the abort

    def _wait_for(self, associations: list[Any], deadline: float) -> None:
        """Until the associations' threads end: each finishes the instance it was
        storing, whose sender was not answered, and records it in the audit trail."""
        for assoc in associations:
            assoc.join(max(0.0, deadline - time.monotonic()))
        busy = sum(assoc.is_alive() for assoc in associations)
        if busy:
            log.warning("stopping: %d associations were still storing an instance after "
                        "%g s; their senders were not answered for it, and it is indexed "
                        "at the next start if it was stored", busy, STOP_TIMEOUT)  # fmt: skip

    # --- association life -------------------------------------------------------------

    def _on_connect(self, event: evt.Event) -> None:
        assoc = event.assoc
        assoc.dul._run_loop_delay = PENDING_POLL_DELAY
        dimse.quick_ack(assoc)
        store_response.install(assoc)
        transport = assoc.dul.socket
        guard = pdu_guard.PduGuard(assoc, self.timeouts) if self._guarded else None
        if guard is not None:
            guard.install()
        refused = self.policy.address_refusal(assoc.requestor.address)
        if refused:  # before reading a byte from it
            self._refuse(event, refused, calling="", called="", user=None)
            if guard is not None:
                guard.shut()  # even what the peer had sent already stays unread
            with self._lock:
                self._closed_at_connect.add(assoc)
            pdu_guard.close(transport.socket if transport else None)
            return
        gate = _Gate(assoc.dul)
        spool.SpoolFile.discard_orphans()
        with self._lock:
            self._forget_ended()
            self._pending[id(assoc)] = assoc
            self._gates[id(assoc)] = gate
            crowded = len(self._pending) > MAX_PENDING
            oldest = self._pending.pop(next(iter(self._pending))) if crowded else None
        if oldest is not None:
            log.warning("more than %d connections without an association request: closing the "
                        "oldest, from %s", MAX_PENDING, oldest.requestor.address)  # fmt: skip
            pdu_guard.close(oldest.dul.socket.socket)

    def _forget_ended(self) -> None:
        """Drop associations whose thread has ended without a close event (the caller locks)."""
        for table in (self._pending, self._accepted):
            ended = [key for key, assoc in table.items() if assoc.ident and not assoc.is_alive()]
            for key in ended:
                del table[key]
                self._gates.pop(key, None)

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        calling, called = dimse.ae_titles(event)
        identity = assoc.requestor.user_identity
        user = dimse.username(identity.primary_field) if identity else None
        with self._lock:
            self._pending.pop(id(assoc), None)
            if assoc in self._closed_at_connect:  # refused and audited already
                assoc.kill()
                return
        reason = self.policy.refusal(calling, assoc.requestor.address, user)
        if reason is None:
            with self._lock:
                stopping = self._stopping
                if not stopping and len(self._accepted) < self.max_associations:
                    self._accepted[id(assoc)] = assoc
                    assoc.dul._run_loop_delay = POLL_DELAY
                    return
            if stopping:
                dimse.reject(assoc, dimse.STOPPING)
                return
            log.warning("refused an association from %s@%s: %d associations are open already "
                        "(--max-associations)", calling, assoc.requestor.address,
                        self.max_associations)  # fmt: skip
            dimse.reject(assoc, dimse.TOO_MANY)  # transient: the sender tries again later
            return
        self._refuse(event, reason, calling=calling, called=called, user=user)
        by_aet = "AE title" in reason
        dimse.reject(assoc, dimse.CALLING_AET_NOT_RECOGNISED if by_aet else dimse.NOT_ALLOWED)

    def _refuse(
        self, event: evt.Event, reason: str, *, calling: str, called: str, user: str | None
    ) -> None:
        address = event.assoc.requestor.address
        log.warning("refused an association from %s@%s: %s", calling, address, reason)
        record = audit.Record(
            "rejected", outcome=reason, calling_aet=calling, address=address,
            called_aet=called, user=user,
        )  # fmt: skip
        self._audit([record])

    def _on_user_id(self, event: Any) -> tuple[bool, bytes | None]:
        # Recorded, not verified: dicomfs has no user database of its own.
        user = dimse.username(event.primary_field)
        with self._lock:
            self._users[id(event.assoc)] = user
        return True, None

    def _on_aborted(self, event: evt.Event) -> None:
        """In the association's own thread, once it handles no more instances: a dataset
        left half-received (or received but never to be handled) goes. Not on the close
        event: that comes from the connection's thread, perhaps while the association's
        thread is about to store a complete instance."""
        spool.SpoolFile.discard_unfinished(event.assoc.dul.ident)

    def _on_close(self, event: evt.Event) -> None:
        key = id(event.assoc)
        with self._lock:
            tallies = self._tallies.pop(key, {})
            user = self._users.pop(key, None)
            self._pending.pop(key, None)
            self._accepted.pop(key, None)
            self._gates.pop(key, None)
        if tallies:
            self._audit(_received(dimse.sender(event, user), tallies))

    # --- instances ----------------------------------------------------------------------

    def _sender(self, event: evt.Event) -> Sender:
        """Who sent it: the association's AE titles, address and DICOM username."""
        with self._lock:
            user = self._users.get(id(event.assoc))
        return dimse.sender(event, user)

    def _count(self, event: evt.Event, sender: Sender, outcome: dimse.Outcome) -> None:
        """Add one instance (or one refusal) to its association's tally, which
        _on_close records in the audit trail. If the association has closed already
        (aborted while the instance was being stored), record it now."""
        assoc = event.assoc
        if outcome.stored is None:  # refused: its study is not known
            study_uid, one, failure = "", _Tally("", ""), outcome.reason
        else:
            meta = outcome.stored.meta
            study_uid, failure = meta.study_uid, ""
            one = _Tally(meta.patient_id, meta.patient_name, instances=1, bytes=outcome.stored.size)
        with self._lock:
            closed = id(assoc) not in self._accepted
            tallies = {} if closed else self._tallies.setdefault(id(assoc), {})
            tally = tallies.setdefault(study_uid, one)
            if tally is not one:
                tally.instances += one.instances
                tally.bytes += one.bytes
            if failure:
                tally.failed += 1
                tally.last_failure = failure
        if closed:
            self._audit(_received(sender, tallies))

    def _audit(self, records: list[audit.Record]) -> None:
        try:
            self.writer.run(lambda index: audit.append(index.conn, records))
        except Exception:
            log.exception("could not write the audit trail")


def _drain(associations: list[Any], deadline: float) -> None:
    """Until what the associations have queued for their peers is sent."""
    for assoc in associations:
        dul = assoc.dul
        while not dul.to_provider_queue.empty() and dul.is_alive():
            if time.monotonic() > deadline:
                return
            time.sleep(0.001)


def _close(assoc: Any, *, say_abort: bool) -> None:
    """Close the association's connection, saying A-ABORT first if say_abort; pynetdicom
    then ends the association as for any connection closed."""
    transport = assoc.dul.socket
    sock = transport.socket if transport is not None else None
    # With TLS, the A-ABORT would be written while pynetdicom's thread reads: one TLS
    # connection must not be used by two threads at once.
    plain = not isinstance(sock, ssl.SSLSocket)
    pdu_guard.close(sock, abort_reason=0 if say_abort and plain else None)


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _received(sender: Sender, tallies: dict[str, _Tally]) -> list[audit.Record]:
    """The audit records of what one association sent, one per study."""
    return [
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
