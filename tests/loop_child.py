"""A three-file filesystem served by dicomfs.mount.loop, for tests/test_loop.py.

`slow` answers a read only once `release` has been read: a handler that waits
must not keep the loop from serving the next request.

    python loop_child.py MOUNTPOINT [--stock]
prints "mounted lean|stock" once up, "slow waits" when a read of `slow` waits, and
"restored" if the loop left pyfuse3 as it found it when the kernel ended the session.
"""

from __future__ import annotations

import argparse
import errno
import stat

import pyfuse3
import trio

from dicomfs.mount import loop

CONTENT = {b"hello": b"hello, world\n", b"slow": b"slow\n", b"release": b"release\n"}
INODES = {name: pyfuse3.ROOT_INODE + 1 + i for i, name in enumerate(CONTENT)}
NAMES = {inode: name for name, inode in INODES.items()}


class Gate(pyfuse3.Operations):
    def __init__(self) -> None:
        super().__init__()
        self.released = trio.Event()

    async def getattr(
        self, inode: int, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        attributes = pyfuse3.EntryAttributes()
        attributes.st_ino = inode
        if inode == pyfuse3.ROOT_INODE:
            attributes.st_mode = stat.S_IFDIR | 0o555
        elif inode in NAMES:
            attributes.st_mode = stat.S_IFREG | 0o444
            attributes.st_size = len(CONTENT[NAMES[inode]])
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        attributes.attr_timeout = attributes.entry_timeout = 0  # every stat is a request
        return attributes

    async def lookup(
        self, parent: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if parent != pyfuse3.ROOT_INODE or name not in INODES:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self.getattr(INODES[name], ctx)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        for name, inode in list(INODES.items())[start_id:]:
            if not pyfuse3.readdir_reply(token, name, await self.getattr(inode), inode - 1):
                return

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=inode, direct_io=True)  # every read is a request

    async def read(self, fh: int, off: int, size: int) -> bytes:
        name = NAMES[fh]
        if name == b"slow":
            print("slow waits", flush=True)
            await self.released.wait()
        elif name == b"release":
            self.released.set()
        return CONTENT[name][off : off + size]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mountpoint")
    parser.add_argument("--stock", action="store_true", help="as with a pyfuse3 not tested here")
    args = parser.parse_args()
    if args.stock:
        loop.TESTED_VERSIONS = frozenset()
    stock_wait = pyfuse3._wait_fuse_readable  # type: ignore[attr-defined]
    pyfuse3.init(Gate(), args.mountpoint, {"fsname=loop-test", "ro"})
    try:
        print("mounted", "lean" if loop.is_adjustable() else "stock", flush=True)
        trio.run(loop.serve)
    finally:
        pyfuse3.close(unmount=True)
    if pyfuse3._wait_fuse_readable is stock_wait:  # type: ignore[attr-defined]
        print("restored", flush=True)


if __name__ == "__main__":
    main()
