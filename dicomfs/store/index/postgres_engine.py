"""The index in a PostgreSQL database (psycopg 3), which several machines share: their
receivers write it, their mounts read it.

The statements are the ones SQLite runs (engine.py), with `?` and `?N` numbered as
PostgreSQL's `$N` on their way. Every connection is in autocommit: a reader sees
each commit at once and holds no snapshot open; a writer opens its transactions
itself, and takes the writers' lock first, so that one writes at a time across
every machine, as SQLite's BEGIN IMMEDIATE makes one write at a time across
processes. The journal of changes then grows in the order of commits, which the
mounts rely on (mount/changes.py). A commit returns once it is on the server's disk
(synchronous_commit); the writer's return sooner, and flush() waits for them before
any caller hears that its work is done (writer.py), which is what a receiver's
Success promises. A connection lost between two transactions is made again.
"""

from __future__ import annotations

import contextlib
import decimal
import functools
import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg.adapt import Dumper, Loader

from ...lines import one_line
from . import binding, postgres_schema
from .engine import POSTGRESQL, Cursor, IndexUnusable
from .schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

# Advisory locks' keys: the writers' lock, the one a new index is made under, and the
# sweeper's turn.
WRITER_LOCK = 0x6469636F6D6673  # "dicomfs"
SCHEMA_LOCK = WRITER_LOCK + 1
SWEEPER_LOCK = WRITER_LOCK + 2
# A connection to a server that went away unannounced (a machine off, a network cut)
# is given up after about 25 s, rather than the kernel's two hours.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3}  # fmt: skip

# The newest change in the journal (mount/changes.py): what tells a writer that
# another one committed (Index keeps a cache of series while none did).
_NEWEST = "SELECT coalesce(max(seq), 0) FROM changes"
# Placeholders, outside quoted text and comments: ? or ?N.
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?(\d*)")


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> str:
    """sql with each `?` as `$N` (N counting them) and each `?N` as `$N`."""
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if not match.group(0).startswith("?"):
            return match.group(0)  # quoted text or a comment, as it is
        if match.group(1):
            return f"${match.group(1)}"
        count += 1
        return f"${count}"

    return _TOKENS.sub(number, sql)


class _Number(Loader):
    """numeric as int when whole (sum() of bigint is numeric), float otherwise: what
    SQLite gives for the same query."""

    def load(self, data: Any) -> int | float:
        value = decimal.Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


class _NulFree(Dumper):
    """Text as PostgreSQL can store it: a NUL (which a damaged header may hold, and
    SQLite keeps) becomes U+FFFD, the replacement character."""

    oid = 0  # of no type yet, as psycopg's own: the server infers it

    def dump(self, obj: str) -> bytes:
        return obj.replace("\x00", "\ufffd").encode()


class Connection:
    """A psycopg connection that takes the index's statements as SQLite's takes them,
    and is made again when the server went away (a restart, a network cut) between
    two transactions. Inside one, the loss is the transaction's error: its
    statements are never run again outside it."""

    dialect = POSTGRESQL

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]]) -> None:
        self._connect = connect
        self.raw = connect()
        self.in_transaction = False

    def live(self) -> psycopg.Connection[Any]:
        """The connection, made again if it was lost outside a transaction."""
        if (self.raw.closed or self.raw.broken) and not self.in_transaction:
            with contextlib.suppress(psycopg.Error):
                self.raw.close()
            self.raw = self._connect()
            log.info("connected to the index again")
        return self.raw

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        query, values = numbered(sql), list(parameters) or None
        try:
            return self.live().execute(query, values)
        except psycopg.OperationalError:
            if self.in_transaction or not self.raw.broken:
                raise
            return self.live().execute(query, values)  # found lost only now: once more

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor:
        cursor = self.live().cursor()
        cursor.executemany(numbered(sql), [list(row) for row in rows])
        return cursor

    def close(self) -> None:
        self.raw.close()


