"""The files of the store: walking them, and opening, writing and deleting them safely.

The store is a plain directory. DICOM files may lie in it in any layout; the
index lives in STORE/.dicomfs/. Files that dicomfs itself writes go to
`<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm`, written to a temporary file,
fsynced and renamed into place, so a half-written file is never visible.

Nothing below the store is reached by a plain path. Every file and directory is
opened relative to a descriptor of the store with openat2(RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS), or one component at a time with O_NOFOLLOW where the kernel
has no openat2: a symbolic link anywhere below the store fails (ELOOP) instead
of being followed, so nothing outside the store is ever read, written or
deleted. The store's own path may be a symlink; the command line resolves it
once, at start.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from . import sharing
from .index import INDEX_DIR, INDEX_FILE, FileState

log = logging.getLogger(__name__)

TMP_DIR = "tmp"  # under STORE/.dicomfs: same file system, so rename is atomic
_PLAIN_UID = re.compile(r"^[0-9][0-9.]{0,63}$")

# The most dicomfs grants; the umask (modes.py) takes the group's part away
# unless the store belongs to a group.
FILE_MODE = 0o640
DIR_MODE = 0o750

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# openat2(2), Linux 5.6; RESOLVE_CACHED since 5.12.
_SYS_OPENAT2 = 437  # the same number on every Linux architecture
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_CACHED = 0x20


class UnsafeStore(Exception):
    """dicomfs's own directories in the store are not what they must be."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)


_HOW_SIZE = ctypes.sizeof(_OpenHow)


@functools.lru_cache(maxsize=32)
def _how(flags: int, mode: int, resolve: int) -> Any:
    """openat2's request, made once for each kind (the mount makes one open per open)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, resolve)
    return ctypes.pointer(how)  # keeps `how` alive with it; the kernel only reads it


def openat2(directory: int, rel: str, flags: int, resolve: int, mode: int = 0) -> int | None:
    """openat2(2): a descriptor, OSError, or None if this kernel cannot (too old, or
    a flag it does not know)."""
    fd = _libc.syscall(
        _SYS_OPENAT2, directory, os.fsencode(rel), _how(flags, mode, resolve), _HOW_SIZE
    )
    if fd >= 0:
        return int(fd)
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.E2BIG, errno.EPERM):
        return None  # EPERM: a container's seccomp filter that does not know openat2
    raise OSError(code, os.strerror(code), rel)


def open_beneath(root: int, rel: str, flags: int, mode: int = FILE_MODE) -> int:
    """Open rel, a path below the directory `root`, never following a symlink (ELOOP)
    nor leaving root (EXDEV)."""
    try:
        fd = openat2(root, rel or ".", flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, mode)
    except NotADirectoryError:
        # O_DIRECTORY on a link says ENOTDIR, not ELOOP: say what it is, as below.
        if flags & os.O_DIRECTORY and _is_link(root, rel):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), rel) from None
        raise
    if fd is not None:
        return fd
    return _open_by_components(root, rel, flags, mode)


def _is_link(directory: int, rel: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(rel, dir_fd=directory, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_by_components(root: int, rel: str, flags: int, mode: int) -> int:
    """open_beneath without openat2: one O_NOFOLLOW open per component."""
    *parents, name = _components(rel) or ["."]
    directory = root
    try:
        for part in parents:
            child = _open_at(directory, part, _DIR_FLAGS)
            if directory != root:
                os.close(directory)
            directory = child
        return _open_at(directory, name, flags, mode)
    finally:
        if directory != root:
            os.close(directory)


def _open_at(directory: int, name: str, flags: int, mode: int = FILE_MODE) -> int:
    """Open name in directory, never following it: a symlink is ELOOP."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=directory)
    except NotADirectoryError:  # O_DIRECTORY on a symlink says ENOTDIR, not ELOOP
        if stat.S_ISLNK(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name) from None
        raise


