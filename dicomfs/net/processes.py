"""serve's receiver in several processes, so that associations at once use every core.

One interpreter runs one thread at a time: four associations in one process take
turns at it and hand its lock to each other at every read, write and fsync. So
serve forks receiver processes at its start, before it has a thread or a
connection of its own (they share its code, copy-on-write), and then accepts
every connection itself and hands it (the socket, over a Unix socket) to the
process with the fewest connections. That process serves the association
as a lone receiver does (receiver.py), with an index writer of its own: the index
orders the processes' commits, and the mount learns of them from its journal, as
it learns of another machine's. --max-associations counts the associations of
all of them together, in shared memory.

A receiver process dies with serve (PR_SET_PDEATHSIG: serve's main thread forks
them, and it lasts as long as serve). If one dies alone, serve
stops and exits with an error, as if it had crashed itself: its restart recovers
what the crash left (service.recover).
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import dataclasses
import gc
import logging
import multiprocessing
import os
import pickle
import select
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from multiprocessing.sharedctypes import SynchronizedArray
from pathlib import Path
from typing import NoReturn

from ..health import RecentErrors
from ..store.writer import IndexWriter, Shared
from . import ingest
from .activity import merged
from .receiver import (
    AUDIT_RETRY_INTERVAL,
    MAX_PENDING,
    STOP_TIMEOUT,
    Gate,
    Listening,
    Policy,
    Receiver,
    Snapshot,
    listen,
    said_listening,
)
from .wire import Timeouts

log = logging.getLogger(__name__)

REPLY_TIMEOUT = 10.0  # seconds a receiver process has to take a connection or a stop
# Seconds the receiver processes have to say what they are doing: dicomfs status waits
# for serve's answer 10 s, and one that is slow is left out of it.
REPORT_TIMEOUT = 3.0
_PR_SET_PDEATHSIG, _PR_SET_NAME = 1, 15  # prctl(2)
_MESSAGE = 1 << 20  # bytes: the largest message either side sends (a Snapshot)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What each receiver process receives with."""

    store: Path
    aet: str
    policy: Policy
    timeouts: Timeouts
    tls: ssl.SSLContext | None
    max_pending: int = MAX_PENDING  # of each process (Receiver)
    shared: Shared | None = None  # by the index writers of serve's processes (writer.py)


