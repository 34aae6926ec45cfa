"""The FUSE session against a stand-in for /dev/fuse: a socket pair whose each message is
one request or reply, as each read and write of /dev/fuse is."""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from dicomfs.mount import kernel, session
from dicomfs.mount.kernel import Op
from dicomfs.mount.session import FuseError, Later, Request


class Operations:
    """Answers a few requests as the tests need; records what it was asked."""

    def __init__(self) -> None:
        self.forgotten: list[tuple[int, int]] = []
        self.released: list[int] = []
        self.slow = threading.Event()

    def lookup(self, parent: int, name: bytes, request: Request) -> bytes | Later:
        if name == b"missing":
            raise FuseError(errno.ENOENT)
        if name == b"broken":
            raise RuntimeError("a defect of ours")
        if name == b"slow":
            return Later(lambda: self.slow.wait(10) and b"slowly")
        return b"entry:" + name + b":" + str(request.uid).encode()

    def forget(self, forgets: Sequence[tuple[int, int]]) -> None:
        self.forgotten.extend(forgets)

    def open(self, inode: int, flags: int, request: Request) -> bytes:
        return kernel.OPEN_OUT.pack(inode, kernel.FOPEN_KEEP_CACHE, 0)

    def release(self, fh: int) -> None:
        self.released.append(fh)

    def getattr(self, inode: int, request: Request) -> bytes:
        return b"attr"

    def read(self, fh: int, offset: int, size: int) -> Any:
        return bytearray(b"x" * size)

    def readdir(self, inode: int, offset: int, size: int) -> bytes:
        return b""

    def statfs(self) -> bytes:
        return b"statfs"

    def unlink(self, parent: int, name: bytes, request: Request) -> None:
        return None

    def rmdir(self, parent: int, name: bytes, request: Request) -> None:
        return None


class Kernel:
    """The kernel's side of the stand-in."""

    def __init__(self, end: socket.socket) -> None:
        self.end = end
        self.end.settimeout(10)
        self.unique = 1

    def send(self, opcode: int, body: bytes = b"", nodeid: int = 1, uid: int = 1000) -> int:
        self.unique += 1
        header = kernel.IN_HEADER.pack(
            kernel.IN_HEADER.size + len(body), opcode, self.unique, nodeid, uid, 100, 42, 0, 0
        )
        self.end.send(header + body)
        return self.unique

    def receive(self) -> tuple[int, int, bytes]:
        """(unique, error, body) of the next reply."""
        message = self.end.recv(1 << 20)
        length, error, unique = kernel.OUT_HEADER.unpack_from(message)
        assert length == len(message)
        return unique, error, message[kernel.OUT_HEADER.size :]


