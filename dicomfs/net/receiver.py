"""The DICOM node: C-ECHO and C-STORE of every storage SOP class, and C-FIND, C-MOVE
and C-GET over the index, on one port.

A thread accepts connections (or serve hands them over, when it receives in several
processes: processes.py); each association then runs in its own thread
(acceptor.py). Each instance is answered with Success only once it is durable and
indexed (ingest.py), and anything that goes wrong with one instance is a failure
status for that instance alone. Who sent what is recorded on each instance and,
per association and study, in the audit trail. This module decides who may send,
how many at once, and how the receiver stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .. import config
from ..life import access
from ..lines import one_line
from ..sizes import count, size
from ..store import files as store_files
from ..store.directories import SeriesDirectories
from ..store.index import Index, IndexUnusable, Sender, audit
from ..store.writer import IndexWriter
from . import commands, dimse, ingest, queries, remotes, retrieve
from .acceptor import Association, Spooled
from .activity import Activity, Counts
from .remotes import Remote
from .wire import Timeouts

log = logging.getLogger(__name__)

# Connections that have not yet sent a complete association request. They do not
# count against --max-associations; past this many, the oldest is closed, so
# half-open connections never keep a real sender out.
MAX_PENDING = 64
BACKLOG = 128  # connections the kernel holds for us to accept (Python's default: 5)
# At stop, how long the instances under way may take to be stored and counted
# once their associations are aborted.
STOP_TIMEOUT = 10.0
AUDIT_RETRY_INTERVAL = 10.0  # seconds between two tries of audit records held back
MAX_UID = 64  # characters of a UID (PS3.5 9.1); a longer one is refused, not stored


@dataclasses.dataclass(frozen=True)
class Policy:
    """Who may send. Empty lists allow everyone."""

    calling_aets: Sequence[str] = ()
    networks: Sequence[str] = ()  # addresses or networks: 10.1.2.3, 10.1.0.0/16
    require_user: bool = False

    @property
    def open(self) -> bool:
        return not (self.calling_aets or self.networks or self.require_user)

    def __str__(self) -> str:
        if self.open:
            return "anyone may connect"
        told = []
        if self.calling_aets:
            told.append(f"calling AE titles {', '.join(self.calling_aets)}")
        if self.networks:
            told.append(f"addresses {', '.join(self.networks)}")
        if self.require_user:
            told.append("a DICOM user required")
        return "; ".join(told)

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


class Gate:
    """How many associations may be open at once (--max-associations), counted by
    one receiver; receiver processes share one count instead (processes.py)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        """Count one more association, unless as many as the limit are open."""
        with self._lock:
            if self._open >= self.limit:
                return False
            self._open += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._open -= 1

    def closed(self) -> None:
        """A connection taken has ended, accepted or not: of use to processes.py."""


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server(
        (host, port), family=family, backlog=BACKLOG, dualstack_ipv6=host == "::"
    )


