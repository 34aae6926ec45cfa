"""Pulling from a scanner or PACS: C-FIND what the peer has, fetch what the index lacks.

Fetching is C-MOVE to our own receiver (a running `dicomfs serve`, or one started
here for the purpose), or C-GET on the query's own association. Either way each
instance goes through dimse.StoreHandler, so it is durable and indexed before
the peer hears Success, and pulling the same study twice, or from two commands at
once, stores each instance once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from .. import config
from ..store import running
from ..store.index import Index, Sender, audit
from ..store.writer import IndexWriter
from . import dimse
from .reactor import parked
from .remotes import Remote

UIDS_PER_REQUEST = 100


class PullError(Exception):
    """The peer refused, timed out or went away; the message says which."""


@dataclasses.dataclass(frozen=True)
class PullQuery:
    """What to pull: one of these, as the command was given it."""

    study_uid: str | None = None
    patient_id: str | None = None
    accession: str | None = None
    series_uid: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteInstance:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str = ""  # "" when the peer does not say


@contextlib.contextmanager
def associate(
    remote: Remote, our_aet: str, contexts: list[dimse.Context], **kwargs: Any
) -> Iterator[Any]:
    ae = dimse.requesting_ae(our_aet, contexts)
    connected = threading.Event()  # a refusal and a peer not there both end unassociated
    handlers = [*kwargs.pop("evt_handlers", []), (evt.EVT_CONN_OPEN, lambda _: connected.set())]
    asked = time.monotonic()
    assoc = ae.associate(
        remote.host, remote.port, ae_title=remote.aet, evt_handlers=handlers, **kwargs
    )
    if assoc.is_established:
        dimse.quick_ack(assoc)
    else:
        waited = time.monotonic() - asked
        raise PullError(_not_associated(remote, our_aet, connected.is_set(), waited))
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _not_associated(remote: Remote, our_aet: str, connected: bool, waited: float) -> str:
    """Why there is no association. pynetdicom may report a peer's rejection as an abort
    (a busy peer closes at once after its A-ASSOCIATE-RJ): once connected, both are a
    refusal."""
    if not connected:
        return f"{_named(remote)} could not be reached"
    if waited >= config.PEER_TIMEOUT:
        return (
            f"{_named(remote)} did not answer our association request within "
            f"{config.PEER_TIMEOUT:g} s"
        )
    return (
        f"{_named(remote)} refused the association: check that it knows our AE title "
        f"{our_aet} and that {remote.aet} is its own"
    )


def list_remote(remote: Remote, our_aet: str, query: PullQuery) -> list[RemoteInstance]:
    """Every instance the peer has that matches, study by study, series by series."""
    with associate(remote, our_aet, [dimse.FIND_MODEL]) as assoc:

        def find(level: str, **keys: str) -> list[Dataset]:
            return _find(assoc, remote, level, **keys)

        if query.series_uid:
            found = find("SERIES", SeriesInstanceUID=query.series_uid, StudyInstanceUID="")
            pairs = [(s.StudyInstanceUID, s.SeriesInstanceUID) for s in found]
        else:
            studies = find(
                "STUDY",
                StudyInstanceUID=query.study_uid or "",
                PatientID=query.patient_id or "",
                AccessionNumber=query.accession or "",
            )
            pairs = []
            for study in studies:
                uid = study.StudyInstanceUID
                series = find("SERIES", StudyInstanceUID=uid, SeriesInstanceUID="")
                pairs += [(uid, s.SeriesInstanceUID) for s in series]
        instances = []
        for study_uid, series_uid in pairs:
            images = find("IMAGE", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid,
                          SOPInstanceUID="", SOPClassUID="")  # fmt: skip
            instances += [
                RemoteInstance(
                    study_uid, series_uid, i.SOPInstanceUID, str(i.get("SOPClassUID", "") or "")
                )
                for i in images
            ]
        return instances


def _find(assoc: Any, remote: Remote, level: str, **keys: str) -> list[Dataset]:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    found = []
    with parked(assoc):
        responses = list(assoc.send_c_find(identifier, dimse.FIND_MODEL))
    for status, match in responses:
        code = dimse.status_of(status)
        if code is None:
            raise PullError(
                f"{_named(remote)} ended the association during the query: it may not accept "
                f"queries from our AE title {assoc.requestor.ae_title} (add it there as a "
                "known peer), or it stopped"
            )
        if code in (dimse.PENDING, dimse.PENDING_WITH_WARNING) and match is not None:
            found.append(match)
        elif code != dimse.SUCCESS:
            raise PullError(
                f"{_named(remote)} refused the {level} query: status 0x{code:04X} "
                f"({dimse.meaning(code)}){_comment(status)}"
            )
    return found


def held(store: Path, sop_uids: list[str]) -> set[str]:
    """Which of these instances the index already has."""
    with Index(store, readonly=True) as index:
        return index.stored_sop_uids(sop_uids)


@dataclasses.dataclass(frozen=True)
class Destination:
    """Where C-MOVE sends: our AE title, on this host, on our receiver's port."""

    aet: str
    port: int

    def __str__(self) -> str:
        return f"{self.aet} at {socket.getfqdn()}:{self.port}"


