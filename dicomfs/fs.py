"""The pyfuse3 adapter: tree nodes -> attributes, errors -> errno, reads in threads.

A protocol adapter only: what the directories hold is tree.py's business.
Every index query and file read runs in a worker thread, never on the trio loop.
"""

from __future__ import annotations

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
from typing import Any, TypeVar

import pyfuse3
import trio

from . import tree
from .index import INDEX_DIR, INDEX_FILE
from .inodes import Inodes
from .tree import Node

log = logging.getLogger(__name__)
T = TypeVar("T")

# Short kernel cache lifetimes: new instances show within two seconds of their commit.
ENTRY_TIMEOUT = 1.0
ATTR_TIMEOUT = 1.0


@dataclasses.dataclass(frozen=True)
class MountOptions:
    uid: int = dataclasses.field(default_factory=os.getuid)
    gid: int = dataclasses.field(default_factory=os.getgid)
    file_mode: int = 0o400  # patients' data: the mounting user only, by default
    allow_other: bool = False


class _Reader(threading.local):
    """One read-only connection per worker thread (sqlite3 objects stay in their thread)."""

    conn: sqlite3.Connection | None = None


class DicomOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, store: Path, options: MountOptions) -> None:
        super().__init__()
        self.store = store
        self.options = options
        self.inodes = Inodes()
        self._db_path = store / INDEX_DIR / INDEX_FILE
        self._local = _Reader()
        self._limiter = trio.CapacityLimiter(8)
        self._dirs: dict[int, list[tuple[str, Node]]] = {}
        self._files: dict[int, int] = {}  # fh -> os file descriptor
        self._next_fh = 1
        self._mounted_at = time.time()

    # --- helpers --------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._local.conn is None:
            conn = sqlite3.connect(
                f"file:{self._db_path}?mode=ro", uri=True, check_same_thread=True
            )
            conn.execute("PRAGMA busy_timeout = 10000")
            self._local.conn = conn
        return self._local.conn

    async def _query(self, func: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            return func(self._conn(), *args)

        return await trio.to_thread.run_sync(run, limiter=self._limiter)

    def _node(self, inode: int) -> Node:
        node = self.inodes.node_of(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    def _attributes(self, inode: int, info: tree.FileInfo | None) -> pyfuse3.EntryAttributes:
        """A directory when info is None, else the instance file it describes."""
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.st_uid = self.options.uid
        attr.st_gid = self.options.gid
        attr.entry_timeout = ENTRY_TIMEOUT
        attr.attr_timeout = ATTR_TIMEOUT
        attr.st_blksize = 128 * 1024
        if info is None:
            dir_mode = self.options.file_mode | ((self.options.file_mode & 0o444) >> 2)
            attr.st_mode = stat.S_IFDIR | dir_mode
            attr.st_nlink = 2
            attr.st_size = 0
            when = int(self._mounted_at * 1e9)
            attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = when
        else:
            attr.st_mode = stat.S_IFREG | self.options.file_mode
            attr.st_nlink = 1
            attr.st_size = info.size
            received = int(info.received_at * 1e9)
            attr.st_mtime_ns = attr.st_ctime_ns = received
            attr.st_atime_ns = int((info.last_access or info.received_at) * 1e9)
        attr.st_blocks = (attr.st_size + 511) // 512
        return attr

    async def _attributes_of(self, node: Node, inode: int) -> pyfuse3.EntryAttributes:
        info = None
        if tree.is_file(node):
            info = await self._query(tree.file_info, node)
            if info is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attributes(inode, info)

    # --- lookups and attributes -----------------------------------------------------

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        child = await self._query(tree.lookup, parent, os.fsdecode(name))
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        attr = await self._attributes_of(child, self.inodes.inode_of(child))
        self.inodes.looked_up(child)
        return attr

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return await self._attributes_of(self._node(inode), inode)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            self.inodes.forget(inode, count)

    # --- directories ----------------------------------------------------------------

    async def opendir(self, inode: int, ctx: Any) -> int:
        node = self._node(inode)
        if tree.is_file(node):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        # The listing is taken once per open: readdir offsets index this snapshot,
        # so they stay valid however the index changes meanwhile.
        entries = await self._query(tree.list_dir, node)
        fh = self._new_fh()
        self._dirs[fh] = entries
        return fh

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self._dirs.get(fh, [])
        for position in range(start_id, len(entries)):
            name, child = entries[position]
            inode = self.inodes.inode_of(child)
            try:
                attr = await self._attributes_of(child, inode)
            except pyfuse3.FUSEError:
                continue  # gone since the listing was taken
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attr, position + 1):
                return
            self.inodes.looked_up(child)

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # --- files ----------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if not tree.is_file(node):
            raise pyfuse3.FUSEError(errno.EISDIR)
        info = await self._query(tree.file_info, node)
        if info is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        path = self.store / info.path
        try:
            fd = await trio.to_thread.run_sync(
                os.open, path, os.O_RDONLY | os.O_NOATIME if os.geteuid() == 0 else os.O_RDONLY
            )
        except FileNotFoundError:
            log.warning("%s is in the index but gone from the store", info.path)
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        fh = self._new_fh()
        self._files[fh] = fd
        # The stored file never changes in place (replacement is a rename), so the
        # kernel may keep its pages between opens.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        fd = self._files.get(fh)
        if fd is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return await trio.to_thread.run_sync(os.pread, fd, size, off, limiter=self._limiter)

    async def release(self, fh: int) -> None:
        fd = self._files.pop(fh, None)
        if fd is not None:
            os.close(fd)

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

    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _read_only
    create = write = setxattr = removexattr = _read_only
