"""The files of the store: walking them and writing new ones atomically.

The store is a plain directory. DICOM files may lie in it in any layout; the
index lives in STORE/.dicomfs/. Files that dicomfs itself writes go to
`<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm`, written to a temporary file,
fsynced and renamed into place, so a half-written file is never visible.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from .index import INDEX_DIR, FileState

TMP_DIR = "tmp"  # under STORE/.dicomfs: same file system, so rename is atomic
_PLAIN_UID = re.compile(r"^[0-9][0-9.]{0,63}$")


def tmp_dir(store: Path) -> Path:
    path = store / INDEX_DIR / TMP_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def walk(store: Path) -> Iterator[tuple[str, FileState]]:
    """Every regular file of the store but the index's own, as (relative path, state).

    Symbolic links are not followed: a link out of the store is not our data.
    """
    stack = [store]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # vanished or unreadable: its files are simply not seen this time
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not (directory == store and entry.name == INDEX_DIR):
                        stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    rel = os.path.relpath(entry.path, store)
                    yield rel, FileState(st.st_size, st.st_mtime_ns)
            except OSError:
                continue


def state_of(path: Path) -> FileState:
    st = path.stat()
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
    target = store / rel_path
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir(store), prefix="in-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o640)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    fsync_dir(target.parent)
    return state_of(target)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def delete_files(store: Path, paths: Iterable[str]) -> None:
    """Delete files of the store, and the directories that leaves empty."""
    parents = set()
    for rel in paths:
        with contextlib.suppress(FileNotFoundError):
            (store / rel).unlink()
        parents.add((store / rel).parent)
    for directory in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        while directory != store and directory.is_relative_to(store):
            try:
                directory.rmdir()
            except OSError:
                break  # not empty, or gone already
            directory = directory.parent
