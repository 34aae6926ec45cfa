"""The FUSE adapter: view nodes -> the kernel's replies, errors -> errno.

A protocol adapter only: what the directories hold is store.views' business, how
requests come and go is session.py's. Handlers run on the session's reading thread.
What may wait on the disk or take long is handed to a worker (session.Later): the
listing of a view, a patient or a day (thousands of entries at a million instances),
opening a file whose path the kernel has not cached, reading bytes not in the page
cache, index.html, and every write to the index. A lookup, a getattr and the listing
of one study or series, a few rows found through an index, run on the reading
thread, where a hand-off would cost more than the query.

The kernel keeps what it is told for long (TIMEOUT) and keeps each listing itself;
changes.py tells it what each change to the index makes stale, as it happens.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import errno
import itertools
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from ..life import access, expiry
from ..store import files as store_files
from ..store import thumbnails, views
from ..store.index import Index, IndexUnusable
from ..store.index.engine import Connection
from ..store.views import Attributes, Entry, Kind, Node
from ..store.writer import IndexWriter
from . import kernel, nowait, page, series_page
from .inodes import FILE_INODES, ROOT_INODE, Inodes, file_inode
from .session import FuseError, Later, Request, Then

log = logging.getLogger(__name__)

# How long the kernel may trust a name or attributes without asking again: anything
# that changes them is told to it as it changes (changes.py), so this only bounds
# the cost of a change the mount could not see.
TIMEOUT = 3600.0
_TIMEOUT = kernel.split_time(TIMEOUT)
_NEVER = (0, 0)  # index.html: never cached, its size is worked out each time (_page_attributes)
# What index.html takes besides its studies, at most; and for each study, before a page
# has shown what one takes (_page_attributes).
_PAGE_HEAD, _PAGE_GUESS_PER_STUDY = 64 * 1024, 8 * 1024
BLOCK_SIZE = 128 * 1024  # st_blksize: what cp reads at a time
# How long a directory that rm has emptied through the mount can still be found, empty,
# after the last deletion below it (rm removes a directory right after emptying it).
EMPTIED_GRACE = 30.0
_EMPTY_DIRECTORY = Attributes(True, 0, None, None)  # one whose rows are gone
# A study's series and a series' files are bounded by one exam and found through an
# index: listed on the reading thread. Listings of a whole view, a patient or a day
# may be long: those go to a worker.
_LISTED_AT_ONCE = frozenset({views.Kind.ROOT, views.Kind.STUDY, views.Kind.SERIES})
KEPT_LISTINGS = 256  # listings being read (readdir offsets point into them)
KNOWN_FILES = 100_000  # files opened whose paths are kept (about 20 MB)
_NS = 1_000_000_000
_WRITING = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND


@dataclasses.dataclass(frozen=True)
class MountOptions:
    uid: int = dataclasses.field(default_factory=os.getuid)
    gid: int = dataclasses.field(default_factory=os.getgid)
    file_mode: int = 0o600  # patients' data: the mounting user only, by default
    allow_other: bool = False
    allow_delete: bool = False  # rm of instance files (so rm -r of a series) deletes them
    retention: float | None = None  # seconds, when expiry runs beside the mount (serve)


class _StoredFile(NamedTuple):  # a tuple: every open makes one
    """An open instance file."""

    fd: int
    size: int
    inode: int


@dataclasses.dataclass(slots=True)
class _Held:
    """An instance file that handles hold open, with its attributes when it was opened:
    what stat answers after its row is gone (expired, deleted) until the last close."""

    attributes: Attributes
    handles: int = 0


def _open_writer(store: Path) -> IndexWriter | None:
    """The mount writes accesses and vanished files; a store it may not write is
    still shown, without them."""
    try:
        return IndexWriter(store)
    except (OSError, sqlite3.Error, IndexUnusable) as exc:
        log.warning("the index cannot be written (%s): access times will not be recorded", exc)
        return None


class _Reader(threading.local):
    """One read-only index per thread (sqlite3 objects stay in their thread)."""

    index: Index | None = None


class DicomOperations:
    def __init__(
        self,
        store: Path,
        mountpoint: Path,
        options: MountOptions,
        writer: IndexWriter | None = None,
    ) -> None:
        self.store = store
        self._root = os.open(store, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.mountpoint = mountpoint
        self.accesses = access.AccessLog()
        self._own_writer = writer is None
        self.writer = writer if writer is not None else _open_writer(store)
        self.options = options
        self.inodes = Inodes()
        self._local = _Reader()
        self._lock = threading.Lock()  # the tables below: the reading thread and workers
        self._files: dict[int, _StoredFile] = {}
        # inode -> where its instance is, from its first open until the kernel forgets
        # it or changes.py says it changed: later opens need no query
        self._known_files: dict[int, views.InstanceFile] = {}
        self._held: dict[int, _Held] = {}  # inode -> its open instance file
        # a directory rm deleted below -> when last (time.monotonic), its parent, its name
        self._emptying: dict[Node, tuple[float, Node, str]] = {}
        self._pages: dict[int, tuple[Node, bytes]] = {}  # fh -> a page as generated at open
        self._page_per_study: int | None = None  # the most bytes a study took on a page
        self._last_page_at: float | None = None  # when: the mount's start, until an open
        self._handles = itertools.count(1)
        # Listings being read: readdir offsets are (listing number << 32 | position),
        # so a directory read in several calls reads one listing, however the index
        # changes meanwhile.
        self._listings: collections.OrderedDict[int, tuple[bytes, list[int]]] = (
            collections.OrderedDict()
        )
        self._listing_numbers = itertools.count(1)
        # directory inode -> its entries by name, as last listed: answers the lookups
        # that follow a listing, until changes.py says the index changed
        self._listed: collections.OrderedDict[int, dict[str, Entry]] = collections.OrderedDict()
        self._mounted_at = time.time()
        # Returns once the kernel has been told of the mount's own last change to the
        # index (changes.Changes.catch_up, set by run.py).
        self.changed: Callable[[], None] = lambda: None
        # The owner may write, whatever --mode says: cp -r keeps the modes it copies, and
        # a copy must be its copier's to change and delete. The mount itself stays
        # read-only: writes are EROFS, and unlink is EROFS without --allow-delete.
        mode = options.file_mode | stat.S_IWUSR
        self._file_mode = stat.S_IFREG | mode
        # Directories can be entered by whoever may read the files.
        self._dir_mode = stat.S_IFDIR | mode | ((mode & 0o444) >> 2)
        # Reading through the mount must not touch the stored file's atime.
        self._open_flags = os.O_RDONLY | (os.O_NOATIME if os.geteuid() == 0 else 0)

    # --- helpers --------------------------------------------------------------------

    def _index(self) -> Index:
        """This thread's read-only index."""
        if self._local.index is None:
            self._local.index = Index(self.store, readonly=True)
        return self._local.index

    def _conn(self) -> Connection:
        return self._index().conn

    def _node(self, inode: int) -> Node:
        node = self.inodes.node_of(inode)
        if node is None:
            raise FuseError(errno.ENOENT)
        return node

    def _attr(self, inode: int, found: Attributes) -> tuple[int, ...]:
        """fuse_attr's fields for a node's attributes."""
        received = found.received if found.received is not None else self._mounted_at
        modified = int(received * 1e9)
        accessed = int(found.accessed * 1e9) if found.accessed is not None else modified
        if found.is_dir:
            mode, links = self._dir_mode, 2
        else:
            mode, links = self._file_mode, 1
        size = found.size
        return (
            inode, size, (size + 511) // 512,
            accessed // _NS, modified // _NS, modified // _NS,
            accessed % _NS, modified % _NS, modified % _NS,
            mode, links, self.options.uid, self.options.gid, 0, BLOCK_SIZE, 0,
        )  # fmt: skip

    def _entry(self, node: Node, inode: int, found: Attributes) -> bytes:
        entry_s, entry_ns = _TIMEOUT
        if node.kind is Kind.PAGE:
            attr_s, attr_ns = _NEVER
            found = self._page_attributes(node)
        else:
            attr_s, attr_ns = _TIMEOUT
        return kernel.ENTRY_OUT.pack(
            inode, 0, entry_s, attr_s, entry_ns, attr_ns, *self._attr(inode, found)
        )

    def _page_attributes(self, node: Node, fh: int | None = None) -> Attributes:
        """stat never generates index.html (it takes seconds on a large store).

        While a page is open, a stat has the size of the newest one (or of the handle
        an fstat names, when the kernel says): `wc -c` opens, then trusts fstat's
        size. Otherwise, a size the next page will not exceed, from the number of
        studies: Chromium stats the file, then opens it and reads that many bytes,
        and must get it all; reads end where the page ends, whatever the size said
        (direct_io). The kernel does not cache these (attribute timeout 0). Its
        mtime is when the last page was generated (the mount's start before)."""
        with self._lock:
            if fh not in self._pages:
                fh = max((h for h, (n, _) in self._pages.items() if n == node), default=None)
            opened = self._pages.get(fh) if fh is not None else None
        if opened is not None:
            return Attributes(False, len(opened[1]), self._last_page_at, None)
        shows = views.generated(node)
        if shows.what == "thumbnail":
            bound = thumbnails.MOST_BYTES
        elif shows.what == "series":
            (series,) = (
                self._conn()
                .execute("SELECT count(*) FROM series WHERE study = ?", (shows.row,))
                .fetchone()
            )
            bound = _PAGE_HEAD + series * _PAGE_GUESS_PER_STUDY
        else:
            (studies,) = self._conn().execute("SELECT count(*) FROM studies").fetchone()
            per_study = self._page_per_study or _PAGE_GUESS_PER_STUDY
            bound = _PAGE_HEAD + 2 * studies * per_study
        return Attributes(False, bound, self._last_page_at, None)

    def _still_held(self, node: Node, inode: int) -> Attributes:
        """What stat answers for an inode the kernel holds whose rows are gone (expired,
        deleted): the kernel asks again once told the rows changed, or after an rmdir
        or unlink inside it, until it forgets the inode.

        POSIX keeps an open file stat-able until its last close, whatever the index
        says. A directory stays, empty, until the kernel forgets it: `rm -r` climbs back
        into a directory whose last entry it has just removed, to remove that one too."""
        if not views.is_file(node):
            return _EMPTY_DIRECTORY
        held = self._held.get(inode)
        if held is None:
            raise FuseError(errno.ENOENT)
        return held.attributes

    def _emptied(self, parent_inode: int, name: str) -> Node:
        """The directory `name` in parent that rm has just emptied through the mount, its
        rows gone with its last file; else ENOENT. rm -r deletes what is below a
        directory, then removes the directory by its name, which the kernel has dropped
        meanwhile (changes.py told it the rows went) and looks up again: that name stays,
        empty, until rmdir removes it (or EMPTIED_GRACE passes)."""
        parent = self.inodes.node_of(parent_inode)
        now = time.monotonic()
        with self._lock:
            for node, (last, above, called) in list(self._emptying.items()):
                if now - last > EMPTIED_GRACE:
                    del self._emptying[node]
                elif (above, called) == (parent, name):
                    break
            else:
                raise FuseError(errno.ENOENT)
        if views.attributes(self._conn(), node) is not None:
            raise FuseError(errno.ENOENT)  # back again, under a name of its own
        return node

    def _emptying_from(self, inode: int) -> None:
        """rm deleted something in this directory: it and the directories above it may
        be emptied, and then removed by rm."""
        now = time.monotonic()
        for directory in [inode, *self.inodes.ancestors(inode)]:
            place = self.inodes.place_of(directory)
            if place is None:
                continue
            node, above = self.inodes.node_of(directory), self.inodes.node_of(place[0])
            if node is not None and above is not None:
                with self._lock:
                    self._emptying[node] = (now, above, place[1])

    # --- lookups and attributes -----------------------------------------------------

    def lookup(self, parent_inode: int, name: bytes, request: Request | None = None) -> bytes:
        parent = self._node(parent_inode)
        wanted = os.fsdecode(name)
        with self._lock:
            listed = self._listed.get(parent_inode)
        entry = listed.get(wanted) if listed is not None else None
        if entry is None:
            entry = views.lookup(self._conn(), parent, wanted)
        if entry is None:
            child, found = self._emptied(parent_inode, wanted), _EMPTY_DIRECTORY
        else:
            child, found = entry.node, entry.attributes
        if child.kind is views.Kind.FILE:
            inode = file_inode(child.row)
        else:
            inode = self.inodes.looked_up(child, parent_inode, wanted)
        return self._entry(child, inode, found)

    def getattr(self, inode: int, request: Request | None = None, fh: int | None = None) -> bytes:
        """fh: the handle an fstat asks about, if it is one."""
        node = self._node(inode)
        found = views.attributes(self._conn(), node)
        if found is None:
            found = self._still_held(node, inode)
        if node.kind is Kind.PAGE:
            found, (attr_s, attr_ns) = self._page_attributes(node, fh), _NEVER
        else:
            attr_s, attr_ns = _TIMEOUT
        return kernel.ATTR_OUT.pack(attr_s, attr_ns, 0, *self._attr(inode, found))

    def forget(self, forgets: Sequence[tuple[int, int]]) -> None:
        for inode, count in forgets:
            if inode >= FILE_INODES:  # the kernel forgets a file all at once
                self._known_files.pop(inode, None)
            else:
                self.inodes.forget(inode, count)

    def stale_file(self, inode: int) -> None:
        """changes.py: the instance file changed or went."""
        self._known_files.pop(inode, None)

    def stale_listings(self) -> None:
        """changes.py: the index changed; what listings said may no longer hold."""
        with self._lock:
            self._listed.clear()

    # --- directories ----------------------------------------------------------------

    def readdir(self, inode: int, offset: int, size: int) -> bytes | Later:
        """A batch of plain entries (name, inode, type). The kernel keeps what it reads
        (no OPENDIR: see session.py) until changes.py tells it the directory changed."""
        number, position = offset >> 32, offset & 0xFFFFFFFF
        with self._lock:
            listing = self._listings.get(number) if offset else None
        if listing is not None:
            return self._batch(number, listing, position, size)
        node = self._node(inode)
        if views.is_file(node):
            raise FuseError(errno.ENOTDIR)
        if node.kind in _LISTED_AT_ONCE:
            return self._first_batch(node, inode, position, size)
        return Later(lambda: self._first_batch(node, inode, position, size))

    def _first_batch(self, node: Node, inode: int, position: int, size: int) -> bytes:
        """List the directory, keep the listing, and answer from position (0, or where
        a listing the mount no longer keeps had got to)."""
        number = next(self._listing_numbers)
        listing = kernel.dirents(self._children(node, inode), number << 32)
        with self._lock:
            self._listings[number] = listing
            while len(self._listings) > KEPT_LISTINGS:
                self._listings.popitem(last=False)
        return self._batch(number, listing, position, size)

    def _children(self, node: Node, inode: int) -> list[tuple[int, bytes, int]]:
        """(inode, name, type) of each entry of the directory, "." and ".." first, then
        sorted by name. A directory's number is its d_ino, as stat shows it: the table
        keeps it."""
        place = self.inodes.place_of(inode)
        dots = [
            (inode, b".", kernel.DT_DIR),
            (place[0] if place else ROOT_INODE, b"..", kernel.DT_DIR),
        ]
        conn = self._conn()
        if views.lists_files(node):  # the bulk of every find: no table, no node
            file = kernel.DT_REG
            return dots + [(FILE_INODES + row, name.encode(), file)
                           for name, row in views.file_names(conn, node)]  # fmt: skip
        if node == views.ROOT:
            entries = views.list_entries(conn, node)
        else:
            entries = [Entry(name, node.child(key), found)
                       for name, key, found in views.list_children(conn, node)]  # fmt: skip
        numbers = self.inodes.listed([(child, name) for name, child, _ in entries], inode)
        self._remember(inode, entries)
        return dots + [
            (number, name.encode(), kernel.DT_DIR if found.is_dir else kernel.DT_REG)
            for number, (name, _, found) in zip(numbers, entries, strict=True)
        ]

    def _remember(self, inode: int, entries: list[Entry]) -> None:
        """Keep what a listing of directories says of each, for the lookups that follow
        it (find looks up each directory it lists), until the index changes."""
        with self._lock:
            self._listed[inode] = {entry.name: entry for entry in entries}
            while len(self._listed) > KEPT_LISTINGS:
                self._listed.popitem(last=False)

    def _batch(
        self, number: int, listing: tuple[bytes, list[int]], position: int, size: int
    ) -> bytes:
        """The entries from position on that fit in size; none once read to the end."""
        replies, ends = listing
        start = ends[position - 1] if position else 0
        stop = bisect.bisect_right(ends, start + size)
        if stop <= position:  # read to its end: the kernel now has it all
            with self._lock:
                self._listings.pop(number, None)
            return b""
        return replies[start : ends[stop - 1]]

    # --- files ----------------------------------------------------------------------

    def open(self, inode: int, flags: int, request: Request | None = None) -> bytes | Later | Then:
        if flags & _WRITING:
            raise FuseError(errno.EROFS)
        uid = os.getuid() if request is None else request.uid
        known = self._known_files.get(inode)
        if known is not None:  # opened before: the kernel hears first, the file is opened next
            fh = next(self._handles)
            return Then(kernel.OPEN_OUT.pack(fh, kernel.FOPEN_KEEP_CACHE, 0),
                        lambda: self._open_behind(fh, inode, known, uid))  # fmt: skip
        node = self._node(inode)
        if not views.is_file(node):
            raise FuseError(errno.EISDIR)
        if node.kind is Kind.PAGE:
            return Later(lambda: self._open_page(node))
        info = self._file_info(node, inode)
        # Opened now, so that a file expired or replaced while open keeps reading
        # until it is closed; without a hand-off when the kernel has the path cached.
        # Never through a symlink, never outside the store (see store.open_beneath).
        fd = nowait.open_cached(self._root, info.path, self._open_flags)
        if fd is None:  # the worker asks the index afresh: the path known may be stale
            return Later(lambda: self._open_afresh(inode, uid))
        return self._opened(fd, inode, info, uid)

    def _file_info(self, node: Node, inode: int) -> views.InstanceFile:
        info = views.file_info(self._conn(), node)
        if info is None:
            raise FuseError(errno.ENOENT)
        with self._lock:
            self._known_files[inode] = info
            if len(self._known_files) > KNOWN_FILES:  # the oldest goes
                del self._known_files[next(iter(self._known_files))]
        return info

    def _open_afresh(self, inode: int, uid: int) -> bytes:
        info = self._file_info(self._node(inode), inode)
        return self._opened(self._open_stored(info.path), inode, info, uid)

    def _opened(self, fd: int, inode: int, info: views.InstanceFile, uid: int) -> bytes:
        # The stored file never changes in place (replacement is a rename, and
        # changes.py drops the pages of a replaced instance), so the kernel may keep
        # its pages between opens.
        return kernel.OPEN_OUT.pack(self._handle(fd, inode, info, uid), kernel.FOPEN_KEEP_CACHE, 0)

    def _handle(
        self, fd: int, inode: int, info: views.InstanceFile, uid: int, fh: int | None = None
    ) -> int:
        """A new handle (or fh) of the instance file open as fd (-errno: it could not be)."""
        self.accesses.note(info.instance, uid)
        with self._lock:
            if fh is None:
                fh = next(self._handles)
            self._files[fh] = _StoredFile(fd, info.size, inode)
            held = self._held.get(inode)
            if held is None:
                held = self._held[inode] = _Held(info.attributes)
            held.handles += 1
        return fh

    def _open_behind(self, fh: int, inode: int, info: views.InstanceFile, uid: int) -> None:
        """Open the file of a handle the kernel already has, before it can ask anything
        of it: one whose path the mount knows from an earlier open (so found in the
        kernel's dentry cache, unless memory ran short). A file gone meanwhile reads
        as missing."""
        fd = nowait.open_cached(self._root, info.path, self._open_flags)
        if fd is None:
            try:
                fd = self._open_stored(info.path)
            except FuseError as exc:
                self._known_files.pop(inode, None)
                fd = -exc.errno  # what its reads say, those the kernel's cache cannot answer
        self._handle(fd, inode, info, uid, fh)

    def _open_stored(self, path: str) -> int:
        try:
            return store_files.open_beneath(self._root, path, self._open_flags)
        except FileNotFoundError:
            if self._index().indexes_path(path):  # not just expired or deleted by dicomfs
                log.warning("%s was deleted behind the index: dropping its row", path)
                self._forget_vanished(path)
            raise FuseError(errno.ENOENT) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                log.warning("%s not served: symbolic links in the store are never followed", path)
                raise FuseError(errno.ELOOP) from None
            raise FuseError(exc.errno or errno.EIO) from None

    def read(self, fh: int, offset: int, size: int) -> bytes | bytearray | Later:
        opened = self._pages.get(fh)
        if opened is not None:
            return opened[1][offset : offset + size]
        stored = self._files.get(fh)
        if stored is None:
            raise FuseError(errno.EBADF)
        if stored.fd < 0:
            raise FuseError(-stored.fd)  # gone or a link by when _open_behind opened it
        data = nowait.read_cached(stored.fd, offset, size, stored.size)
        if data is not None:
            return data
        return Later(lambda: self._read_stored(stored.fd, offset, size))

    @staticmethod
    def _read_stored(fd: int, offset: int, size: int) -> bytes:
        try:
            return os.pread(fd, size, offset)
        except OSError as exc:
            raise FuseError(exc.errno or errno.EIO) from None

    def release(self, fh: int) -> None:
        with self._lock:
            self._pages.pop(fh, None)
            stored = self._files.pop(fh, None)
            if stored is None:
                return
            held = self._held[stored.inode]
            held.handles -= 1
            if not held.handles:
                del self._held[stored.inode]
        if stored.fd >= 0:
            os.close(stored.fd)

    def _open_page(self, node: Node) -> bytes:
        index = self._index()
        shows = views.generated(node)
        studies = 0
        if shows.what == "thumbnail":
            made = thumbnails.of_series(self.store, index.conn, shows.row)
            if made is None:
                raise FuseError(errno.ENOENT)  # the series has gone since the lookup
            generated = made
        elif shows.what == "series":
            generated = series_page.render(index, shows.row, shows.view)
        else:
            (studies,) = index.conn.execute("SELECT count(*) FROM studies").fetchone()
            generated = page.render(
                index, self.mountpoint, shows.view, retention=self.options.retention
            )
        with self._lock:
            fh = next(self._handles)
            self._pages[fh] = (node, generated)
            self._last_page_at = time.time()
            if studies:
                # The whole page's share, head included: a page whose head held most
                # of it (a few studies) must not make the next one's bound too small.
                measured = -(-len(generated) // studies)  # rounded up
                self._page_per_study = max(self._page_per_study or 0, measured)
        # direct_io: each open shows the page as generated then, whatever size stat said.
        return kernel.OPEN_OUT.pack(fh, kernel.FOPEN_DIRECT_IO, 0)

    def _forget_vanished(self, path: str) -> None:
        """Drop the row of a file deleted behind the index, so the views follow."""

        def forget(index: Index) -> None:
            if not (self.store / path).exists():  # not replaced meanwhile
                index.remove_paths([path])

        self._write(forget)

    def _write(self, work: Callable[[Index], None]) -> bool:
        """Run work in the index writer; False (and a log line) if it failed."""
        if self.writer is None:
            return False
        try:
            self.writer.run(work)
        except Exception:
            log.exception("could not write to the index")
            return False
        return True

    # --- last access ------------------------------------------------------------------

    def flush_accesses(self) -> None:
        pending = self.accesses.take()
        if pending:
            self._write(lambda index: access.record(index, pending))

    def close(self) -> None:
        """At unmount: write what is left, and close what this mount opened itself."""
        self.flush_accesses()
        if self._own_writer and self.writer is not None:
            self.writer.close()
        with self._lock:
            for stored in self._files.values():
                if stored.fd >= 0:
                    os.close(stored.fd)
            self._files.clear()
        os.close(self._root)

    # --- a read-only file system ----------------------------------------------------

    def statfs(self) -> bytes:
        st = os.statvfs(self.store)
        return kernel.STATFS_OUT.pack(
            st.f_blocks, st.f_bfree, st.f_bavail, st.f_files, st.f_ffree,
            st.f_bsize, 255, st.f_frsize,
        )  # fmt: skip

    # --- deleting, with --allow-delete ----------------------------------------------

    def unlink(self, parent_inode: int, name: bytes, request: Request | None = None) -> Later:
        """rm of an instance file deletes the instance (file and row), audited."""
        if not self.options.allow_delete or self.writer is None:
            raise FuseError(errno.EROFS)
        parent = self._node(parent_inode)
        uid = os.getuid() if request is None else request.uid
        return Later(lambda: self._delete(parent_inode, parent, os.fsdecode(name), uid))

    def _delete(self, parent_inode: int, parent: Node, name: str, uid: int) -> None:
        entry = views.lookup(self._conn(), parent, name)
        if entry is None:
            raise FuseError(errno.ENOENT)
        if entry.node.kind is not views.Kind.FILE:
            raise FuseError(errno.EPERM)
        instance = entry.node.row
        paths: list[str] = []
        emptied: list[str] = []  # the series it was the last of

        def delete(index: Index) -> None:
            identity = index.series_identity(instance_id=instance)
            paths.extend(expiry.delete_instance(index, instance, by=access.user_name(uid)))
            if (
                identity is not None
                and not index.conn.execute(
                    "SELECT 1 FROM series WHERE series_uid = ?", (identity.series_uid,)
                ).fetchone()
            ):
                emptied.append(identity.series_uid)

        if not self._write(delete):
            raise FuseError(errno.EIO)  # not deleted: rm must not say it was
        self._emptying_from(parent_inode)
        if paths:
            assert self.writer is not None  # _write succeeded
            expiry.finish_deletions(self.writer, self.store, paths)
        thumbnails.remove(self.store, emptied)  # a series' picture goes with it
        self.changed()  # every view shows it gone by when rm hears it is

    def rmdir(self, parent_inode: int, name: bytes, request: Request | None = None) -> Later:
        """A directory is virtual: it goes by itself once its files are deleted, so
        rmdir of an empty one succeeds. A view stays, empty, so that `rm -r` of a whole
        view succeeds too."""
        if not self.options.allow_delete:
            raise FuseError(errno.EROFS)
        parent = self._node(parent_inode)
        return Later(lambda: self._remove_directory(parent_inode, parent, os.fsdecode(name)))

    def _remove_directory(self, parent_inode: int, parent: Node, wanted: str) -> None:
        conn = self._conn()
        entry = views.lookup(conn, parent, wanted)
        if entry is None:  # its last file went: nothing left to remove
            with contextlib.suppress(FuseError):
                emptied = self._emptied(parent_inode, wanted)
                with self._lock:
                    self._emptying.pop(emptied, None)  # now gone for good
            self._emptying_from(parent_inode)
            return
        if views.is_file(entry.node):
            raise FuseError(errno.ENOTDIR)
        if views.list_entries(conn, entry.node):
            raise FuseError(errno.ENOTEMPTY)
