"""Who may read what dicomfs writes: the service's user, or also the store's group.

The index holds patient names and the files are patients' images, so every
command runs with umask 077: files 0600, directories 0700. A store directory
with the setgid bit (chgrp lab STORE; chmod g+s STORE, the Unix convention for
a directory a group shares) asks for 027 instead: the group reads (0640, 0750),
and what is made in it inherits the group.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

PRIVATE = 0o077
GROUP = 0o027


def umask_for(store: Path) -> int:
    try:
        shared = bool(os.stat(store).st_mode & stat.S_ISGID)
    except OSError:
        shared = False  # not made yet: it will be the user's alone
    return GROUP if shared else PRIVATE


def tighten(store: Path, paths: Iterable[Path]) -> None:
    """Take from existing files what the umask would not have given them (an older
    dicomfs made the index world-readable). Symlinks and missing files are skipped."""
    mask = umask_for(store)
    for path in paths:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if mode & mask and not stat.S_ISLNK(st.st_mode):
            with contextlib.suppress(OSError):  # not ours to change: leave it
                os.chmod(path, mode & ~mask)
