"""Which store an index in PostgreSQL is of, and that a store's index is there.

A store whose index is in PostgreSQL holds STORE/.dicomfs/index-in-postgresql, and
the database holds the same id (dicomfs_schema.store_id). So a directory that is not
the store (the shared file system not mounted yet: an empty mount point) is never
taken for it, where a reconcile would find no files and drop every row; another
store's database is never taken for this one's; and a command that forgets
--index is told where the index is, instead of starting a second one in SQLite.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .engine import INDEX_DIR

MARKER = "index-in-postgresql"


def marker(store: Path) -> Path:
    return store / INDEX_DIR / MARKER


def store_id(store: Path) -> str | None:
    """The id the store's marker holds; None if the store has none."""
    try:
        return marker(store).read_text().strip() or None
    except FileNotFoundError:
        return None


def mark(store: Path, store_id: str | None = None) -> str:
    """Write the store's marker (a new id unless given), durably; its id."""
    given = store_id or secrets.token_hex(16)
    path = marker(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{MARKER}.{os.getpid()}")
    with open(temporary, "w") as out:
        out.write(given + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return given


def in_postgresql(store: Path) -> bool:
    return marker(store).exists()
