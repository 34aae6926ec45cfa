"""Telling the kernel what each change to the index makes stale.

The kernel keeps the mount's names and attributes for long (fs.TIMEOUT) and each
listing it has read, so that a second `find` or `cp -r` asks the mount nothing. In
return the mount tells it whatever changes. Every write to the index, by whichever
process, leaves rows in its journal (the `changes` table, kept by triggers:
store/index/migrations.py); a thread of the mount reads the rows written since it last
looked, every CHECK_EVERY seconds, and tells the kernel:
- of an instance that changed or went: its inode's attributes and pages (only the
  attributes if just its access time changed);
- of a series whose files changed: the listing and attributes of its directory in
  every view, and the attributes of the directories above (their times summarise
  what they hold);
- of a study that appeared, went or moved: the listings and attributes of every
  directory on its paths, where it was and where it is now.
A directory whose rows are gone is taken out of the kernel's names, with all it holds
below. A mount that fell so far behind that rows it had not read were pruned tells the
kernel to drop everything it has of the mount.

The kernel may wait for the mount to answer a request before it can take such a
notification: they are never sent from a thread that answers requests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from ..lines import one_line
from ..store import views
from ..store.index import Index
from ..store.index.engine import Connection
from ..store.views import Kind, Node
from .inodes import ROOT_INODE, Inodes, file_inode

log = logging.getLogger(__name__)

CHECK_EVERY = 0.05  # seconds: how long the kernel may show what a commit changed
# With an index in PostgreSQL, a notification wakes the check at once (Doorbell);
# looking now and then anyway costs one indexed query.
CHECK_EVERY_WITH_DOORBELL = 1.0
_ALWAYS_THERE = frozenset({Kind.ROOT, Kind.TOP})


class Kernel(Protocol):
    def invalidate_inode(self, inode: int, *, pages: bool) -> None: ...
    def invalidate_entry(self, parent: int, name: bytes) -> None: ...


class Memory(Protocol):
    """What the mount itself keeps of the index, to forget as the kernel does."""

    def stale_file(self, inode: int) -> None: ...
    def stale_listings(self) -> None: ...


class Changes:
    def __init__(self, store: Path, inodes: Inodes, kernel: Kernel, memory: Memory) -> None:
        self.store = store
        self.inodes = inodes
        self.kernel = kernel
        self.memory = memory
        self._index: Index | None = None
        self._seen = 0
        self._wake = threading.Event()
        self._rounds = 0  # checks done
        self._checking = False  # a check is under way
        self._round_done = threading.Condition()

    def start(self) -> None:
        """Mark where the journal ends, before the kernel has anything of the mount."""
        with Index(self.store, readonly=True) as index:  # check() has its own, in its thread
            (last,) = index.conn.execute("SELECT max(seq) FROM changes").fetchone()
        self._seen = last or 0

    def follow(self, stop: threading.Event) -> None:
        """Check every CHECK_EVERY seconds, or at once when asked or rung, until stop
        is set."""
        every = CHECK_EVERY
        doorbell = self._open().engine.doorbell()
        if doorbell is not None:
            bell = threading.Thread(
                target=doorbell.run, args=(self._wake, stop), name="index doorbell", daemon=True
            )
            bell.start()
            every = CHECK_EVERY_WITH_DOORBELL
        failing = False  # said once, and again when it is over
        try:
            while not stop.is_set():
                self._wake.wait(every)
                with self._round_done:
                    self._wake.clear()
                    self._checking = True
                try:
                    self.check()
                    if failing:
                        log.info("following the index's changes again")
                    failing = False
                except Exception as exc:
                    if not failing:
                        log.warning("following the index's changes failed (%s); it is tried "
                                    "again until it works", one_line(exc))  # fmt: skip
                    log.debug("following the index's changes failed", exc_info=True)
                    failing = True
                with self._round_done:
                    self._checking = False
                    self._rounds += 1
                    self._round_done.notify_all()
        finally:
            self.close()

    def close(self) -> None:
        """Close the index connection, in the thread that checked."""
        if self._index is not None:
            self._index.close()
            self._index = None

    def catch_up(self, timeout: float = 5.0) -> None:
        """Return once the kernel has been told of every change committed before this
        call: a check that began after it has ended. For the mount's own changes (rm),
        whose caller expects every view to show them when it returns."""
        with self._round_done:
            # A check under way may have read the journal before the commit: the next.
            wanted = self._rounds + (2 if self._checking else 1)
            self._wake.set()
            self._round_done.wait_for(lambda: self._rounds >= wanted, timeout)

    def _open(self) -> Index:
        if self._index is None:  # opened in the thread that uses it
            self._index = Index(self.store, readonly=True)
        return self._index

    def _conn(self) -> Connection:
        return self._open().conn

    def check(self) -> None:
        """Tell the kernel what the changes since the last check make stale."""
        conn = self._conn()
        rows = conn.execute(
            """SELECT seq, study, series, instance, times_only FROM changes
               WHERE seq > ? ORDER BY seq""",
            (self._seen,),
        ).fetchall()
        if not rows:
            return
        (oldest,) = conn.execute("SELECT min(seq) FROM changes").fetchone()
        missed = oldest > self._seen + 1
        self._seen = rows[-1][0]
        if missed:
            log.info("the index changed faster than the mount followed: refreshing everything")
            self._drop_everything()
        else:
            self._apply(conn, rows)

    def _apply(self, conn: Connection, rows: list[tuple[int, ...]]) -> None:
        self.memory.stale_listings()
        files: dict[int, bool] = {}  # instance -> its pages too (not just its times)
        series: dict[int, bool] = {}  # series -> its listing too
        studies: dict[int, bool] = {}  # study -> the listings on its paths too
        for _, study, series_id, instance, times_only in rows:
            if series_id is None:
                if study is not None:
                    studies[study] = True
                continue
            if instance is not None:
                files[instance] = files.get(instance, False) or not times_only
            series[series_id] = series.get(series_id, False) or not times_only
            if study is not None:
                studies.setdefault(study, False)
        for instance, pages in files.items():
            self.memory.stale_file(file_inode(instance))
            self.kernel.invalidate_inode(file_inode(instance), pages=pages)
        stale: dict[int, bool] = {ROOT_INODE: False}  # inode -> its listing too
        gone: set[int] = set()
        for top in (view.top for view in views.VIEWS):
            self._mark(conn, self.inodes.known(top), False, stale, gone)
        for series_id, listing in series.items():
            for inode in self.inodes.showing(Kind.SERIES, series_id):
                self._mark(conn, inode, listing, stale, gone)
        for study, moved in studies.items():
            for inode in self._on_paths(conn, study):
                self._mark(conn, inode, moved, stale, gone)
        for inode in gone:
            stale.pop(inode, None)
            self._forget(inode)
        for inode, listing in stale.items():
            self.kernel.invalidate_inode(inode, pages=listing)

    def _on_paths(self, conn: Connection, study: int) -> set[int]:
        """The known directories on the study's paths in every view, where the mount
        last showed it and where it is now, and the directories above them."""
        found = set(self.inodes.showing(Kind.STUDY, study))
        if conn.execute("SELECT 1 FROM studies WHERE id = ?", (study,)).fetchone():
            for view in views.VIEWS:
                for chain in view.study_chains(conn, study):
                    node = view.top
                    for key in chain:
                        node = node.child(key)
                        found.add(self.inodes.known(node) or 0)
        found.discard(0)
        for inode in list(found):
            found.update(self.inodes.ancestors(inode))
        return found

    def _mark(
        self,
        conn: Connection,
        inode: int | None,
        listing: bool,
        stale: dict[int, bool],
        gone: set[int],
    ) -> None:
        """Note the inode's attributes as stale (its listing too, if listing); or the
        directory as gone, if what changed its listing took its rows."""
        node = None if inode is None else self.inodes.node_of(inode)
        if inode is None or node is None:
            return
        if listing and not self._exists(conn, node):
            gone.add(inode)
        else:
            stale[inode] = stale.get(inode, False) or listing

    @staticmethod
    def _exists(conn: Connection, node: Node) -> bool:
        return node.kind in _ALWAYS_THERE or views.attributes(conn, node) is not None

    def _forget(self, inode: int) -> None:
        """Take a directory whose rows are gone out of the kernel's names (what it holds
        below goes with it), and out of the table unless the kernel still holds it."""
        place = self.inodes.place_of(inode)
        if place is not None:
            parent, name = place
            self.kernel.invalidate_entry(parent, name.encode("utf-8", "surrogateescape"))
        self.kernel.invalidate_inode(inode, pages=True)  # one still in use shows empty
        self.inodes.drop_if_unreferenced(inode)

    def _drop_everything(self) -> None:
        self.memory.stale_listings()
        placed: Iterable[tuple[int, int, str]] = self.inodes.placed()
        for inode, parent, name in placed:
            self.kernel.invalidate_entry(parent, name.encode("utf-8", "surrogateescape"))
            self.kernel.invalidate_inode(inode, pages=True)
        self.kernel.invalidate_inode(ROOT_INODE, pages=False)