def move(
    remote: Remote,
    destination: Destination,
    missing: list[RemoteInstance],
    listed: list[RemoteInstance],
) -> None:
    """Ask the peer to send these instances to our AE title (C-MOVE)."""
    with associate(remote, destination.aet, [dimse.MOVE_MODEL]) as assoc:
        for identifier in _retrieve_keys(missing, listed):
            with parked(assoc):
                for status, _ in assoc.send_c_move(identifier, destination.aet, dimse.MOVE_MODEL):
                    _check_retrieve_status(remote, status, "move", destination)


def get(
    remote: Remote,
    our_aet: str,
    missing: list[RemoteInstance],
    listed: list[RemoteInstance],
    store: Path,
    writer: IndexWriter,
    user: str,
) -> None:
    """Fetch these instances on our own association (C-GET), a few SOP classes per
    association (see CLASSES_PER_ASSOCIATION)."""
    sender = Sender(aet=remote.aet, address=remote.host, called_aet=our_aet, user=user)
    handlers = [(evt.EVT_C_STORE, dimse.StoreHandler(store, writer, lambda _: sender))]
    for classes, instances in _by_sop_class_groups(missing):
        contexts, roles = dimse.get_contexts(classes)
        with associate(remote, our_aet, contexts, ext_neg=roles, evt_handlers=handlers) as assoc:
            for identifier in _retrieve_keys(instances, listed):
                with parked(assoc):
                    for status, _ in assoc.send_c_get(identifier, dimse.GET_MODEL):
                        _check_retrieve_status(remote, status, "get", None)


def _by_sop_class_groups(
    instances: list[RemoteInstance],
) -> Iterator[tuple[list[str], list[RemoteInstance]]]:
    """The instances in groups whose SOP classes fit one association's contexts.
    Instances whose class the peer did not give go with the common classes."""
    known = sorted({i.sop_class_uid for i in instances if i.sop_class_uid})
    unknown = [i for i in instances if not i.sop_class_uid]
    classes = [*(dimse.COMMON_CLASSES if unknown else []), *known]
    classes = list(dict.fromkeys(classes))  # once each, in order
    for start in range(0, len(classes), dimse.CLASSES_PER_ASSOCIATION):
        group = classes[start : start + dimse.CLASSES_PER_ASSOCIATION]
        members = [i for i in instances if i.sop_class_uid in group]
        if start == 0:
            members += unknown
        if members:
            yield group, members


def _retrieve_keys(
    missing: list[RemoteInstance], listed: list[RemoteInstance]
) -> Iterator[Dataset]:
    """What to ask for: a whole series when the index has none of it, else the missing
    instances by lists of UIDs (PS3.4 C.4.2.2.1), so what the index has is never
    fetched again and each request still carries many instances."""
    on_peer: dict[str, int] = {}
    for instance in listed:
        on_peer[instance.series_uid] = on_peer.get(instance.series_uid, 0) + 1
    by_series: dict[tuple[str, str], list[str]] = {}
    for instance in missing:
        key = (instance.study_uid, instance.series_uid)
        by_series.setdefault(key, []).append(instance.sop_uid)
    for (study_uid, series_uid), sop_uids in by_series.items():
        whole = len(sop_uids) == on_peer.get(series_uid)
        for start in range(0, 1 if whole else len(sop_uids), UIDS_PER_REQUEST):
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "SERIES" if whole else "IMAGE"
            identifier.StudyInstanceUID = study_uid
            identifier.SeriesInstanceUID = series_uid
            if not whole:
                identifier.SOPInstanceUID = sop_uids[start : start + UIDS_PER_REQUEST]
            yield identifier


def _check_retrieve_status(
    remote: Remote, response: Dataset | None, method: str, destination: Destination | None
) -> None:
    status = dimse.status_of(response)
    if status is None:
        raise PullError(
            f"{_named(remote)} went away during the transfer; what arrived is kept, "
            "and the same command again fetches the rest"
        )
    if status in dimse.GOING_ON:
        return
    assert response is not None
    raise PullError(
        f"{remote.name} refused the transfer: status 0x{status:04X} "
        f"({dimse.meaning(status, method)}){_comment(response)}. "
        f"{_likely(status, method, destination)}"
    )


def _comment(response: Dataset | None) -> str:
    comment = str(response.get("ErrorComment", "") or "") if response is not None else ""
    return f', saying "{comment.strip()}"' if comment.strip() else ""


def _likely(status: int, method: str, destination: Destination | None) -> str:
    """The likely cause of a refused retrieve, and what to do."""
    unable = status in dimse.UNABLE_TO_PROCESS_ANY
    if destination is not None and (status == dimse.MOVE_DESTINATION_UNKNOWN or unable):
        return (
            f"Most likely the peer does not know {destination} as a DICOM destination, or "
            f"cannot reach it there: add it on the peer (AE title {destination.aet}, this "
            f"host, port {destination.port}), or use --method get"
        )
    if method == "get" and unable:
        return (
            "Most likely the peer could not send an image in a form this association "
            "accepts (it could not convert it); try --method move"
        )
    if status in (dimse.SOP_CLASS_NOT_SUPPORTED, dimse.NOT_AUTHORIZED):
        other = "get" if method == "move" else "move"
        return f"The peer does not allow C-{method.upper()} to us; try --method {other}"
    if status in dimse.OUT_OF_RESOURCES_ANY:
        return "The peer is short of resources; try again later, or pull less at once"
    return "The peer's log may say more"


