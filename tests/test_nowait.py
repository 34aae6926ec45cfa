"""Opening and reading stored files only when that cannot block: what the kernel holds is
served at once, anything else is left to a thread (None), and a link is never followed."""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.mount import nowait
from dicomfs.store import files

SIZE = 4 * 1024 * 1024


@pytest.fixture
def root(store: Path) -> Iterator[int]:
    with files.opened(store) as fd:
        yield fd


@pytest.fixture
def stored(store: Path) -> bytes:
    """A file just written, so in the kernel's caches."""
    data = os.urandom(SIZE)
    (store / "study").mkdir()
    (store / "study" / "1.dcm").write_bytes(data)
    return data


@pytest.fixture
def opened(root: int, stored: bytes) -> Iterator[int]:
    fd = files.open_beneath(root, "study/1.dcm", os.O_RDONLY)
    yield fd
    os.close(fd)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]  # fmt: skip
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
PAGE = os.sysconf("SC_PAGE_SIZE")


def cached_pages(fd: int) -> list[bool]:
    """Which pages of the file the page cache holds, as mincore(2) tells: the judge that
    does not go through the code under test."""
    address = _libc.mmap(None, SIZE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    try:
        pages = ctypes.create_string_buffer(SIZE // PAGE)
        assert _libc.mincore(address, SIZE, pages) == 0, os.strerror(ctypes.get_errno())
        return [bool(byte & 1) for byte in pages.raw]
    finally:
        _libc.munmap(address, SIZE)


def drop_from_page_cache(fd: int) -> None:
    """Drop the file's pages. The kernel may keep some for a moment (those still in a batch
    of another CPU): ask again until none is left."""
    os.fsync(fd)  # dirty pages cannot be dropped
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # and no read-ahead brings them back
    for _ in range(100):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if not any(cached_pages(fd)):
            return
        time.sleep(0.05)
    pytest.skip("the kernel keeps this file's pages cached")


def test_a_cached_file_opens_at_once(root: int, stored: bytes) -> None:
    fd = nowait.open_cached(root, "study/1.dcm", os.O_RDONLY)
    assert fd is not None
    try:
        assert os.pread(fd, 16, 0) == stored[:16]
    finally:
        os.close(fd)


@pytest.mark.parametrize("rel", ["study/missing.dcm", "../outside.dcm", "/etc/passwd", "link"])
def test_what_cannot_be_opened_at_once_is_left_to_the_thread(
    store: Path, root: int, stored: bytes, rel: str
) -> None:
    (store / "link").symlink_to("study/1.dcm")  # a link, even to a file of the store
    assert nowait.open_cached(root, rel, os.O_RDONLY) is None


def test_cached_bytes_are_read_at_once_and_fewer_at_the_end(opened: int, stored: bytes) -> None:
    assert nowait.read_cached(opened, 0, 65536, SIZE) == stored[:65536]
    assert nowait.read_cached(opened, SIZE - 100, 65536, SIZE) == stored[-100:]
    assert nowait.read_cached(opened, SIZE, 65536, SIZE) == b""


def left_to_the_thread(opened: int, stored: bytes, offset: int, size: int) -> bool:
    """Whether read_cached declined these bytes. RWF_NOWAIT may start the read it declines
    to wait for (read-ahead, Linux 5.9 and later), and on a fast disk that read can finish
    inside the call: then the answer must be the stored bytes, and the caller tries again."""
    got = nowait.read_cached(opened, offset, size, SIZE)
    if got is None:
        return True
    assert got == stored[offset : offset + size]
    return False


def test_bytes_not_in_the_page_cache_are_left_to_the_thread(opened: int, stored: bytes) -> None:
    for _ in range(10):
        drop_from_page_cache(opened)
        if left_to_the_thread(opened, stored, SIZE // 2, 65536):
            break
    else:
        pytest.fail("every read of uncached bytes was answered on the loop")


def test_bytes_partly_in_the_page_cache_are_left_to_the_thread(opened: int, stored: bytes) -> None:
    for _ in range(10):
        drop_from_page_cache(opened)
        os.pread(opened, PAGE, 0)  # now the first page is cached (perhaps a few more)
        assert nowait.read_cached(opened, 0, PAGE, SIZE) == stored[:PAGE]
        first_missing = cached_pages(opened).index(False)
        if left_to_the_thread(opened, stored, 0, (first_missing + 1) * PAGE):
            break
    else:
        pytest.fail("every read of partly cached bytes was answered on the loop")