class Listening:
    """A thread that accepts connections and hands each to `take` with its address."""

    def __init__(self, listener: socket.socket, take: Callable[[socket.socket, str], None]):
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._take = take
        self._thread = threading.Thread(target=self._accept, name="accept", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self._listener.accept()
            except OSError:
                return  # close() shut the listener
            self._take(sock, _plain_address(str(peer[0])))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._listener.close()
        self._thread.join()


@dataclasses.dataclass(frozen=True)
class OpenAssociation:
    calling_aet: str
    address: str
    since: float
    instances: int  # received so far
    bytes: int


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What a receiver is doing, for dicomfs status."""

    associations: list[OpenAssociation]
    today: dict[str, Counts]  # by calling AE title
    errors: list[dict[str, Any]]  # warnings and errors of a receiver process's own log


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
        tls: ssl.SSLContext | None = None,
        gate: Gate | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        """gate: where the associations open are counted, if not by this receiver
        alone (max_associations is then the gate's); max_pending: connections kept
        that have not sent their association request yet."""
        self.store = store
        self.writer = writer
        self.aet = aet
        self.policy = policy or Policy()
        self.timeouts = timeouts or Timeouts()
        self.gate = gate or Gate(max_associations)
        self.max_pending = max_pending
        self.port = 0  # listened on, once started
        self.processes = 1  # what it receives in: this one
        self._contexts = dimse.receiving_contexts()
        self._tmp_dir = store_files.tmp_dir(store)
        self._tallies: dict[int, dict[str, _Tally]] = {}
        self._pending: dict[int, Association] = {}  # before their request, oldest first
        self._accepted: dict[int, Association] = {}  # past their request
        self._senders: dict[int, Sender] = {}  # of the accepted, for the index and the log
        self._queries: dict[int, _Queries] = {}  # association -> its C-FINDs
        self._readers: dict[int, Index] = {}  # association -> its read-only index (queries)
        self._directories: dict[int, SeriesDirectories] = {}  # association -> where it stores
        self._stopping = False
        self._lock = threading.Lock()
        self._held_back: list[audit.Record] = []  # audit records the index could not take
        self._listening: Listening | None = None
        self._tls = tls
        self.activity = Activity()  # today's, by calling AE title

    def start(self, host: str, port: int) -> None:
        """Listen on host:port, and take every connection that comes."""
        self._listening = Listening(listen(host, port), self.take)
        self.port = self._listening.port
        said_listening(self.aet, host, self.port, self.policy)

    def snapshot(self) -> Snapshot:
        """What it is doing, for dicomfs status (its log is serve's: no errors of its own)."""
        return Snapshot(self.open_associations(), self.activity.today(), [])

    def stop(self) -> None:
        """Stop accepting, abort every association, and wait (STOP_TIMEOUT at most) for
        the instances under way: when this returns, every instance a sender heard
        Success for is in the audit trail. An instance under way is not answered (its
        sender sends it again), and a half-received one leaves no file."""
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.close()
        with self._lock:
            if self._stopping:
                return
            self._stopping = True  # no association is accepted from now on
            pending = list(self._pending.values())
            accepted = list(self._accepted.values())
        if accepted:
            log.info("stopping: aborting %s (the rest is sent again later)",
                     count(len(accepted), "association"))  # fmt: skip
        for association in pending:
            association.shut(say_abort=False)  # nothing to abort yet
        for association in accepted:
            association.shut(say_abort=True)
        deadline = time.monotonic() + STOP_TIMEOUT
        for association in pending + accepted:
            association.join(max(0.0, deadline - time.monotonic()))
        busy = sum(association.is_alive() for association in accepted)
        if busy:
            log.warning("stopping: %d associations were still storing an instance after "
                        "%g s; their senders were not answered for it, and it is indexed "
                        "at the next start if it was stored", busy, STOP_TIMEOUT)  # fmt: skip
        self.retry_audit()
        for record in self.held_back():  # the last place they can go: the log
            log.error("an audit record the index could not take: %s", audit.as_line(record))

    # --- connections ----------------------------------------------------------------------

    def take(self, sock: socket.socket, address: str) -> None:
        """Serve a connection just accepted, from this address, in a thread of its own."""
        refused = self.policy.address_refusal(address)
        if refused:  # before reading a byte from it
            self._refuse(address, refused, calling="", called="", user=None)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            self.gate.closed()
            return
        association = Association(
            sock, address, self, supported=self._contexts, tmp_dir=self._tmp_dir,
            timeouts=self.timeouts, max_pdu=dimse.MAX_PDU, tls=self._tls,
        )  # fmt: skip
        with self._lock:
            self._pending[id(association)] = association
            crowded = len(self._pending) > self.max_pending
            oldest = self._pending.pop(next(iter(self._pending))) if crowded else None
        if oldest is not None:
            log.warning("more than %d connections without an association request: closing "
                        "the oldest, from %s", self.max_pending, oldest.address)  # fmt: skip
            oldest.shut(say_abort=False)
        association.start()

    # --- what an association asks (acceptor.Host) ---------------------------------------

    def admit(self, association: Association) -> dimse.Rejection | None:
        calling, address, user = association.calling_aet, association.address, association.user
        with self._lock:
            self._pending.pop(id(association), None)
        reason = self.policy.refusal(calling, address, user)
        if reason is None:
            with self._lock:
                stopping = self._stopping
                if not stopping and self.gate.enter():
                    self._accepted[id(association)] = association
                    self._senders[id(association)] = _sender_of(association)
                    self._directories[id(association)] = SeriesDirectories(self.store)
                    return None
            if stopping:
                return dimse.STOPPING
            log.warning("refused an association from %s@%s: %d associations are open already "
                        "(--max-associations)", calling, address,
                        self.gate.limit)  # fmt: skip
            self.activity.refused(calling)
            return dimse.TOO_MANY  # transient: the sender tries again later
        self._refuse(address, reason, calling=calling, called=association.called_aet, user=user)
        by_aet = "AE title" in reason
        return dimse.CALLING_AET_NOT_RECOGNISED if by_aet else dimse.NOT_ALLOWED

    def instance(
        self, association: Association, request: commands.Request, spooled: Spooled
    ) -> tuple[int, str]:
        sender = self._senders[id(association)]

        def stored() -> ingest.Stored:
            if len(request.sop_instance) > MAX_UID:
                raise ingest.Unreadable(f"its SOP Instance UID is longer than {MAX_UID} characters")
            if spooled.error is not None:
                raise ingest.Refused(ingest.describe(spooled.error))
            return ingest.store_received(
                self.store, Path(spooled.path), spooled.sync, sender, self.writer,
                head=bytes(spooled.head), directories=self._directories[id(association)],
            )  # fmt: skip

        outcome = dimse.store_outcome(stored, request.sop_instance, sender)
        self._count(association, sender, outcome)
        return outcome.status, outcome.reason

    def find(
        self, association: Association, request: commands.Request, identifier: bytes, syntax: str
    ) -> Iterator[bytes]:
        if request.sop_class not in dimse.QUERY_MODELS:
            raise queries.Refused(
                dimse.SOP_CLASS_NOT_SUPPORTED, f"no C-FIND in {request.sop_class}"
            )
        index = self._reader(association)
        found, refused = 0, ""
        try:
            study_root = request.sop_class == dimse.FIND_MODEL
            for match in queries.matches(index.conn, identifier, syntax, self.aet, study_root):
                found += 1
                yield match
        except queries.Refused as exc:
            refused = str(exc)
            raise
        finally:
            with self._lock:
                asked = self._queries.setdefault(id(association), _Queries())
                asked.count(found, refused)

    def retrieval(
        self, association: Association, request: commands.Request, identifier: bytes, syntax: str
    ) -> retrieve.Job:
        try:
            return self._retrieval(association, request, identifier, syntax)
        except queries.Refused as exc:
            moving = request.field == commands.C_MOVE_RQ
            sender = _sender_of(association)
            log.info("refused a %s from %s@%s: %s", "C-MOVE" if moving else "C-GET",
                     sender.aet, sender.address, exc)  # fmt: skip
            self._audit([audit.Record(
                "retrieved", outcome=f"refused: {exc}", calling_aet=sender.aet,
                address=sender.address, called_aet=sender.called_aet, user=sender.user,
                detail=f"C-MOVE to {request.move_destination}" if moving else "C-GET",
            )])  # fmt: skip
            raise

    def _retrieval(
        self, association: Association, request: commands.Request, identifier: bytes, syntax: str
    ) -> retrieve.Job:
        moving = request.field == commands.C_MOVE_RQ
        if request.sop_class not in (dimse.MOVE_MODELS if moving else dimse.GET_MODELS):
            service = "C-MOVE" if moving else "C-GET"
            raise queries.Refused(
                dimse.SOP_CLASS_NOT_SUPPORTED, f"no {service} in {request.sop_class}"
            )
        destination = self._destination(association, request) if moving else None
        study_root = request.sop_class in (dimse.MOVE_MODEL, dimse.GET_MODEL)
        items = queries.retrievable(self._reader(association).conn, identifier, syntax, study_root)
        root = os.open(self.store, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return retrieve.Job(items, destination, root, self.aet)

    def _destination(self, association: Association, request: commands.Request) -> Remote:
        """The peer a C-MOVE sends to; refused unless the lab named it one."""
        aet = request.move_destination
        try:
            destination = remotes.move_destination(self.store, aet)
        except remotes.BadRemote as exc:
            raise queries.Refused(queries.UNABLE_TO_PROCESS, str(exc)) from None
        if destination is None:
            log.warning("refused a C-MOVE from %s@%s to %r: no move destination has that AE "
                        "title; name one with: dicomfs remote add NAME %s@HOST:PORT "
                        "--move-destination", association.calling_aet, association.address,
                        aet, aet or "AET")  # fmt: skip
            raise queries.Refused(
                dimse.MOVE_DESTINATION_UNKNOWN, f"no move destination {aet!r} here"
            )
        if destination.aet == self.aet and destination.port == self.port:
            raise queries.Refused(
                dimse.MOVE_DESTINATION_UNKNOWN, "a C-MOVE to this node itself: it has them"
            )
        return destination

    def retrieved(
        self, association: Association, job: retrieve.Job, progress: retrieve.Progress
    ) -> None:
        os.close(job.root)
        sender = _sender_of(association)
        service = "C-GET" if job.destination is None else "C-MOVE"
        to = job.destination or f"{sender.aet}@{sender.address}"
        log.info("%s from %s@%s to %s: %d of %d instances sent, %d failed%s%s", service,
                 sender.aet, sender.address, to, progress.completed + progress.warning,
                 len(job.items), progress.failed,
                 f" (the first: {progress.comment})" if progress.failed else "",
                 ", cancelled" if progress.cancelled else "")  # fmt: skip
        records = retrieve.records(sender, job, progress, service)
        sent = dict.fromkeys((item.instance for item in progress.delivered), time.time())
        vanished = [path for path in progress.vanished if not (self.store / path).exists()]
        if vanished:
            named = ", ".join(vanished[:3]) + (", ..." if len(vanished) > 3 else "")
            rows = "its row" if len(vanished) == 1 else f"their {len(vanished)} rows"
            log.warning("gone from the store behind the index, dropping %s: %s", rows, named)

        def record(index: Index) -> None:
            index.remove_paths(vanished)
            access.widen(index, sent)
            audit.append(index.conn, records)

        try:
            self.writer.run(record)
        except Exception:
            log.exception("could not record a retrieval in the index")

    def _reader(self, association: Association) -> Index:
        """The association's read-only index, opened at its first query: opening one
        costs more than most queries."""
        index = self._readers.get(id(association))
        if index is None:
            try:
                index = Index(self.store, readonly=True)
            except IndexUnusable as exc:
                raise queries.Refused(queries.UNABLE_TO_PROCESS, str(exc)) from None
            with self._lock:
                self._readers[id(association)] = index
        return index

    def ended(self, association: Association) -> None:
        key = id(association)
        with self._lock:
            reader = self._readers.pop(key, None)
            tallies = self._tallies.pop(key, {})
            asked = self._queries.pop(key, None)
            self._pending.pop(key, None)
            accepted = self._accepted.pop(key, None) is not None
            self._senders.pop(key, None)
            directories = self._directories.pop(key, None)
        if reader is not None:
            reader.close()
        if directories is not None:
            directories.close()
        self.gate.closed()
        if accepted:
            self.gate.leave()
            total = _total(tallies)
            self.activity.ended(association.calling_aet, total.instances, total.bytes, total.failed)
            _log_association(association, total, asked)
        records = _received(_sender_of(association), tallies)
        if asked is not None:
            records.append(_queried(_sender_of(association), asked))
        if records:
            self._audit(records)

    def open_associations(self) -> list[OpenAssociation]:
        """The associations served now, for dicomfs status."""
        found = []
        with self._lock:
            for key, association in self._accepted.items():
                total = _total(self._tallies.get(key, {}))
                who = (association.calling_aet, association.address, association.began)
                found.append(OpenAssociation(*who, total.instances, total.bytes))
        return found

    # --- the audit trail ------------------------------------------------------------------

    def _refuse(
        self, address: str, reason: str, *, calling: str, called: str, user: str | None
    ) -> None:
        log.warning("refused an association from %s@%s: %s", calling, address, reason)
        self.activity.refused(calling)
        record = audit.Record(
            "rejected", outcome=reason, calling_aet=calling, address=address,
            called_aet=called, user=user,
        )  # fmt: skip
        self._audit([record])

    def _count(self, association: Association, sender: Sender, outcome: dimse.Outcome) -> None:
        """Add one instance (or one refusal) to its association's tally, which ended()
        records in the audit trail."""
        if outcome.stored is None:  # refused: its study is not known
            study_uid, one, failure = "", _Tally("", ""), outcome.reason
        else:
            meta = outcome.stored.meta
            study_uid, failure = meta.study_uid, ""
            one = _Tally(meta.patient_id, meta.patient_name, instances=1, bytes=outcome.stored.size)
        with self._lock:
            tally = self._tallies.setdefault(id(association), {}).setdefault(study_uid, one)
            if tally is not one:
                tally.instances += one.instances
                tally.bytes += one.bytes
            if failure:
                tally.failed += 1
                tally.last_failure = failure

    def _audit(self, records: list[audit.Record]) -> None:
        """Write records, and those held back before; when the index cannot take them
        (its server out of reach), hold them back for the next try (retry_audit)."""
        with self._lock:
            held, self._held_back = self._held_back, []
        records = held + records
        if not records:
            return
        try:
            self.writer.run(lambda index: audit.append(index.conn, records))
        except Exception as exc:
            with self._lock:
                self._held_back = records + self._held_back
            log.error("could not write %d audit records (%s): held back, and written once "
                      "the index takes them", len(records), one_line(exc))  # fmt: skip
            log.debug("the audit trail's write failed", exc_info=True)
        else:
            if held:
                log.info("wrote the %d audit records held back", len(held))

    def retry_audit(self) -> None:
        """Write the audit records held back, if any (serve tries every few seconds)."""
        if self._held_back:
            self._audit([])

    def held_back(self) -> list[audit.Record]:
        with self._lock:
            return list(self._held_back)


def _plain_address(address: str) -> str:
    """::ffff:10.1.2.3 (an IPv4 peer of a dual-stack listener) -> 10.1.2.3, which the
    allowed networks and the audit trail name."""
    mapped = ipaddress.ip_address(address)
    if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
        return str(mapped.ipv4_mapped)
    return address


def said_listening(aet: str, host: str, port: int, policy: Policy) -> None:
    log.info("receiving as %s on %s:%d; %s", aet, host, port, policy)
    exposed = exposure(policy, host, port)
    if exposed:
        log.warning("%s", exposed)


def exposure(policy: Policy, host: str, port: int) -> str | None:
    """The warning a receiver open to anyone on the network deserves, if it is. A
    DICOM user narrows nothing: any name is taken, and none is checked."""
    everywhere = not policy.networks or any(
        ipaddress.ip_network(net, strict=False).prefixlen == 0 for net in policy.networks
    )
    if policy.calling_aets or not everywhere or ipaddress.ip_address(host).is_loopback:
        return None
    return (
        f"anyone who reaches port {port} may send, and query and retrieve every patient's "
        "images: name the scanners and workstations with --allow-aet or --allow-address "
        "([receiver] allow_aet, allow_address in the configuration file)"
    )


def _total(tallies: dict[str, _Tally]) -> _Tally:
    """What one association sent of all its studies together."""
    total = _Tally("", "")
    for tally in tallies.values():
        total.instances += tally.instances
        total.bytes += tally.bytes
        total.failed += tally.failed
        total.last_failure = tally.last_failure or total.last_failure
    return total


def _log_association(association: Association, total: _Tally, asked: _Queries | None) -> None:
    """One line per association: who, from where, what it sent, and how it ended."""
    parts = [count(total.instances, "instance"), size(total.bytes)]
    if total.failed:
        parts.append(f"{total.failed} refused (the last: {total.last_failure})")
    if asked is not None:
        parts.append(f"{asked.asked} {'query' if asked.asked == 1 else 'queries'}")
    ending = association.ending or "ended"
    user = f", user {association.user}" if association.user else ""
    level = logging.INFO if ending == "released" and not total.failed else logging.WARNING
    log.log(level, "association from %s@%s (to %s%s): %s in %.1f s; %s",
            association.calling_aet, association.address, association.called_aet, user,
            ", ".join(parts), time.time() - association.began, ending)  # fmt: skip


def _sender_of(association: Association) -> Sender:
    return Sender(
        aet=association.calling_aet, address=association.address,
        called_aet=association.called_aet, user=association.user,
    )  # fmt: skip


@dataclasses.dataclass
class _Queries:
    """What one association asked (C-FIND), for its audit record."""

    asked: int = 0
    matches: int = 0
    refused: int = 0
    last_refusal: str = ""

    def count(self, matches: int, refusal: str) -> None:
        self.asked += 1
        self.matches += matches
        if refusal:
            self.refused += 1
            self.last_refusal = refusal


def _queried(sender: Sender, queries_asked: _Queries) -> audit.Record:
    """The audit record of what one association asked (C-FIND), all its queries in one."""
    asked, matches, refused = queries_asked.asked, queries_asked.matches, queries_asked.refused
    return audit.Record(
        "queried", calling_aet=sender.aet, address=sender.address,
        called_aet=sender.called_aet, user=sender.user,
        outcome=f"{refused} refused: {queries_asked.last_refusal}" if refused else "ok",
        detail=f"{asked} {'query' if asked == 1 else 'queries'}, "
        f"{matches} {'match' if matches == 1 else 'matches'}",
    )  # fmt: skip


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