@dataclasses.dataclass
class PullProgress:
    """How far a pull has come, for its display (cli.output.PullProgressLine)."""

    found: int = 0  # instances the peer has that match
    had: int = 0  # of those, already in the index when the pull began
    fetched: int = 0
    remaining: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        return self.fetched / max(time.monotonic() - self.started, 1e-6)


@dataclasses.dataclass(frozen=True)
class PullOptions:
    method: str = "move"  # or "get"
    our_aet: str = config.AE_TITLE
    port: int = config.PORT  # our receiver's, for C-MOVE
    bind: str = config.BIND
    follow: bool = False
    interval: float = 2.0
    until_idle: float | None = None


def pull(
    store: Path,
    remote: Remote,
    query: PullQuery,
    options: PullOptions,
    user: str,
    report: Callable[[PullProgress], None],
) -> tuple[PullProgress, list[RemoteInstance]]:
    """Fetch what the peer has and the index lacks, once or (follow) until idle.

    Returns the progress and what could not be fetched. Ctrl-C ends a follow."""
    writer = IndexWriter(store)
    receiver = None
    progress, missing = PullProgress(), []
    outcome = "failed"
    try:
        if options.method == "move":
            receiver = _receiver_for_move(store, writer, options)
        missing = _pull_loop(store, remote, query, options, user, writer, progress, report)
        outcome = f"{len(missing)} could not be fetched" if missing else "ok"
    except PullError as exc:
        outcome = str(exc)
        raise
    except KeyboardInterrupt:
        outcome = "stopped by the user"
    finally:
        if receiver is not None:
            receiver.stop()
        _audit_pull(writer, remote, query, options, user, progress, outcome)
        writer.close()
    return progress, missing


def _receiver_for_move(store: Path, writer: IndexWriter, options: PullOptions) -> Any:
    """None when the dicomfs serve of this store listens on our port; else a receiver of
    our own there, for the time of the pull. Never whatever else answers on the port:
    the peer's images would go there (into another store, say)."""
    serving = running.listening(store)
    if serving is not None and serving.port == options.port:
        return None
    from .receiver import Receiver

    receiver = Receiver(store, writer, aet=options.our_aet)
    try:
        receiver.start(options.bind, options.port)
    except OSError as exc:
        why = (
            "the port is in use by another program or by a dicomfs serve of another store"
            if exc.errno == errno.EADDRINUSE
            else exc.strerror or str(exc)
        )
        raise PullError(
            f"cannot receive on {options.bind}:{options.port}: {why}; use --port with a "
            "port the peer knows for us, or --method get"
        ) from exc
    return receiver


def _pull_loop(
    store: Path,
    remote: Remote,
    query: PullQuery,
    options: PullOptions,
    user: str,
    writer: IndexWriter,
    progress: PullProgress,
    report: Callable[[PullProgress], None],
) -> list[RemoteInstance]:
    first = True
    idle_since = time.monotonic()
    while True:
        listed = list_remote(remote, options.our_aet, query)
        sop_uids = [instance.sop_uid for instance in listed]
        before = held(store, sop_uids)
        if first:
            progress.had, first = len(before), False
        progress.found = len(listed)
        missing = [instance for instance in listed if instance.sop_uid not in before]
        if missing:
            progress.remaining = len(missing)
            report(progress)
            if options.method == "get":
                get(remote, options.our_aet, missing, listed, store, writer, user)
            else:
                move(remote, Destination(options.our_aet, options.port), missing, listed)
        after = held(store, sop_uids)
        arrived = len(after - before)
        progress.fetched += arrived
        progress.remaining = len(listed) - len(after)
        report(progress)
        if arrived:
            idle_since = time.monotonic()
        if not options.follow:
            return [instance for instance in listed if instance.sop_uid not in after]
        if options.until_idle is not None and time.monotonic() - idle_since >= options.until_idle:
            return [instance for instance in listed if instance.sop_uid not in after]
        time.sleep(options.interval)


def _named(remote: Remote) -> str:
    return remote.name if remote.name == str(remote) else f"{remote.name} ({remote})"


def _audit_pull(
    writer: IndexWriter,
    remote: Remote,
    query: PullQuery,
    options: PullOptions,
    user: str,
    progress: PullProgress,
    outcome: str,
) -> None:
    asked = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(query).items() if v)
    record = audit.Record(
        "pulled", outcome=outcome, user=user, calling_aet=remote.aet, address=remote.host,
        called_aet=options.our_aet, study_uid=query.study_uid, series_uid=query.series_uid,
        patient_id=query.patient_id, instances=progress.fetched,
        detail=f"C-{options.method.upper()} from {_named(remote)}: {asked}",
    )  # fmt: skip
    writer.run(lambda index: audit.append(index.conn, [record]))
