"""A bare read-only pyfuse3 mirror of a directory: the floor of a stock pyfuse3 loop.

The benchmark copies and lists through it beside dicomfs, so that the mount's figures can be
read against what that library, which dicomfs used before it spoke the FUSE protocol
itself, costs by itself. It does what the kernel needs and nothing more: inodes by path,
attributes from lstat, listings from scandir, reads with pread.

    python scripts/passthrough.py SOURCE MOUNTPOINT
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path
from typing import Any

import pyfuse3
import trio

TIMEOUT = 300.0


class Mirror(pyfuse3.Operations):
    supports_dot_lookup = False

    def __init__(self, source: Path) -> None:
        super().__init__()
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: str(source)}
        self.inodes: dict[str, int] = {str(source): pyfuse3.ROOT_INODE}
        self.lookups: dict[int, int] = {}
        self.listings: dict[int, tuple[str, list[tuple[str, os.stat_result]]]] = {}
        self.next_fh = 1

    def _inode(self, path: str) -> int:
        inode = self.inodes.get(path)
        if inode is None:
            inode = len(self.paths) + pyfuse3.ROOT_INODE
            self.paths[inode] = path
            self.inodes[path] = inode
        return inode

    def _entry(self, inode: int, found: os.stat_result) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.st_mode = found.st_mode
        attr.st_nlink = found.st_nlink
        attr.st_uid, attr.st_gid = found.st_uid, found.st_gid
        attr.st_size = found.st_size
        attr.st_blocks = found.st_blocks
        attr.st_blksize = 128 * 1024
        attr.st_atime_ns, attr.st_mtime_ns = found.st_atime_ns, found.st_mtime_ns
        attr.st_ctime_ns = found.st_ctime_ns
        attr.entry_timeout = attr.attr_timeout = TIMEOUT
        return attr

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = os.path.join(self.paths[parent_inode], os.fsdecode(name))
        try:
            found = os.lstat(path)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        inode = self._inode(path)
        self.lookups[inode] = self.lookups.get(inode, 0) + 1
        return self._entry(inode, found)

    async def forget(self, inode_list: Any) -> None:
        for inode, count in inode_list:
            self.lookups[inode] = self.lookups.get(inode, 0) - count

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(inode, os.lstat(self.paths[inode]))

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        path = self.paths[inode]
        with os.scandir(path) as entries:
            listing = sorted((e.name, e.stat(follow_symlinks=False)) for e in entries)
        fh = self.next_fh
        self.next_fh += 1
        self.listings[fh] = (path, listing)
        return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        path, listing = self.listings[fh]
        for offset in range(start_id, len(listing)):
            name, found = listing[offset]
            inode = self._inode(os.path.join(path, name))
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(inode, found),
                                         offset + 1):  # fmt: skip
                return
            self.lookups[inode] = self.lookups.get(inode, 0) + 1

    async def releasedir(self, fh: int) -> None:
        self.listings.pop(fh, None)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        fd = os.open(self.paths[inode], os.O_RDONLY)
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(fh, size, off)

    async def release(self, fh: int) -> None:
        os.close(fh)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        found = os.statvfs(self.paths[pyfuse3.ROOT_INODE])
        data = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                     "f_ffree", "f_favail", "f_namemax"):  # fmt: skip
            setattr(data, name, getattr(found, name))
        return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("mountpoint", type=Path)
    args = parser.parse_args()
    options = set(pyfuse3.default_options) | {"fsname=passthrough", "ro"}
    pyfuse3.init(Mirror(args.source.resolve()), str(args.mountpoint), options)
    try:
        trio.run(pyfuse3.main)
    except KeyboardInterrupt:
        pass
    finally:
        pyfuse3.close(unmount=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
