"""The one `dicomfs serve` of a store (or of a machine, see sharing.py): its lock, and
where it listens.

serve holds an flock on STORE/.dicomfs/serve.lock for its whole life (the kernel
releases it however the process ends), so a second serve of the same store
refuses at once. Once it listens, it writes STORE/.dicomfs/serve.json (its pid,
port and AE title), and removes it at stop, so that `dicomfs pull` can tell the
serve of its own store from whatever else holds a port. A serve.json that a
crash left behind is ignored: nobody holds the lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from . import files as store_files
from . import sharing
from .index import INDEX_DIR

LOCK_FILE = "serve.lock"
RECORD_FILE = "serve.json"
# A pull looking (listening() takes the lock for an instant) must not make a
# starting serve refuse: a serve tries this long before it does.
LOCK_PATIENCE = 0.2


class AlreadyServed(Exception):
    """Another serve holds the store; the message says which."""


@dataclasses.dataclass(frozen=True)
class Listening:
    pid: int
    port: int
    aet: str


@contextlib.contextmanager
def locked(store: Path) -> Iterator[None]:
    """Hold the store's serve lock for the block; AlreadyServed if another holds it."""
    fd = _open_lock(store, os.O_RDWR | os.O_CREAT)
    try:
        if not _lock(fd, fcntl.LOCK_EX, patience=LOCK_PATIENCE):
            other = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            name = sharing.serve_name(store)
            if name is None:
                raise AlreadyServed(
                    f"another dicomfs serve (pid {other}) serves {store}: stop it first, "
                    "or serve another store"
                )
            raise AlreadyServed(
                f"another dicomfs serve named {name} (pid {other}) serves {store}: stop it "
                "first, or give this one another --name"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        withdraw(store)  # what a crashed serve left says nothing true
        try:
            yield
        finally:
            withdraw(store)
    finally:
        os.close(fd)  # releases the lock


def announce(store: Path, port: int, aet: str) -> None:
    """Say where this process's serve listens (atomically: a reader sees all or nothing)."""
    record = {"pid": os.getpid(), "port": port, "aet": aet}
    fd, temp = store_files.create_temp(store / INDEX_DIR, "serve-", ".json")
    with os.fdopen(fd, "w") as out:
        json.dump(record, out)
    os.replace(temp, _record_path(store))


def withdraw(store: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        _record_path(store).unlink()


def listening(store: Path) -> Listening | None:
    """Where the serve of this store listens, or None if none runs (or it does not
    listen yet)."""
    try:
        fd = _open_lock(store, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if _lock(fd, fcntl.LOCK_SH, patience=0):
            return None  # nobody holds it (closing the descriptor lets it go again)
    finally:
        os.close(fd)
    try:
        record = json.loads(_record_path(store).read_text())
        return Listening(int(record["pid"]), int(record["port"]), str(record["aet"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _open_lock(store: Path, flags: int) -> int:
    path = store / INDEX_DIR / sharing.own(store, LOCK_FILE)
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, store_files.FILE_MODE)


def _lock(fd: int, kind: int, *, patience: float) -> bool:
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def _record_path(store: Path) -> Path:
    return store / INDEX_DIR / sharing.own(store, RECORD_FILE)
