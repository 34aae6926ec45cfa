"""`dicomfs serve`: the receiver and the mount in one service, recovering at start.

One serve per store, or per machine where several share the store and its index
in PostgreSQL (sharing.py): a second one refuses to start (running.py). At start,
what a crash may have left is put right before anything is accepted: its
half-received files in the store's tmp directory are removed, and the index is
reconciled with the files (a file renamed into place just before a crash, but
never acknowledged, is indexed now). Of several serves sharing an index, one at a
time reconciles and expires (SweeperTurn), and another takes over when it goes.
Then the receiver listens (in receiver processes forked at the start, when there
are several: net/processes.py) and the mount serves until SIGINT or SIGTERM. Under
systemd (Type=notify) serve says READY=1 once it receives and its mount is up, and
STOPPING=1 when its stop begins (notify.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import control, health, notify
from .life import expiry
from .mount import run as mount
from .mount.fs import MountOptions
from .net.processes import ReceiverProcesses, Settings
from .net.receiver import AUDIT_RETRY_INTERVAL, MAX_PENDING, Policy, Receiver
from .net.wire import Timeouts
from .store import diskspace, running, sharing
from .store import files as store_files
from .store.index import Index
from .store.index.engine import SweeperTurn
from .store.indexer import reconcile
from .store.writer import IndexWriter, Shared

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """The service cannot start; the message says why."""


@dataclasses.dataclass(frozen=True)
class ReceiverOptions:
    host: str
    port: int
    aet: str
    policy: Policy
    max_associations: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    timeouts: Timeouts = dataclasses.field(default_factory=Timeouts)
    processes: int = 1  # more: forked at the start (net/processes.py)


def recover(store: Path, turn: SweeperTurn) -> None:
    """Remove half-received files, then bring the index in step with the files (if it
    is this serve's turn: several may share the index, sharing.py)."""
    removed = 0
    for leftover in store_files.tmp_dir(store).iterdir():
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed += 1
    if removed:
        what = "1 half-received file" if removed == 1 else f"{removed} half-received files"
        log.warning("removed %s left by a crash", what)
    if not turn.held():
        log.info("another serve sharing the index expires and reconciles it")
        return
    with Index(store) as index:
        report = reconcile(index, store)
    log.info(
        "index in step with the store: %d indexed, %d removed, %d unchanged, %d skipped",
        report.indexed, report.removed, report.unchanged, len(report.skipped),
    )  # fmt: skip


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ServiceError("TLS needs both --tls-cert and --tls-key")
    # Each association does its handshake in its own thread (acceptor.py), within
    # the deadline of its request: a silent peer holds up nobody else.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ServiceError(f"cannot use {cert} and {key} for TLS: {exc}") from exc
    return context


@dataclasses.dataclass(frozen=True)
class ExpiryOptions:
    retention: float  # seconds
    interval: float  # seconds between sweeps


def sweeper(
    store: Path, writer: IndexWriter, options: ExpiryOptions, turn: SweeperTurn
) -> mount.Task:
    """A task that expires what is due, and reconciles, every `interval` seconds,
    whenever it is this serve's turn."""

    def sweep_forever(stop: threading.Event) -> None:
        held = turn.held()
        while not stop.wait(options.interval):
            if turn.held():
                if not held:
                    log.info("this serve now expires and reconciles the shared index")
                held = True
                sweep(store, writer, options)
            else:
                held = False

    return sweep_forever


def sweep(store: Path, writer: IndexWriter, options: ExpiryOptions) -> None:
    try:
        gone = expiry.expire(writer, store, time.time(), options.retention, by="dicomfs serve")
        if gone:
            freed = sum(series.bytes for series in gone)
            log.info("expired %d series (%d bytes)", len(gone), freed)
        with Index(store) as index:
            report = reconcile(index, store)
        if report.indexed or report.removed:
            log.info("reconciled: %d indexed, %d removed", report.indexed, report.removed)
    except Exception:
        log.exception("the expiry sweep failed; it runs again later")


DISK_CHECK_INTERVAL = 10.0  # seconds between two looks at the store's free space


def run(
    store: Path,
    receiving: ReceiverOptions,
    expiring: ExpiryOptions,
    mountpoint: Path | None,
    mount_options: MountOptions,
    warn_free: diskspace.Floor,
    configured_by: Sequence[Path] = (),
) -> None:
    """Serve the store until a signal or an unmount; one serve per store (running.py).
    configured_by: the configuration files the options came from, for the log."""
    errors = health.RecentErrors()  # for dicomfs status
    logging.getLogger().addHandler(errors)
    try:
        with running.locked(store), _sweeper_turn(store) as turn:
            read = ", ".join(map(str, configured_by)) or "none (the options and their defaults)"
            log.info("configuration files: %s", read)
            if os.environ.get(sharing.NAME_VARIABLE) and sharing.serve_name(store) is None:
                log.warning("--name is not used: the index is the store's own SQLite file, "
                            "and a store with it has one serve")  # fmt: skip
            _serve(store, receiving, expiring, mountpoint, mount_options,
                   health.DiskWatch(store, warn_free), errors, turn)  # fmt: skip
    except running.AlreadyServed as exc:
        raise ServiceError(str(exc)) from exc
    finally:
        logging.getLogger().removeHandler(errors)


@contextlib.contextmanager
def _sweeper_turn(store: Path) -> Iterator[SweeperTurn]:
    with Index(store) as index:
        turn = index.engine.sweeper_turn()
    try:
        yield turn
    finally:
        turn.close()


def _serve(
    store: Path,
    receiving: ReceiverOptions,
    expiring: ExpiryOptions,
    mountpoint: Path | None,
    mount_options: MountOptions,
    disk: health.DiskWatch,
    errors: health.RecentErrors,
    turn: SweeperTurn,
) -> None:
    disk.check()  # a disk nearly full is said at the start
    notify.status("recovering: clearing half-received files, reconciling the index")
    recover(store, turn)
    tls = tls_context(receiving.tls_cert, receiving.tls_key)
    receiver, writer = _receiver_and_writer(store, receiving, tls, errors)
    report = health.Report(store, receiver, receiving.host, mountpoint, expiring.retention,
                           disk, errors)  # fmt: skip
    status = control.StatusSocket(store, report)
    try:
        try:
            receiver.start(receiving.host, receiving.port)
        except OSError as exc:
            raise ServiceError(
                f"cannot listen on {receiving.host}:{receiving.port}: {exc.strerror or exc}"
            ) from exc
        running.announce(store, receiving.port, receiving.aet)
        status.start()
        watching_disk = mount.every(DISK_CHECK_INTERVAL, disk.check, "a look at the free space")
        holding = mount.every(AUDIT_RETRY_INTERVAL, receiver.retry_audit,
                              "writing the audit records held back")  # fmt: skip
        tasks = [sweeper(store, writer, expiring, turn), watching_disk, holding]
        receiving_on = f"receiving on {receiving.host}:{receiving.port} as {receiving.aet}"
        if mountpoint is None:
            mount.run_until_signal(tasks, on_started=lambda: _ready(receiving_on))
        else:
            mounted = f"{receiving_on}; {store} mounted on {mountpoint}"
            mount.run(
                store, mountpoint, mount_options, tasks, writer=writer,
                on_mounted=lambda: _ready(mounted),
            )  # fmt: skip
    finally:
        notify.stopping()
        # The stop is bounded (receiver.STOP_TIMEOUT); a second Ctrl-C must not cut
        # it short and leave acknowledged instances out of the audit trail.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        running.withdraw(store)  # a pull started now receives for itself
        status.stop()
        receiver.stop()  # the associations' close handlers write to the index
        writer.close()
        log.info("stopped (pid %d)", os.getpid())
    if isinstance(receiver, ReceiverProcesses) and receiver.failed:
        raise ServiceError("a receiver process ended by itself, so serve stopped (the log "
                           "says more); a restart recovers what it left")  # fmt: skip


def _receiver_and_writer(
    store: Path,
    receiving: ReceiverOptions,
    tls: ssl.SSLContext | None,
    errors: health.RecentErrors,
) -> tuple[Receiver | ReceiverProcesses, IndexWriter]:
    """The receiver, and serve's index writer. Receiver processes are forked first,
    before serve has a thread or an index connection of its own; a receiver in
    serve's process shares serve's writer, and so commits with the mount."""
    if receiving.processes > 1:
        shared = Shared.made(store) if sharing.serve_name(store) is None else None  # SQLite's
        settings = Settings(
            store, receiving.aet, receiving.policy, receiving.timeouts, tls,
            max_pending=max(1, MAX_PENDING // receiving.processes),  # serve's, shared out
            shared=shared,
        )  # fmt: skip
        processes = ReceiverProcesses(
            settings, receiving.processes, receiving.max_associations, errors
        )
        return processes, IndexWriter(store, shared=shared)
    writer = IndexWriter(store)
    receiver = Receiver(
        store, writer, aet=receiving.aet, policy=receiving.policy,
        max_associations=receiving.max_associations, timeouts=receiving.timeouts, tls=tls,
    )  # fmt: skip
    return receiver, writer


def _ready(what: str) -> None:
    """Tell systemd (Type=notify) that serve receives, and mounts if it does."""
    notify.status(what)
    notify.ready()