def where(url: str) -> str:
    """The URL, to be shown: without its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class PostgresEngine:
    dialect = POSTGRESQL

    def __init__(self, url: str, store: Path, *, readonly: bool) -> None:
        self._url = url
        self.where = where(url)
        self._readonly = readonly
        self.conn = Connection(self._connect)
        self._seen: int | None = None  # the newest change when this writer last committed
        self._others_wrote = True
        self._flusher: psycopg.Connection[Any] | None = None
        if readonly:
            self._check_version()
        else:
            self._make_or_check()
        self._bind(store)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            raw = psycopg.connect(
                _with_keepalives(self._url),
                autocommit=True,
                cursor_factory=psycopg.RawCursor,
                application_name="dicomfs",
            )
        except psycopg.Error as exc:
            raise IndexUnusable(f"cannot reach the index at {self.where}: {one_line(exc)}") from exc
        raw.adapters.register_loader("numeric", _Number)
        raw.adapters.register_dumper(str, _NulFree)
        # Each day of by-received/ is a day of this machine's clock, as in SQLite.
        raw.execute("SELECT set_config('TimeZone', $1, false)", [_local_zone()])
        raw.execute("SET synchronous_commit = on")  # whatever the server's default
        if self._readonly:
            raw.execute("SET default_transaction_read_only = on")
        return raw

    def close(self) -> None:
        self.conn.close()
        if self._flusher is not None:
            self._flusher.close()

    def doorbell(self) -> Doorbell:
        return Doorbell(self._url, self.where)

    def sweeper_turn(self) -> SweeperTurn:
        return SweeperTurn(self._url, self.where)

    # Each is one round trip (several statements without parameters go as one): a
    # writer holds the writers' lock for as few of them as it can.
    _LOCKED = f"SELECT pg_advisory_xact_lock({WRITER_LOCK}); {_NEWEST}"
    _BEGIN = f"BEGIN; SET LOCAL synchronous_commit = on; {_LOCKED}"
    _BEGIN_FLUSHED_LATER = f"BEGIN; SET LOCAL synchronous_commit = off; {_LOCKED}"
    _COMMIT = f"{_NEWEST}; COMMIT"

    def begin(self, *, flushed_later: bool = False) -> None:
        """flushed_later: the commit returns before the server has it on disk (and
        lets go of the writers' lock then); flush() waits for that."""
        begin = self._BEGIN_FLUSHED_LATER if flushed_later else self._BEGIN
        for attempt in (1, 2):  # a connection found lost only now is made again, once
            raw = self.conn.live()
            self.conn.in_transaction = True
            try:
                cursor = raw.execute(begin)
                break
            except BaseException as exc:
                self.conn.in_transaction = False
                if not (isinstance(exc, psycopg.OperationalError) and raw.broken) or attempt == 2:
                    raise
        for _ in range(3):  # past BEGIN's, SET's and the lock's results:
            cursor.nextset()  # the newest change once the lock is held
        newest = int(cursor.fetchone()[0])  # type: ignore[index]
        self._others_wrote = newest != self._seen

    def commit(self) -> None:
        try:
            self._seen = int(self.conn.raw.execute(self._COMMIT).fetchone()[0])  # type: ignore[index]
        finally:
            self.conn.in_transaction = False

    def rollback(self) -> None:
        self._seen = None
        try:
            if not self.conn.raw.broken:
                self.conn.raw.execute("ROLLBACK")
        finally:
            self.conn.in_transaction = False

    def flush(self) -> None:
        """Return once every commit made so far, on any connection, is on the server's
        disk: a transaction of its own that writes the log and commits synchronously
        (the server flushes its log in order), on a connection of its own, so that the
        next transaction need not wait. A transaction that writes nothing (one that
        only takes a transaction id, say) commits without a flush: a crash test showed
        it."""
        if self._flusher is None:
            self._flusher = psycopg.connect(_with_keepalives(self._url), autocommit=True)
            self._flusher.execute("SET synchronous_commit = on")
        try:
            # A message in the log, for no reader: the least a transaction can write.
            self._flusher.execute("SELECT pg_logical_emit_message(true, 'dicomfs', '')")
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                self._flusher.close()
            self._flusher = None
            raise

    def others_wrote(self) -> bool:
        """Whether another writer committed since this one last did: said once a
        transaction (its own changes since are its own)."""
        said, self._others_wrote = self._others_wrote, False
        return said

    def version(self) -> int:
        row = self.conn.execute(f"SELECT version FROM {postgres_schema.VERSION_TABLE}").fetchone()
        return int(row[0])

    def _exists(self) -> bool:
        row = self.conn.execute("SELECT to_regclass(?)", (postgres_schema.VERSION_TABLE,))
        return row.fetchone()[0] is not None

    def _check_version(self) -> None:
        if not self._exists():
            raise IndexUnusable(f"no index at {self.where} yet: run 'dicomfs index' with it first")
        if self.version() != SCHEMA_VERSION:
            raise IndexUnusable(
                f"the index at {self.where} has schema version {self.version()}; this "
                f"dicomfs uses {SCHEMA_VERSION}: run the same dicomfs on every machine"
            )

    def _bind(self, store: Path) -> None:
        """The index must be this store's (binding.py); a new one becomes it."""
        bound = self.conn.execute(
            f"SELECT store_id FROM {postgres_schema.VERSION_TABLE}"
        ).fetchone()[0]
        here = binding.store_id(store)
        if bound is None:
            if not self._readonly:
                bound = binding.mark(store, here)
                self.conn.execute(
                    f"UPDATE {postgres_schema.VERSION_TABLE} SET store_id = ?", (bound,)
                )
            return
        if here is None:
            raise IndexUnusable(
                f"{store} is not the store of the index at {self.where}: it has no "
                f"{binding.INDEX_DIR}/{binding.MARKER} (is the shared file system "
                "mounted?); check --store"
            )
        if here != bound:
            raise IndexUnusable(
                f"the index at {self.where} is another store's than {store}: check "
                "--store and --index"
            )

    def _make_or_check(self) -> None:
        """Make the index if the database has none yet (under a lock: two machines may
        start at once), else check that it is this dicomfs's."""
        if not self._exists():
            raw = self.conn.live()
            self.conn.in_transaction = True
            try:
                raw.execute("BEGIN")
                raw.execute("SELECT pg_advisory_xact_lock($1)", [SCHEMA_LOCK])
                if not self._exists():
                    for statement in postgres_schema.statements():
                        raw.execute(statement)
                raw.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    raw.execute("ROLLBACK")
                raise
            finally:
                self.conn.in_transaction = False
        self._check_version()


class Doorbell:
    """What tells a mount at once that a transaction changed the tree, whichever
    machine committed it: a connection of its own that LISTENs to the triggers'
    notifications (postgres_schema.CHANGES_CHANNEL)."""

    def __init__(self, url: str, where: str) -> None:
        self._url = url
        self._where = where

    def run(self, ring: threading.Event, stop: threading.Event) -> None:
        """Set `ring` at each notification, and whenever the connection is made
        again (what was committed meanwhile rang for nobody), until stop is set."""
        lost = False
        while not stop.is_set():
            try:
                with psycopg.connect(_with_keepalives(self._url), autocommit=True) as conn:
                    conn.execute(f"LISTEN {postgres_schema.CHANGES_CHANNEL}")
                    if lost:
                        log.info("the index's notifications are back (%s)", self._where)
                    lost = False
                    ring.set()
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            ring.set()
            except psycopg.Error as exc:
                if not lost:
                    log.warning(
                        "lost the index's notifications (%s): %s", self._where, one_line(exc)
                    )
                lost = True
                stop.wait(1.0)


class SweeperTurn:
    """Which of the serves sharing the index expires and reconciles: the one that
    holds a session's advisory lock on a connection of its own. When that serve
    ends, or its machine or its connection goes, the server lets the lock go and
    the next serve to ask takes it."""

    def __init__(self, url: str, where: str) -> None:
        self._url = url
        self._where = where
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False

    def held(self) -> bool:
        """Whether this serve's turn it is, now: taken if nobody holds it."""
        try:
            if self._conn is None:
                self._conn = psycopg.connect(_with_keepalives(self._url), autocommit=True)
            if self._held:
                self._conn.execute("SELECT 1")  # still connected: still held
            else:
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", [SWEEPER_LOCK])
                self._held = bool(row.fetchone()[0])  # type: ignore[index]
        except psycopg.Error as exc:
            if self._held:
                log.warning("lost the sweeper's turn (%s): %s", self._where, one_line(exc))
            self.close()
        return self._held

    def close(self) -> None:
        """Let the turn go (the server does when the connection closes)."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None
        self._held = False


def _with_keepalives(url: str) -> str:
    return psycopg.conninfo.make_conninfo(url, **KEEPALIVES)


def _local_zone() -> str:
    """This machine's time zone by its name (Europe/Zurich), as PostgreSQL knows it."""
    if os.environ.get("TZ"):
        return os.environ["TZ"].lstrip(":")
    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:
        return "UTC"
    _, found, name = target.partition("/zoneinfo/")
    return name if found else time.strftime("%z")  # a fixed offset, at worst