def _components(rel: str) -> list[str]:
    parts = [part for part in rel.split("/") if part not in ("", ".")]
    if rel.startswith("/") or ".." in parts:
        raise OSError(errno.EXDEV, "not a path below the store", rel)
    return parts


@contextlib.contextmanager
def opened(store: Path) -> Iterator[int]:
    """A descriptor of the store's directory, the root of every open below it."""
    fd = os.open(store, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def opener(root: int) -> Callable[[str, int], int]:
    """For open(rel, opener=...): files below root, as open_beneath opens them."""
    return lambda rel, flags: open_beneath(root, rel, flags)


def open_dir(root: int, rel: str) -> int:
    return open_beneath(root, rel, _DIR_FLAGS)


def make_dirs(root: int, rel: str) -> tuple[int, list[int]]:
    """mkdir -p of rel below root, never through a symlink.

    Returns a descriptor of rel and descriptors of the directories that gained an
    entry (to fsync); the caller closes them all (close_all).
    """
    with contextlib.suppress(FileNotFoundError):
        return open_dir(root, rel), []  # nearly always there already
    held = [open_dir(root, ".")]  # held[-1]: where the next component goes
    changed: list[int] = []
    try:
        for part in _components(rel):
            parent = held[-1]
            with contextlib.suppress(FileExistsError):  # another association was quicker
                os.mkdir(part, DIR_MODE, dir_fd=parent)
                changed.append(parent)
            held.append(_open_at(parent, part, _DIR_FLAGS))
    except BaseException:
        close_all(held)
        raise
    close_all(fd for fd in held[:-1] if fd not in changed)
    return held[-1], changed


def close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def fsync_all(fds: Iterable[int]) -> None:
    for fd in fds:
        os.fsync(fd)


def state_at(directory: int, name: str) -> FileState:
    st = os.stat(name, dir_fd=directory, follow_symlinks=False)
    return FileState(st.st_size, st.st_mtime_ns)


def create_temp(directory: Path | int, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file of a unique name in directory (a path or a descriptor), open for
    writing: (descriptor, name; a full path when directory is one). Its mode is
    FILE_MODE less the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        name = f"{prefix}{secrets.token_hex(8)}{suffix}"
        with contextlib.suppress(FileExistsError):
            if isinstance(directory, int):
                return os.open(name, flags, FILE_MODE, dir_fd=directory), name
            path = os.path.join(directory, name)
            return os.open(path, flags, FILE_MODE), path


def check_own_dirs(store: Path) -> None:
    """dicomfs's directories and index in the store must be what they seem: a symlink
    there would send the index or the spool elsewhere."""
    own = store / INDEX_DIR
    for path, kind in ((own, stat.S_ISDIR), (own / TMP_DIR, stat.S_ISDIR),
                       (own / INDEX_FILE, stat.S_ISREG)):  # fmt: skip
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        if not kind(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not what dicomfs made"
            raise UnsafeStore(
                f"{path} is {what}: dicomfs keeps its index and spool only in real "
                "directories of the store; move it away and start again"
            )


def tmp_dir(store: Path) -> Path:
    """STORE/.dicomfs/tmp (or this machine's below it, see sharing.py), made if
    missing; never through a symlink."""
    with opened(store) as root:
        directory, changed = make_dirs(root, _spool(store))
        close_all([directory, *changed])
    return store / _spool(store)


def _spool(store: Path) -> str:
    """This machine's spool, below the store (see sharing.py)."""
    return f"{INDEX_DIR}/{sharing.own_spool(store, TMP_DIR)}"


def top_key(name: str, is_dir: bool) -> str:
    """Where the store's top-level entry `name` sorts among the paths of the index: a
    directory's paths all begin with its key, and lie between it and the next key (a
    name has no '/'), so ranges of keys share out the store and its rows alike."""
    return name + "/" if is_dir else name


def top_keys(store: Path) -> list[str]:
    """The keys of the store's top-level entries but the index's own, sorted."""
    keys = []
    with os.scandir(store) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != INDEX_DIR:
                        keys.append(top_key(entry.name, True))
                elif entry.is_file(follow_symlinks=False):
                    keys.append(top_key(entry.name, False))
    return sorted(keys)


def walk(store: Path, low: str = "", high: str | None = None) -> Iterator[tuple[str, FileState]]:
    """Every regular file of the store but the index's own, as (relative path, state);
    with low and high, only below the top-level entries whose key lies in [low, high).

    Symbolic links are not followed: a link out of the store is not our data.
    Relative paths are built as the walk descends (a store holds millions of files,
    and os.path.relpath costs more than the lstat).
    """
    stack = [("", str(store))]  # (path relative to the store with a trailing /, path)
    while stack:
        prefix, directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # vanished or unreadable: its files are simply not seen this time
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                if not prefix:
                    key = top_key(entry.name, is_dir)
                    if key < low or (high is not None and key >= high):
                        continue
                if is_dir:
                    if prefix or entry.name != INDEX_DIR:
                        stack.append((f"{prefix}{entry.name}/", entry.path))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    yield prefix + entry.name, FileState(st.st_size, st.st_mtime_ns)
            except OSError:
                continue


def state_of(path: Path) -> FileState:
    """The state of the file at path itself (a symlink's own, never its target's)."""
    st = path.lstat()
    return FileState(st.st_size, st.st_mtime_ns)


def uid_component(uid: str) -> str:
    """A UID as a path component; anything but a plain UID becomes its SHA-256, so
    two UIDs never share a path. (Before, it was an 8-hex SHA-1, whose collisions
    are easy to find: files written under such names stay where they are.)"""
    if _PLAIN_UID.match(uid):
        return uid
    return "x" + hashlib.sha256(uid.encode()).hexdigest()


def canonical_path(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """Where dicomfs puts an instance it writes, relative to the store."""
    return os.path.join(
        uid_component(study_uid), uid_component(series_uid), uid_component(sop_uid) + ".dcm"
    )


def write_atomically(store: Path, rel_path: str, source: IO[bytes]) -> FileState:
    """Copy a stream into the store at rel_path; visible only once complete and durable."""
    directory, name = os.path.split(rel_path)
    with opened(store) as root:
        spool, made = make_dirs(root, _spool(store))
        close_all(made)
        try:
            fd, tmp_name = create_temp(spool, "in-", ".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out, 1024 * 1024)
                    out.flush()
                    os.fsync(out.fileno())
                target, changed = make_dirs(root, directory)
                try:
                    os.replace(tmp_name, name, src_dir_fd=spool, dst_dir_fd=target)
                    fsync_all([target, *changed])
                    return state_at(target, name)
                finally:
                    close_all([target, *changed])
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name, dir_fd=spool)
                raise
        finally:
            os.close(spool)


def delete_files(store: Path, paths: Iterable[str]) -> None:
    """Delete files of the store, and the directories that leaves empty.

    A path through a symlink is left alone: at most the link itself goes, never
    what it points to.
    """
    paths = list(paths)
    with opened(store) as root:
        for rel in paths:
            _unlink(root, rel)
        parents = {os.path.dirname(rel) for rel in paths}
        for directory in sorted(parents, key=lambda d: d.count("/"), reverse=True):
            _remove_empty_dirs(root, directory)


def _unlink(root: int, rel: str) -> None:
    directory, name = os.path.split(rel)
    try:
        fd = open_dir(root, directory)
    except FileNotFoundError:
        return  # gone already
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
            raise
        log.warning("%s not deleted: its path has a symbolic link, which is never followed", rel)
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=fd)  # a symlink itself goes, never its target
    finally:
        os.close(fd)


def _remove_empty_dirs(root: int, directory: str) -> None:
    """rmdir directory, then its parents, while they are empty."""
    while directory:
        parent, name = os.path.split(directory)
        try:
            fd = open_dir(root, parent)
        except OSError:
            return
        try:
            os.rmdir(name, dir_fd=fd)
        except OSError:
            return  # not empty, gone already, or a symlink (which stays)
        finally:
            os.close(fd)
        directory = parent
