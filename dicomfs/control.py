"""A running serve answers `dicomfs status` on a local socket in its store.

STORE/.dicomfs/serve.sock (serve@NAME.sock where several serves share the store:
sharing.py): its user alone may connect, or its group too when the
store is shared (modes.py). It is never on the
network. A client sends one request line and reads one JSON document to the end.
The socket is bound and reached through /proc/self/fd/N/, so that a long store
path never meets the 108-byte limit of a socket's address.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .store import modes, sharing
from .store.index import INDEX_DIR

log = logging.getLogger(__name__)

SOCKET_NAME = "serve.sock"
STATUS = b"status\n"
TIMEOUT = 10.0  # seconds a client may take to ask, and a report to be read
MAX_REPLY = 16 << 20


class StatusSocket:
    """Answers each connection with report(), as JSON, one at a time."""

    def __init__(self, store: Path, report: Callable[[], dict[str, Any]]) -> None:
        self._store = store
        self._report = report
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with _through_fd(self._store) as path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a crashed serve's: this one holds the store's lock
            listener.bind(path)
            # A client needs write permission to connect: the store's group may ask
            # when the store is shared with it, as it may read the rest.
            os.chmod(path, 0o660 if modes.umask_for(self._store) == modes.GROUP else 0o600)
        listener.listen(8)
        self._listener = listener
        self._thread = threading.Thread(target=self._answer, name="status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        listener.close()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(FileNotFoundError):
            (self._store / INDEX_DIR / sharing.own(self._store, SOCKET_NAME)).unlink()

    def _answer(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            with client:
                try:
                    client.settimeout(TIMEOUT)
                    if client.recv(len(STATUS)) != STATUS:
                        continue
                    client.sendall(json.dumps(self._report()).encode())
                except OSError:
                    pass  # the client went away
                except Exception:
                    log.exception("could not answer dicomfs status")


def ask(store: Path) -> dict[str, Any] | None:
    """The running serve's report, or None when no serve runs for this store."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(TIMEOUT)
        try:
            with _through_fd(store) as path:
                client.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        client.sendall(STATUS)
        reply = bytearray()
        while chunk := client.recv(1 << 16):
            reply += chunk
            if len(reply) > MAX_REPLY:
                raise ValueError("the report is too long")
    return json.loads(reply) if reply else None


@contextlib.contextmanager
def _through_fd(store: Path) -> Iterator[str]:
    fd = os.open(store / INDEX_DIR, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{sharing.own(store, SOCKET_NAME)}"
    finally:
        os.close(fd)