class SharedGate(Gate):
    """--max-associations over every receiver process, and the connections each has:
    counts in memory they share with serve, which hands the next connection to the
    process with the fewest."""

    def __init__(self, limit: int, counts: SynchronizedArray[int], number: int) -> None:
        """counts: the associations accepted by each process, then its connections."""
        super().__init__(limit)
        self.number = number
        self._counts = counts
        self._connections = len(counts) // 2 + number

    def enter(self) -> bool:
        with _locked(self._counts):
            if sum(self._counts[: len(self._counts) // 2]) >= self.limit:
                return False
            self._counts[self.number] += 1
            return True

    def leave(self) -> None:
        with _locked(self._counts):
            self._counts[self.number] -= 1

    def closed(self) -> None:
        with _locked(self._counts):
            self._counts[self._connections] -= 1


@contextlib.contextmanager
def _locked(counts: SynchronizedArray[int]) -> Iterator[None]:
    """The counts' lock, held a few instructions at a time; past a second, whoever
    holds it was killed in between (serve is stopping then): go on without it."""
    lock = counts.get_lock()
    got = lock.acquire(timeout=1.0)
    try:
        yield
    finally:
        if got:
            lock.release()


@dataclasses.dataclass
class _Child:
    name: str
    pid: int
    ended: int  # a pidfd: readable once the process has ended
    channel: socket.socket  # serve's end
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # to send
    asking: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # its answers

    def wait(self, timeout: float | None) -> bool:
        """Whether it ended within timeout seconds (None: however long it takes)."""
        return bool(select.select([self.ended], [], [], timeout)[0])

    def how_it_ended(self) -> str:
        """Once ended: its exit status or signal, as a log line says it."""
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        if info is None:
            return "still running"
        if info.si_code == os.CLD_EXITED:
            return f"exit status {info.si_status}"
        return f"killed by {signal.Signals(info.si_status).name}"

    def reap(self) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        os.close(self.ended)
        self.channel.close()


class ReceiverProcesses:
    """The receiver of serve (see Receiver), in `count` processes forked now."""

    def __init__(
        self, settings: Settings, count: int, max_associations: int, errors: RecentErrors
    ) -> None:
        """errors: serve's RecentErrors, which each process keeps its own copy of."""
        self.aet, self.policy, self.port = settings.aet, settings.policy, 0
        self.processes = count
        self.failed = False  # a receiver process ended by itself
        self._stopping = False
        self._listening: Listening | None = None
        self._next = 0  # the process a tie goes to
        self._asked = 0  # questions asked of the receiver processes (snapshot)
        self._counts = multiprocessing.get_context("fork").Array("i", 2 * count)  # SharedGate
        self._children: list[_Child] = []
        gc.freeze()  # the objects of now, shared: a collection in a child copies no page of them
        for number in range(count):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            gate = SharedGate(max_associations, self._counts, number)
            pid = os.fork()
            if pid == 0:
                _run_child(theirs, settings, gate, errors)  # never returns
            theirs.close()
            ours.settimeout(REPLY_TIMEOUT)
            self._children.append(_Child(f"receiver {number + 1}", pid, os.pidfd_open(pid), ours))
        self._watching = threading.Thread(target=self._watch, name="receivers", daemon=True)
        self._watching.start()
        log.info("receiving in %d processes (pids %s)", count,
                 ", ".join(str(child.pid) for child in self._children))  # fmt: skip

    def start(self, host: str, port: int) -> None:
        self._listening = Listening(listen(host, port), self._hand)
        self.port = self._listening.port
        for child in self._children:  # a C-MOVE to this port is one to ourselves
            with child.lock:
                child.channel.send(pickle.dumps(("listening", self.port)))
        said_listening(self.aet, host, self.port, self.policy)

    def _hand(self, sock: socket.socket, address: str) -> None:
        """Give a connection to the process with the fewest, the next one on a tie."""
        turns = len(self._children)
        with _locked(self._counts):
            connections = self._counts[turns:]
            number = min(range(turns), key=lambda n: connections[(self._next + n) % turns])
            number = (self._next + number) % turns
            self._counts[turns + number] += 1
        self._next = (number + 1) % turns
        child = self._children[number]
        try:
            with child.lock:
                child.channel.sendmsg(
                    [pickle.dumps(("take", address))],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [sock.fileno()]))],
                )
        except OSError as exc:
            with _locked(self._counts):
                self._counts[turns + number] -= 1
            log.error("could not hand a connection from %s to %s: %s", address,
                      child.name, exc)  # fmt: skip
        finally:
            sock.close()  # the receiver process has its own descriptor now

    def snapshot(self) -> Snapshot:
        """What the receiver processes are doing, together: each is asked at once,
        and one that does not answer within REPORT_TIMEOUT is left out (said in the
        log). A late answer is told from the next one by the question's number."""
        self._asked += 1
        asked: list[_Child] = []
        for child in self._children:
            try:
                with child.lock:
                    child.channel.send(pickle.dumps(("report", self._asked)))
                asked.append(child)
            except OSError as exc:
                log.warning("could not ask %s what it is doing: %s", child.name, exc)
        deadline = time.monotonic() + REPORT_TIMEOUT
        snapshots = [self._answer(child, deadline) for child in asked]
        found = [snapshot for snapshot in snapshots if snapshot is not None]
        return Snapshot(
            [association for snapshot in found for association in snapshot.associations],
            merged(snapshot.today for snapshot in found),
            [error for snapshot in found for error in snapshot.errors],
        )

    def _answer(self, child: _Child, deadline: float) -> Snapshot | None:
        """The child's answer to the question just asked, or None if it is late (an
        answer already there is taken even past the deadline). Connections are handed
        to it meanwhile: only its answers are waited for here."""
        with child.asking:
            try:
                while select.select([child.channel], [], [], max(deadline - time.monotonic(),
                                                                 0.05))[0]:  # fmt: skip
                    number, snapshot = pickle.loads(child.channel.recv(_MESSAGE))
                    if number == self._asked:
                        return snapshot
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                log.warning("%s did not say what it is doing: %s", child.name, exc)
                return None
        log.warning("%s did not say what it is doing within %g s", child.name, REPORT_TIMEOUT)
        return None

    def retry_audit(self) -> None:
        """Each receiver process tries its own audit records again."""

    def _watch(self) -> None:
        """Stop serve if a receiver process ends by itself."""
        by_pidfd = {child.ended: child for child in self._children}
        ended, _, _ = select.select(list(by_pidfd), [], [])
        if self._stopping:
            return
        self.failed = True
        child = by_pidfd[ended[0]]
        log.error("%s (pid %d) ended by itself (%s): stopping serve; a restart recovers "
                  "what it left", child.name, child.pid, child.how_it_ended())  # fmt: skip
        os.kill(os.getpid(), signal.SIGTERM)

    def stop(self) -> None:
        """Stop listening, then stop every receiver process as a lone receiver stops
        (Receiver.stop), all at once, and wait for them."""
        self._stopping = True
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.close()
        for child in self._children:
            try:
                with child.lock:
                    child.channel.send(pickle.dumps(("stop", None)))
            except OSError:
                pass  # it has ended already
        for child in self._children:
            if not child.wait(STOP_TIMEOUT + REPLY_TIMEOUT):
                log.error("%s did not stop: killing it", child.name)
                os.kill(child.pid, signal.SIGKILL)
            child.reap()


