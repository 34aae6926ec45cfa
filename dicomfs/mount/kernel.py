"""The FUSE kernel protocol, as far as a read-only file system needs it.

What the kernel and a FUSE daemon say to each other over /dev/fuse: each request is
a header (its length, opcode, a unique number, the node it is about and the caller's
ids) and the opcode's arguments; each reply is a header (its length, an error as a
negative errno, the request's unique number) and the opcode's result. Notifications
are replies with unique 0 and the notification's code as the error. The layouts are
those of the kernel's <linux/fuse.h>, protocol 7.31, which every kernel since 5.4
speaks; nothing here depends on a FUSE library.
"""

from __future__ import annotations

import enum
import itertools
import struct
from collections.abc import Iterable

MAJOR = 7
MINOR = 31  # the newest protocol minor whose layouts this module uses
ROOT_ID = 1


class Op(enum.IntEnum):
    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    DESTROY = 38
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    TMPFILE = 51


class Notify(enum.IntEnum):
    INVAL_INODE = 2
    INVAL_ENTRY = 3


# INIT flags (fuse_init_in.flags / fuse_init_out.flags).
ASYNC_READ = 1 << 0
DO_READDIRPLUS = 1 << 13
PARALLEL_DIROPS = 1 << 18
MAX_PAGES = 1 << 22

# fuse_open_out.open_flags
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1

# Requests.
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, ext, pad
INIT_IN = struct.Struct("<IIII")  # major, minor, max_readahead, flags
FORGET_IN = struct.Struct("<Q")  # nlookup
BATCH_FORGET_IN = struct.Struct("<II")  # count, dummy; then count FORGET_ONE
FORGET_ONE = struct.Struct("<QQ")  # nodeid, nlookup
GETATTR_IN = struct.Struct("<IIQ")  # getattr_flags, dummy, fh
GETATTR_FH = 1  # getattr_flags: fh names the handle asked about (an fstat)
OPEN_IN = struct.Struct("<II")  # flags, open_flags
READ_IN = struct.Struct("<QQI")  # fh, offset, size (then flags we do not need)
RELEASE_IN = struct.Struct("<Q")  # fh (then flags we do not need)
INTERRUPT_IN = struct.Struct("<Q")  # the unique of the request to interrupt

# Replies.
OUT_HEADER = struct.Struct("<IiQ")  # len, error (-errno), unique
INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")
# fuse_attr: ino, size, blocks, atime, mtime, ctime (seconds), their nanoseconds, mode,
# nlink, uid, gid, rdev, blksize, flags.
_ATTR = "QQQQQQIIIIIIIIII"
ENTRY_OUT = struct.Struct("<QQQQII" + _ATTR)  # nodeid, generation, entry/attr timeouts
ATTR_OUT = struct.Struct("<QII" + _ATTR)  # attr timeout (s, ns), dummy
OPEN_OUT = struct.Struct("<QII")  # fh, open_flags, padding
STATFS_OUT = struct.Struct("<QQQQQIII28x")  # blocks bfree bavail files ffree bsize namelen frsize
DIRENT = struct.Struct("<QQII")  # ino, offset of the next, namelen, type; then the name
INVAL_INODE_OUT = struct.Struct("<Qqq")  # ino, offset, length
INVAL_ENTRY_OUT = struct.Struct("<QII")  # parent, namelen, flags; then the name and a NUL

DT_DIR = 4
DT_REG = 8


def split_time(seconds: float) -> tuple[int, int]:
    """A timeout as the kernel takes it: whole seconds and nanoseconds."""
    whole = int(seconds)
    return whole, int((seconds - whole) * 1e9)


def dirents(entries: Iterable[tuple[int, bytes, int]], base: int) -> tuple[bytes, list[int]]:
    """(inode, name, type) entries as fuse_dirents, each padded to 8 bytes as the kernel
    reads them, entry i saying the next one's offset is base | i + 1; with where each
    entry ends, so that a batch of them is a slice."""
    packers, records = _DIRENTS, []
    for position, (inode, name, kind) in enumerate(entries, start=1):
        length = len(name)
        packer = packers.get(length) or _dirent_of_length(length)
        records.append(packer.pack(inode, base | position, length, kind, name))
    return b"".join(records), list(itertools.accumulate(map(len, records)))


_DIRENTS: dict[int, struct.Struct] = {}  # name length -> the fuse_dirent of that length


def _dirent_of_length(length: int) -> struct.Struct:
    """fuse_dirent for a name of this length, with its padding."""
    packer = _DIRENTS[length] = struct.Struct(f"<QQII{length}s{-(DIRENT.size + length) % 8}x")
    return packer
