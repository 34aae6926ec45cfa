"""The series directories one association's instances go to, held open.

A scanner sends a series at a time: opening the store and the series' directory for
every instance cost four system calls, each a hand-off of the interpreter's lock
that the other associations wait for. One association's thread alone uses its
SeriesDirectories, so no descriptor is closed while another thread uses it.

A directory removed while held (expiry took the series) takes no new entry: the
caller forgets it and opens the directory afresh (ingest.py).
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

from . import files as store_files

HELD = 4  # directories held open: the series under way, and a few before it


class SeriesDirectories:
    def __init__(self, store: Path) -> None:
        self._store = store
        self._root = -1
        self._held: collections.OrderedDict[str, int] = collections.OrderedDict()

    def open(self, rel: str) -> tuple[int, list[int], bool]:
        """(a descriptor of the directory rel below the store, made if missing and
        never through a symlink; the descriptors of the directories that gained an
        entry, to fsync and then close_all; whether it was held already). The
        directory's descriptor stays this object's."""
        held = self._held.get(rel)
        if held is not None:
            self._held.move_to_end(rel)
            return held, [], True
        if self._root < 0:
            self._root = os.open(self._store, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        target, changed = store_files.make_dirs(self._root, rel)
        self._held[rel] = target
        if len(self._held) > HELD:
            store_files.close_all([self._held.popitem(last=False)[1]])
        return target, changed, False

    def forget(self, rel: str) -> None:
        held = self._held.pop(rel, None)
        if held is not None:
            store_files.close_all([held])

    def close(self) -> None:
        store_files.close_all([*self._held.values(), *([self._root] if self._root >= 0 else [])])
        self._held.clear()
        self._root = -1