def _run_child(
    channel: socket.socket, settings: Settings, gate: SharedGate, errors: RecentErrors
) -> NoReturn:
    """The receiver process, just forked: receive, then end without returning to
    serve's code (nor running its exit handlers)."""
    status = 1
    try:
        _receive(channel, settings, gate, errors)
        status = 0
    except BaseException:
        log.exception("a receiver process failed")
    finally:
        os._exit(status)


def _receive(
    channel: socket.socket, settings: Settings, gate: SharedGate, errors: RecentErrors
) -> None:
    """Serve the connections serve hands over, until it says stop."""
    _close_inherited(keep=channel.fileno())
    errors.forget()  # serve's, from before the fork
    _end_with(os.getppid())
    _name(f"dicomfs recv {gate.number + 1}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # serve stops us, in its own time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ingest.crash_with(os.getppid())  # a test's crash is serve's crash
    writer = IndexWriter(settings.store, shared=settings.shared)
    receiver = Receiver(
        settings.store, writer, aet=settings.aet, policy=settings.policy,
        timeouts=settings.timeouts, tls=settings.tls, gate=gate, max_pending=settings.max_pending,
    )  # fmt: skip
    stopped = threading.Event()
    retrying = threading.Thread(target=_retry_audit, args=(receiver, stopped), daemon=True)
    retrying.start()
    try:
        while True:
            data, fds, _, _ = socket.recv_fds(channel, _MESSAGE, 1)
            if not data:
                break  # serve is gone
            kind, detail = pickle.loads(data)
            if kind == "take":
                receiver.take(socket.socket(fileno=fds[0]), detail)
            elif kind == "listening":
                receiver.port = detail
            elif kind == "report":
                snapshot = dataclasses.replace(receiver.snapshot(), errors=errors.last())
                channel.send(pickle.dumps((detail, snapshot)))
            else:
                break
    finally:
        stopped.set()
        receiver.stop()
        writer.close()


def _retry_audit(receiver: Receiver, stopped: threading.Event) -> None:
    while not stopped.wait(AUDIT_RETRY_INTERVAL):
        receiver.retry_audit()


def _close_inherited(keep: int) -> None:
    """Close what the fork copied of serve's descriptors but the standard streams:
    serve's lock on the store, its index connections, its listener. Held here, a
    lock would outlive a serve killed with -9 by as long as this process took to
    end, and a new serve could not start meanwhile."""
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))


def _name(name: str) -> None:
    """The name ps -o comm and top show (15 bytes at most): the command line is serve's."""
    ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15])


def _end_with(parent: int) -> None:
    """Have the kernel kill this process when serve ends, however it ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # serve ended before the line above
        os._exit(1)
