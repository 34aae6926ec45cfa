"""The index as a SQLite file beside the store (STORE/.dicomfs/index.sqlite), in WAL
mode: the default, with nothing to set up, for one machine."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import sqlite_utils

from .. import modes
from . import binding, schema
from .engine import INDEX_DIR, SQLITE, IndexUnusable, OnlyServe
from .migrations import MIGRATIONS
from .schema import SCHEMA_VERSION

INDEX_FILE = "index.sqlite"


class SQLiteEngine:
    """A commit survives a crash of the process at once, and power loss once the WAL
    is flushed: at the next checkpoint, or by the writer (writer.py) before it tells
    its caller the work is done."""

    dialect = SQLITE

    def __init__(self, store: Path, *, readonly: bool, shared: bool) -> None:
        """shared: usable from several threads, one at a time (the caller locks)."""
        self.path = store / INDEX_DIR / INDEX_FILE
        self.where = str(self.path)
        if binding.in_postgresql(store):
            raise IndexUnusable(
                f"the index of {store} is in PostgreSQL ({binding.marker(store)} says so): "
                "name its database with --index, $DICOMFS_INDEX or index = in the "
                "configuration file"
            )
        if readonly:
            if not self.path.exists():
                raise IndexUnusable(
                    f"no index in {store} yet: run 'dicomfs index --store {store}' first"
                )
            if _stored_version(self.path) < SCHEMA_VERSION:
                raise IndexUnusable(
                    f"the index in {store} was made by an older dicomfs: any command that "
                    f"writes it upgrades it (dicomfs index --store {store})"
                )
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            conn.execute("PRAGMA query_only = ON")  # never a write, even by mistake
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=not shared)
            modes.tighten(store, self._own_files())
        conn.execute("PRAGMA busy_timeout = 30000")
        self.db = sqlite_utils.Database(conn)
        self.conn = conn
        self._wal = -1  # the WAL's descriptor, for flush
        self._data_version: int | None = None
        if not readonly:
            _use_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        elif self.version() > SCHEMA_VERSION:
            raise IndexUnusable(self._too_new())

    @staticmethod
    def upgrade(store: Path) -> None:
        """Bring an index an older dicomfs made to the current schema, if it is one."""
        path = store / INDEX_DIR / INDEX_FILE
        if path.exists() and _stored_version(path) < SCHEMA_VERSION:
            SQLiteEngine(store, readonly=False, shared=False).close()

    def sweeper_turn(self) -> OnlyServe:
        return OnlyServe()  # one serve a store (running.py)

    @property
    def wal(self) -> Path:
        """The WAL file, which the writer flushes."""
        return self.path.with_name(self.path.name + "-wal")

    def close(self) -> None:
        self.conn.close()
        if self._wal >= 0:
            os.close(self._wal)
            self._wal = -1

    def flush(self) -> None:
        """Make every commit so far survive power loss: fdatasync the WAL. The WAL
        file stays the same while this connection is open (SQLite removes it only
        with the last connection), and exists once a commit was made."""
        if self._wal < 0:
            self._wal = os.open(self.wal, os.O_RDONLY | os.O_CLOEXEC)
        os.fdatasync(self._wal)

    def doorbell(self) -> None:
        """No bell: a mount looks at the journal often (it is a file on this machine)."""
        return None

    def _own_files(self) -> list[Path]:
        """The index and its directory: patients' names, for the service's user only."""
        shm = self.path.with_name(self.path.name + "-shm")
        return [self.path.parent, self.path, self.wal, shm]

    def begin(self, *, flushed_later: bool = False) -> None:
        """A write transaction: one writer at a time, whatever the process. Its commit
        is in the WAL, flushed by the writer (writer.py) or at a checkpoint, either
        way."""
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")

    def others_wrote(self) -> bool:
        """Whether another connection committed since the last time this was asked."""
        (version,) = self.conn.execute("PRAGMA data_version").fetchone()
        changed = version != self._data_version
        self._data_version = version
        return changed

    def version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _too_new(self) -> str:
        return (
            f"the index {self.path} has schema version {self.version()}, newer than this "
            f"dicomfs understands ({SCHEMA_VERSION}): upgrade dicomfs"
        )

    def _migrate(self) -> None:
        if self.version() > SCHEMA_VERSION:
            raise IndexUnusable(self._too_new())
        if self.version() == SCHEMA_VERSION:
            return
        # A migration may make a table anew: with foreign keys on, dropping the old one
        # would delete every row that refers to it.
        self.conn.execute("PRAGMA foreign_keys = OFF")
        try:
            while self.version() < SCHEMA_VERSION:
                self.begin()
                try:
                    # Read again under the lock: another process may have migrated meanwhile.
                    number = self.version()
                    if number == 0 and not self.db.table_names():
                        schema.create(self.db)  # a new index: made as it is now, at once
                    elif number < SCHEMA_VERSION:
                        MIGRATIONS[number](self.db)
                        if self.conn.execute("PRAGMA foreign_key_check").fetchone():
                            raise IndexUnusable(f"{self.path}: a row lost what it refers to")
                        self.conn.execute(f"PRAGMA user_version = {number + 1}")
                except BaseException:
                    self.rollback()
                    raise
                self.commit()
        finally:
            self.conn.execute("PRAGMA foreign_keys = ON")


def _use_wal(conn: sqlite3.Connection, patience: float = 30.0) -> None:
    """Switch to WAL. Two commands starting on a new store at once race for it, and
    SQLite answers the loser "locked" at once instead of waiting: so wait here."""
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stored_version(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()
