"""Where pynetdicom writes an incoming dataset while it arrives.

With STORE_RECV_CHUNKED_DATASET, pynetdicom streams each C-STORE dataset into a
NamedTemporaryFile instead of memory, so instances of hundreds of megabytes
never sit whole in memory. `install` replaces that factory with SpoolFile (and
the file meta writer with a fast one):

- the file lies in the store's own tmp directory, so a complete instance is
  renamed into place, never copied;
- a failed write (a full disk) does not raise inside pynetdicom, which would
  break the association: the error is kept, and the C-STORE handler answers
  that one instance with a failure status while the association goes on.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pynetdicom import (
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    _config,
    dimse_messages,
)

from ..store import files as store_files


class SpoolFile:
    _open: ClassVar[dict[str, SpoolFile]] = {}  # by name, until pynetdicom closes it
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, directory: Path) -> None:
        fd, self.name = store_files.create_temp(directory, "rx-", ".dcm")
        self._out = os.fdopen(fd, "wb", buffering=1024 * 1024)
        self.error: OSError | None = None
        self.size = 0
        self.file = self  # pynetdicom flushes through `.file`
        self.owner = threading.get_ident()  # the association's DUL thread
        self.claimed = False  # by the C-STORE handler: then pynetdicom removes it after
        with SpoolFile._lock:
            SpoolFile._open[self.name] = self

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                self._out.write(data)
                self.size += len(data)
            except OSError as exc:
                self.error = exc
        return len(data)

    def flush(self) -> None:
        """pynetdicom flushes after every fragment; complete() does it once."""

    def complete(self) -> None:
        """Hand everything received to the kernel; raise the first write error, if any."""
        if self.error is None:
            try:
                self._out.flush()
            except OSError as exc:
                self.error = exc
        if self.error is not None:
            raise self.error

    def sync(self) -> None:
        """Make what complete() handed over durable."""
        os.fsync(self._out.fileno())

    def close(self) -> None:
        try:
            self._out.close()
        except OSError as exc:
            self.error = self.error or exc
        with SpoolFile._lock:
            SpoolFile._open.pop(self.name, None)

    @classmethod
    def claim(cls, name: str) -> SpoolFile | None:
        with cls._lock:
            spool = cls._open.get(name)
            if spool is not None:
                spool.claimed = True
            return spool

    @classmethod
    def discard_unfinished(cls, owner: int | None) -> None:
        """Drop what an association that ended mid-transfer left half-written."""
        cls._discard(lambda spool: spool.owner == owner)

    @classmethod
    def discard_orphans(cls) -> None:
        """Drop what associations whose thread has ended left, however they ended
        (pynetdicom sends no close event when its reactor fails)."""
        alive = {thread.ident for thread in threading.enumerate()}
        cls._discard(lambda spool: spool.owner not in alive)

    @classmethod
    def _discard(cls, which: Callable[[SpoolFile], bool]) -> None:
        """Those not claimed: a complete instance being stored is left to its handler,
        even when its association has ended meanwhile."""
        with cls._lock:
            left = [spool for spool in cls._open.values() if which(spool) and not spool.claimed]
        for spool in left:
            spool.close()
            with contextlib.suppress(OSError):
                os.unlink(spool.name)


def file_meta(
    *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, **_: Any
) -> bytes:
    """The File Meta Information group, encoded directly: building it as a pydicom
    dataset, as pynetdicom does, costs most of a millisecond per instance."""
    elements = b"".join(
        [
            _element(0x0001, b"OB", b"\x00\x01"),
            _element(0x0002, b"UI", _uid(sop_class_uid)),
            _element(0x0003, b"UI", _uid(sop_instance_uid)),
            _element(0x0010, b"UI", _uid(transfer_syntax)),
            _element(0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)),
            _element(0x0013, b"SH", _even(PYNETDICOM_IMPLEMENTATION_VERSION.encode(), b" ")),
        ]
    )
    return _element(0x0000, b"UL", struct.pack("<I", len(elements))) + elements


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":  # a long VR: two reserved bytes and a 4-byte length
        return struct.pack("<HH2s2xI", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _uid(value: str) -> bytes:
    return _even(str(value).encode("ascii"), b"\x00")


def _even(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _write_meta(out: SpoolFile, meta: bytes) -> None:
    out.write(meta)


def install(directory: Path) -> None:
    """Make pynetdicom spool every incoming dataset into `directory` through SpoolFile."""
    directory.mkdir(parents=True, exist_ok=True)
    _config.STORE_RECV_CHUNKED_DATASET = True

    def factory(*args: Any, **kwargs: Any) -> SpoolFile:
        return SpoolFile(directory)

    # The three names pynetdicom's chunked receive uses to start each spooled file.
    dimse_messages.NamedTemporaryFile = factory  # type: ignore[assignment]
    dimse_messages.create_file_meta = file_meta  # type: ignore[assignment]
    dimse_messages.write_file_meta_info = _write_meta  # type: ignore[assignment]