@pytest.fixture
def mounted() -> Iterator[tuple[Kernel, Operations, session.Session]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    operations = Operations()
    fuse = session.Session(ours.detach(), operations)  # type: ignore[arg-type]
    serving = threading.Thread(target=fuse.serve)
    serving.start()
    stand_in = Kernel(theirs)
    stand_in.send(Op.INIT, kernel.INIT_IN.pack(7, 38, 1 << 17, 0xFFFFFFFF))
    yield stand_in, operations, fuse
    operations.slow.set()
    theirs.close()  # as an unmount: the session's read ends
    serving.join(10)
    assert not serving.is_alive()
    fuse.close()


def test_init_agrees_on_what_both_sides_speak(
    mounted: tuple[Kernel, Operations, session.Session],
) -> None:
    stand_in, _, _ = mounted
    unique, error, body = stand_in.receive()
    assert (unique, error) == (2, 0)
    major, minor, readahead, flags, *_, max_pages, _, _ = kernel.INIT_OUT.unpack(body)
    assert (major, minor, readahead) == (7, kernel.MINOR, 1 << 17)
    assert flags == session.INIT_FLAGS  # no readdirplus: plain listings
    assert not flags & kernel.DO_READDIRPLUS
    assert max_pages == session.MAX_PAGES


def test_each_request_is_answered_with_its_unique_and_errors_as_negative_errno(
    mounted: tuple[Kernel, Operations, session.Session],
) -> None:
    stand_in, operations, _ = mounted
    stand_in.receive()  # INIT
    sent = stand_in.send(Op.LOOKUP, b"name\0", uid=1234)
    assert stand_in.receive() == (sent, 0, b"entry:name:1234")
    sent = stand_in.send(Op.LOOKUP, b"missing\0")
    assert stand_in.receive() == (sent, -errno.ENOENT, b"")
    sent = stand_in.send(Op.LOOKUP, b"broken\0")  # logged, and the session goes on
    assert stand_in.receive() == (sent, -errno.EIO, b"")
    for opcode, expected in (
        (Op.OPENDIR, errno.ENOSYS),  # the kernel then opens directories itself, cached
        (Op.FLUSH, errno.ENOSYS),
        (Op.GETXATTR, errno.ENOSYS),
        (39, errno.ENOSYS),  # IOCTL: not one we know
        (Op.WRITE, errno.EROFS),
        (Op.MKDIR, errno.EROFS),
        (Op.READLINK, errno.EINVAL),
    ):
        sent = stand_in.send(opcode, b"\0" * 64)
        assert stand_in.receive() == (sent, -expected, b""), opcode
    stand_in.send(Op.FORGET, kernel.FORGET_IN.pack(3), nodeid=77)  # answered with nothing
    forgets = kernel.FORGET_ONE.pack(5, 1) + kernel.FORGET_ONE.pack(6, 2)
    stand_in.send(Op.BATCH_FORGET, kernel.BATCH_FORGET_IN.pack(2, 0) + forgets)
    sent = stand_in.send(Op.STATFS)
    assert stand_in.receive() == (sent, 0, b"statfs")  # the next reply is this one's
    assert operations.forgotten == [(77, 3), (5, 1), (6, 2)]


def test_work_that_may_wait_holds_up_no_other_request(
    mounted: tuple[Kernel, Operations, session.Session],
) -> None:
    stand_in, operations, _ = mounted
    stand_in.receive()  # INIT
    slow = stand_in.send(Op.LOOKUP, b"slow\0")
    quick = stand_in.send(Op.LOOKUP, b"quick\0")
    assert stand_in.receive()[0] == quick
    operations.slow.set()
    assert stand_in.receive() == (slow, 0, b"slowly")


def test_a_release_is_answered_after_the_open_that_came_right_behind_it(
    mounted: tuple[Kernel, Operations, session.Session],
) -> None:
    stand_in, operations, _ = mounted
    stand_in.receive()  # INIT
    released = stand_in.send(Op.RELEASE, kernel.RELEASE_IN.pack(9) + b"\0" * 16)
    opened = stand_in.send(Op.OPEN, kernel.OPEN_IN.pack(0, 0), nodeid=5)
    first, second = stand_in.receive(), stand_in.receive()
    assert (first[0], second[0]) == (opened, released)
    assert operations.released == [9]


def test_notifications_name_what_is_stale(
    mounted: tuple[Kernel, Operations, session.Session],
) -> None:
    stand_in, _, fuse = mounted
    stand_in.receive()  # INIT
    fuse.invalidate_inode(42, pages=True)
    unique, code, body = stand_in.receive()
    assert (unique, code) == (0, kernel.Notify.INVAL_INODE)
    assert kernel.INVAL_INODE_OUT.unpack(body) == (42, 0, 0)
    fuse.invalidate_inode(42, pages=False)
    assert kernel.INVAL_INODE_OUT.unpack(stand_in.receive()[2]) == (42, -1, 0)
    fuse.invalidate_entry(7, "Müller".encode())
    unique, code, body = stand_in.receive()
    assert code == kernel.Notify.INVAL_ENTRY
    parent, length, _ = kernel.INVAL_ENTRY_OUT.unpack_from(body)
    assert (parent, body[kernel.INVAL_ENTRY_OUT.size :]) == (7, "Müller".encode() + b"\0")
    assert length == len("Müller".encode())


def test_dirents_are_padded_and_chain_their_offsets() -> None:
    names = [b"a", b"eight888", b"\xc3\xa9t\xc3\xa9"]
    replies, ends = kernel.dirents(
        [(10 + i, name, kernel.DT_REG) for i, name in enumerate(names)], 7 << 32
    )
    assert all(end % 8 == 0 for end in ends)
    assert ends[-1] == len(replies)
    start = 0
    for i, (name, end) in enumerate(zip(names, ends, strict=True)):
        inode, offset, length, kind = kernel.DIRENT.unpack_from(replies, start)
        assert (inode, offset, length, kind) == (10 + i, 7 << 32 | i + 1, len(name), kernel.DT_REG)
        assert replies[start + kernel.DIRENT.size : start + kernel.DIRENT.size + length] == name
        start = end
