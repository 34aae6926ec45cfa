"""The pyfuse3 adapter: view nodes -> attributes, errors -> errno.

A protocol adapter only: what the directories hold is store.views' business.
Listings that may be long, file opens that miss the kernel's cache, and reads that
would wait for the disk run in worker threads; a lookup, a getattr, and the listing
of one study or series, a few rows found through an index, run on the loop, where
a thread hop would cost more than the query.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pyfuse3
import trio

from ..life import access, expiry
from ..store import files as store_files
from ..store import views
from ..store.index import Index, IndexUnusable
from ..store.views import Attributes, Entry, Node
from ..store.writer import IndexWriter
from . import nowait, page
from .inodes import ROOT_INODE, Inodes, file_inode
from .listings import Listings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Short kernel cache lifetimes: new instances show within two seconds of their commit.
ENTRY_TIMEOUT = 1.0
ATTR_TIMEOUT = 1.0
# How long a directory that rm has emptied through the mount can still be found, empty,
# after the last deletion below it (rm removes a directory right after emptying it).
EMPTIED_GRACE = 30.0
_EMPTY_DIRECTORY = Attributes(True, 0, None, None)  # one whose rows are gone
# A study's series and a series' files are bounded by one exam and found through an
# index: listed on the loop, for a thread hop costs more (about 200 us) than the query.
# Listings of a whole view, a patient or a day may be long: those go to a thread.
_LISTED_ON_THE_LOOP = frozenset({views.Kind.STUDY, views.Kind.SERIES})


@dataclasses.dataclass(frozen=True)
class MountOptions:
    uid: int = dataclasses.field(default_factory=os.getuid)
    gid: int = dataclasses.field(default_factory=os.getgid)
    file_mode: int = 0o600  # patients' data: the mounting user only, by default
    allow_other: bool = False
    allow_delete: bool = False  # rm of instance files (so rm -r of a series) deletes them


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


# An instance file as readdir replies with it: name, inode, size, blocks, and the
# mtime and atime in ns (see _fill), made once per listing, for a kept listing is
# replied from again by every find.
_FileReply = tuple[bytes, int, int, int, int, int]


@dataclasses.dataclass
class _Listing:
    """An open directory: its entries, as listed by the first readdir."""

    node: Node
    inode: int
    entries: list[Any] | None = None  # what _list gives


class _Reader(threading.local):
    """One read-only index per thread (sqlite3 objects stay in their thread)."""

    index: Index | None = None


class DicomOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        store: Path,
        mountpoint: Path,
        options: MountOptions,
        writer: IndexWriter | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self._root = os.open(store, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.mountpoint = mountpoint
        self.accesses = access.AccessLog()
        self._own_writer = writer is None
        self.writer = writer if writer is not None else _open_writer(store)
        self.options = options
        self.inodes = Inodes()
        self._local = _Reader()
        self._limiter = trio.CapacityLimiter(8)
        self._writing = trio.CapacityLimiter(1)  # the writer's lock does the rest
        self._dirs: dict[int, _Listing] = {}
        self._listings = Listings()  # on the loop alone, checked on its connection
        self._files: dict[int, _StoredFile] = {}
        self._held: dict[int, _Held] = {}  # inode -> its open instance file
        # directory inode -> when rm last deleted something below it (time.monotonic)
        self._emptying: dict[int, float] = {}
        self._pages: dict[int, bytes] = {}  # fh -> index.html as generated at open
        self._last_page_size = 0
        self._next_fh = 1
        self._mounted_at = time.time()
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

    def _conn(self) -> sqlite3.Connection:
        return self._index().conn

    async def _query(self, func: Callable[..., T], *args: Any) -> T:
        """Run func(conn, *args) in a worker thread: listings, and anything touching disk."""

        def run() -> T:
            return func(self._conn(), *args)

        return await trio.to_thread.run_sync(run, limiter=self._limiter)

    def _seek(self, func: Callable[..., T], *args: Any) -> T:
        """Run func(conn, *args) on the loop: only for a few rows found through an index
        (lookup, getattr), which take microseconds, where a thread hop costs far more."""
        return func(self._conn(), *args)

    def _node(self, inode: int) -> Node:
        node = self.inodes.node_of(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    def _attributes(self, node: Node, inode: int, found: Attributes) -> pyfuse3.EntryAttributes:
        return self._fill(self._blank_attributes(), node, inode, found)

    def _blank_attributes(self) -> pyfuse3.EntryAttributes:
        """The fields every entry shares; readdir fills one of these per entry."""
        attr = pyfuse3.EntryAttributes()
        attr.st_uid = self.options.uid
        attr.st_gid = self.options.gid
        attr.entry_timeout = ENTRY_TIMEOUT
        attr.st_blksize = 128 * 1024
        return attr

    def _fill(
        self, attr: pyfuse3.EntryAttributes, node: Node, inode: int, found: Attributes
    ) -> pyfuse3.EntryAttributes:
        attr.st_ino = inode
        attr.attr_timeout = ATTR_TIMEOUT
        if node == views.PAGE:
            found = self._page_attributes()
            attr.attr_timeout = 0  # see _page_attributes
        if found.is_dir:
            attr.st_mode = self._dir_mode
            attr.st_nlink = 2
        else:
            attr.st_mode = self._file_mode
            attr.st_nlink = 1
        attr.st_size = found.size
        attr.st_blocks = (found.size + 511) // 512
        # mtime: when received (a directory: the newest receipt inside); atime: the last
        # read, or the receipt if never read.
        received = found.received if found.received is not None else self._mounted_at
        attr.st_mtime_ns = attr.st_ctime_ns = int(received * 1e9)
        attr.st_atime_ns = int((found.accessed or received) * 1e9)
        return attr

    def _page_attributes(self) -> Attributes:
        """stat never generates index.html (on a large store that takes minutes): its
        size is that of the last page an open generated, 0 before the first. Reads go to
        the mount whatever the size says (direct_io). The kernel does not cache these
        (attr_timeout 0), so an fstat after an open shows that open's page: `wc -c`
        trusts it."""
        return Attributes(False, self._last_page_size, time.time(), None)

    def _still_held(self, node: Node, inode: int) -> Attributes:
        """What stat answers for an inode the kernel holds whose rows are gone (expired,
        deleted): the kernel asks again once its attribute cache lapses, or after an
        rmdir or unlink inside it, until it forgets the inode.

        POSIX keeps an open file stat-able until its last close, whatever the index
        says. A directory stays, empty, until the kernel forgets it: `rm -r` climbs back
        into a directory whose last entry it has just removed, to remove that one too."""
        if not views.is_file(node):
            return _EMPTY_DIRECTORY
        held = self._held.get(inode)
        if held is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return held.attributes

    def _emptied(self, parent_inode: int, name: str) -> int:
        """The directory `name` in parent that rm has just emptied through the mount, its
        rows gone with its last file; else ENOENT. rm -r deletes what is below a
        directory, then removes the directory by the name it looked up, which the kernel
        may have let lapse meanwhile and ask for again: that name stays, empty, until
        rmdir removes it (or the kernel forgets it, or EMPTIED_GRACE passes)."""
        now = time.monotonic()
        for inode, last in list(self._emptying.items()):
            if now - last > EMPTIED_GRACE:
                del self._emptying[inode]
            elif self.inodes.place_of(inode) == (parent_inode, name):
                node = self.inodes.node_of(inode)
                if node is not None and self._seek(views.attributes, node) is None:
                    return inode
        raise pyfuse3.FUSEError(errno.ENOENT)

    def _emptying_from(self, inode: int) -> None:
        """rm deleted something in this directory: it and the directories above it may
        be emptied, and then removed by rm."""
        now = time.monotonic()
        while inode != ROOT_INODE:
            self._emptying[inode] = now
            place = self.inodes.place_of(inode)
            if place is None:
                return
            inode = place[0]

    # --- lookups and attributes -----------------------------------------------------

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        wanted = os.fsdecode(name)
        entry = self._seek(views.lookup, parent, wanted)
        if entry is None:
            child, found = self._node(self._emptied(parent_inode, wanted)), _EMPTY_DIRECTORY
        else:
            child, found = entry.node, entry.attributes
        if child.kind is views.Kind.FILE:
            inode = file_inode(child.row)
        else:
            inode = self.inodes.looked_up(child)
            self.inodes.place(inode, parent_inode, wanted)
        return self._attributes(child, inode, found)

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        found = self._seek(views.attributes, node)
        if found is None:
            found = self._still_held(node, inode)
        return self._attributes(node, inode, found)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            self.inodes.forget(inode, count)
            if self.inodes.node_of(inode) is None:
                self._emptying.pop(inode, None)

    # --- directories ----------------------------------------------------------------

    async def opendir(self, inode: int, ctx: Any) -> int:
        node = self._node(inode)
        if views.is_file(node):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        # The listing is taken by the first readdir, not here: tools open directories
        # they never read (find opens each one again to change into it).
        fh = self._new_fh()
        self._dirs[fh] = _Listing(node, inode)
        return fh

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        listing = self._dirs.get(fh)
        if listing is None:
            return
        if listing.entries is None:
            # Taken once per open: readdir offsets index this snapshot, so they stay
            # valid however the index changes meanwhile.
            listing.entries = await self._list(listing.node)
        attr = self._blank_attributes()  # readdir_reply copies it: one serves every entry
        if views.lists_files(listing.node):
            self._reply_files(listing.entries, start_id, token, attr)
        elif listing.node == views.ROOT:  # the views, and index.html
            self._reply_any(listing, start_id, token, attr)
        else:
            self._reply_directories(listing, start_id, token, attr)

    async def _list(self, node: Node) -> list[Any]:
        """What readdir replies from, kept while the index is unchanged: a series' files
        as _FileReply rows, any other directory's entries."""
        version = self._listings.check(self._conn())
        kept = self._listings.get(node)
        if kept is None:
            if node.kind in _LISTED_ON_THE_LOOP:
                entries = self._seek(views.list_entries, node)
            else:
                entries = await self._query(views.list_entries, node)
            kept = self._file_replies(entries) if views.lists_files(node) else entries
            self._listings.keep(node, kept, version)
        return kept

    def _file_replies(self, entries: list[Entry]) -> list[_FileReply]:
        mounted_at = self._mounted_at  # as _fill says, for a receipt unknown
        replies = []
        for name, child, (_, size, received, accessed) in entries:
            received_ns = int((received or mounted_at) * 1e9)
            accessed_ns = int(accessed * 1e9) if accessed is not None else received_ns
            replies.append((name.encode("utf-8"), file_inode(child[1]), size,
                            (size + 511) // 512, received_ns, accessed_ns))  # fmt: skip
        return replies

    def _reply_files(
        self, replies: list[_FileReply], start: int, token: Any, attr: pyfuse3.EntryAttributes
    ) -> None:
        """A series' files, the bulk of every find: what all of them share set once,
        the rest made ready when listed, and no table to keep (their inodes are their
        row ids)."""
        attr.st_mode = self._file_mode
        attr.st_nlink = 1
        attr.attr_timeout = ATTR_TIMEOUT
        reply = pyfuse3.readdir_reply
        for position in range(start, len(replies)):
            name, inode, size, blocks, modified, accessed = replies[position]
            attr.st_ino = inode
            attr.st_size = size
            attr.st_blocks = blocks
            attr.st_mtime_ns = attr.st_ctime_ns = modified
            attr.st_atime_ns = accessed
            if not reply(token, name, attr, position + 1):
                return

    def _reply_directories(
        self, listing: _Listing, start: int, token: Any, attr: pyfuse3.EntryAttributes
    ) -> None:
        """Directories only (a view's patients, a patient's studies...), thousands at a
        view's top: what they share set once, the rest as _fill does."""
        entries = listing.entries
        assert entries is not None
        attr.st_mode = self._dir_mode
        attr.st_nlink = 2
        attr.st_size = attr.st_blocks = 0
        attr.attr_timeout = ATTR_TIMEOUT
        inode_of, counted, place = self.inodes.inode_of, self.inodes.count_lookup, self.inodes.place
        reply = pyfuse3.readdir_reply
        parent, mounted_at = listing.inode, self._mounted_at
        for position in range(start, len(entries)):
            name, child, (_, _, received, accessed) = entries[position]
            attr.st_ino = inode = inode_of(child)
            attr.st_mtime_ns = attr.st_ctime_ns = received_ns = int((received or mounted_at) * 1e9)
            attr.st_atime_ns = int(accessed * 1e9) if accessed is not None else received_ns
            if not reply(token, name.encode("utf-8"), attr, position + 1):
                return
            counted(inode)
            place(inode, parent, name)

    def _reply_any(
        self, listing: _Listing, start: int, token: Any, attr: pyfuse3.EntryAttributes
    ) -> None:
        entries = listing.entries
        assert entries is not None
        inodes = self.inodes
        for position in range(start, len(entries)):
            name, child, found = entries[position]
            inode = inodes.inode_of(child)
            self._fill(attr, child, inode, found)
            if not pyfuse3.readdir_reply(token, name.encode("utf-8"), attr, position + 1):
                return
            inodes.count_lookup(inode)
            if found.is_dir:
                inodes.place(inode, listing.inode, name)

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # --- files ----------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if not views.is_file(node):
            raise pyfuse3.FUSEError(errno.EISDIR)
        if node == views.PAGE:
            return await self._open_page()
        info = self._seek(views.file_info, node)
        if info is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        # Opened now, so that a file expired or replaced while open keeps reading
        # until it is closed; without a thread hop when the kernel has the path cached.
        # Never through a symlink, never outside the store (see store.open_beneath).
        fd = nowait.open_cached(self._root, info.path, self._open_flags)
        if fd is None:
            fd = await self._open_stored(info.path)
        uid = getattr(ctx, "uid", None)
        self.accesses.note(info.instance, os.getuid() if uid is None else uid)
        fh = self._new_fh()
        self._files[fh] = _StoredFile(fd, info.size, inode)
        self._hold(inode, info)
        # The stored file never changes in place (replacement is a rename), so the
        # kernel may keep its pages between opens.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def _open_stored(self, path: str) -> int:
        try:
            return await trio.to_thread.run_sync(
                store_files.open_beneath, self._root, path, self._open_flags
            )
        except FileNotFoundError:
            log.warning("%s was deleted behind the index: dropping its row", path)
            await self._forget_vanished(path)
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                log.warning("%s not served: symbolic links in the store are never followed", path)
                raise pyfuse3.FUSEError(errno.ELOOP) from None
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    # pyfuse3 replies from any buffer, though its stub says bytes: a bytearray spares a copy.
    async def read(self, fh: int, off: int, size: int) -> bytes | bytearray:  # type: ignore[override]
        generated = self._pages.get(fh)
        if generated is not None:
            return generated[off : off + size]
        stored = self._files.get(fh)
        if stored is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        data = nowait.read_cached(stored.fd, off, size, stored.size)
        if data is not None:
            return data
        try:
            return await trio.to_thread.run_sync(
                os.pread, stored.fd, size, off, limiter=self._limiter
            )
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    async def release(self, fh: int) -> None:
        self._pages.pop(fh, None)
        stored = self._files.pop(fh, None)
        if stored is not None:
            os.close(stored.fd)
            self._let_go(stored.inode)

    def _hold(self, inode: int, info: views.InstanceFile) -> None:
        held = self._held.get(inode)
        if held is None:
            held = self._held[inode] = _Held(info.attributes)
        held.handles += 1

    def _let_go(self, inode: int) -> None:
        held = self._held[inode]
        held.handles -= 1
        if not held.handles:
            del self._held[inode]

    async def _open_page(self) -> pyfuse3.FileInfo:
        fh = self._new_fh()
        self._pages[fh] = await self._render_page()
        self._last_page_size = len(self._pages[fh])
        # direct_io: each open shows the page as generated then, whatever size stat said.
        return pyfuse3.FileInfo(fh=fh, direct_io=True)

    async def _render_page(self) -> bytes:
        def render() -> bytes:
            return page.render(self._index(), self.mountpoint)

        return await trio.to_thread.run_sync(render, limiter=self._limiter)

    async def _forget_vanished(self, path: str) -> None:
        """Drop the row of a file deleted behind the index, so the views follow."""

        def forget(index: Index) -> None:
            if not (self.store / path).exists():  # not replaced meanwhile
                index.remove_paths([path])

        await self._write(forget)

    async def _write(self, work: Callable[[Index], None]) -> bool:
        """Run work in the index writer; False (and a log line) if it failed."""
        if self.writer is None:
            return False
        try:
            await trio.to_thread.run_sync(self.writer.run, work, limiter=self._writing)
        except Exception:
            log.exception("could not write to the index")
            return False
        finally:
            self._listings.stale()  # what this mount changed shows at its next listing
        return True

    # --- last access ------------------------------------------------------------------

    async def record_accesses(self) -> None:
        """A task for the mount's nursery: write the accesses noted, every few seconds."""
        while True:
            await trio.sleep(access.FLUSH_INTERVAL)
            await self.flush_accesses()

    async def flush_accesses(self) -> None:
        pending = self.accesses.take()
        if pending:
            await self._write(lambda index: access.record(index, pending))

    def close(self) -> None:
        """At unmount: write what is left, and close what this mount opened itself."""
        pending = self.accesses.take()
        if pending and self.writer is not None:
            self.writer.run(lambda index: access.record(index, pending))
        if self._own_writer and self.writer is not None:
            self.writer.close()
        os.close(self._root)

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    # --- a read-only file system ----------------------------------------------------

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.store)
        data = pyfuse3.StatvfsData()
        for field in (
            "f_bsize",
            "f_frsize",
            "f_blocks",
            "f_bfree",
            "f_bavail",
            "f_files",
            "f_ffree",
            "f_favail",
        ):
            setattr(data, field, getattr(st, field))
        data.f_namemax = 255
        return data

    async def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = mknod = mkdir = symlink = rename = link = _read_only

    # --- deleting, with --allow-delete ----------------------------------------------

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        """rm of an instance file deletes the instance (file and row), audited."""
        if not self.options.allow_delete or self.writer is None:
            raise pyfuse3.FUSEError(errno.EROFS)
        entry = self._seek(views.lookup, self._node(parent_inode), os.fsdecode(name))
        if entry is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if entry.node.kind is not views.Kind.FILE:
            raise pyfuse3.FUSEError(errno.EPERM)
        uid = getattr(ctx, "uid", os.getuid())
        instance = entry.node.row
        paths: list[str] = []

        def delete(index: Index) -> None:
            paths.extend(expiry.delete_instance(index, instance, by=access.user_name(uid)))

        if not await self._write(delete):
            raise pyfuse3.FUSEError(errno.EIO)  # not deleted: rm must not say it was
        self._emptying_from(parent_inode)
        if paths:
            await trio.to_thread.run_sync(expiry.finish_deletions, self.writer, self.store, paths)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        """A directory is virtual: it goes by itself once its files are deleted, so
        rmdir of an empty one succeeds. A view stays, empty, so that `rm -r` of a whole
        view succeeds too."""
        if not self.options.allow_delete:
            raise pyfuse3.FUSEError(errno.EROFS)
        wanted = os.fsdecode(name)
        entry = self._seek(views.lookup, self._node(parent_inode), wanted)
        if entry is None:  # its last file went: nothing left to remove
            with contextlib.suppress(pyfuse3.FUSEError):
                del self._emptying[self._emptied(parent_inode, wanted)]  # now gone for good
            self._emptying_from(parent_inode)
            return
        if views.is_file(entry.node):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if await self._query(views.list_entries, entry.node):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)

    create = write = setxattr = removexattr = _read_only
