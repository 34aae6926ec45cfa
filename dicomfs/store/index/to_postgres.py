"""A store's SQLite index copied into a PostgreSQL database (`dicomfs index --to URL`):
how a lab moves from one machine to several.

Every table is copied with its row ids (the mount names files and directories by
them), but the journal of changes, which the mounts start afresh from; each
identity column then gives ids past the highest SQLite ever gave (its
sqlite_sequence), so that no id is given twice. The rows go in by COPY into
tables that have no triggers yet (a row trigger would count series_counts a
second time, and fill the journal); the triggers and the schema's version come
after them. Then the copy is read back and compared with the SQLite index, table
by table: its rows counted, and digested in the order of their primary key.

All of it is one transaction, taken under the lock a new index is made under
(postgres_engine.SCHEMA_LOCK): two copies, or a copy and a serve starting on the
same database, do not both make the index, and whatever fails leaves the
database as it was. The SQLite index is only read, in one read transaction: the
copy is one moment of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from . import binding, postgres_schema
from .postgres_engine import SCHEMA_LOCK, where
from .sqlite_engine import SQLiteEngine

if TYPE_CHECKING:
    from ..indexer import Progress

# Every table of the index, in an order that copies a row after the rows it refers to.
COPIED = (
    "patients", "studies", "series", "instances", "series_counts",
    "patient_words", "study_words", "series_words",
    "skipped", "audit", "kept", "doomed", "reads",
)  # fmt: skip
NOT_COPIED = ("changes",)  # the journal: each mount starts afresh
STEP = 5000  # rows between two steps of a progress bar


class CopyError(Exception):
    """The copy was not made: the message says why, and what to do."""


class Refused(CopyError):
    """The database cannot take the copy: it holds an index, or tables of its names."""


class Mismatch(CopyError):
    """The copy differs from the SQLite index (the transaction is rolled back)."""


class Changed(CopyError):
    """The SQLite index changed while it was copied (the transaction is rolled back)."""


class Failed(CopyError):
    """The server refused a statement of the copy (the transaction is rolled back)."""


@dataclasses.dataclass(frozen=True)
class Copied:
    where: str  # the database, without its password
    rows: dict[str, int]  # table -> rows copied, in the order copied (and checked)
    next_ids: dict[str, int]  # table -> the row id the next new row gets
    seconds: float

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def copy_index(store: Path, url: str, progress: Progress | None = None) -> Copied:
    """Copy the store's SQLite index into the PostgreSQL database at url, which must
    hold no index yet, and check the copy."""
    started = time.monotonic()
    shown = where(url)
    source = SQLiteEngine(store, readonly=True, shared=False)  # IndexUnusable if none
    try:
        try:
            conn = psycopg.connect(url, autocommit=True, application_name="dicomfs")
        except psycopg.Error as exc:
            raise Failed(f"cannot reach the database {shown}: {_one_line(exc)}") from exc
        before = _data_version(source)
        source.conn.execute("BEGIN")  # one snapshot for the copy and the check
        try:
            conn.execute("SET synchronous_commit = on")  # on disk when it returns
            bound = binding.store_id(store) or secrets.token_hex(16)
            with conn.transaction():
                rows, next_ids = _copy(source, conn, shown, progress)
                conn.execute(f"UPDATE {postgres_schema.VERSION_TABLE} SET store_id = %s", [bound])
                source.conn.execute("ROLLBACK")
                if _data_version(source) != before:
                    raise Changed(
                        f"the SQLite index of {store} changed while it was copied (a serve "
                        "or a mount of the store wrote it): nothing was copied; stop them, "
                        "then copy again"
                    )
        except psycopg.Error as exc:
            raise Failed(f"cannot copy the index to {shown}: {_one_line(exc)}") from exc
        finally:
            conn.close()
            if source.conn.in_transaction:
                source.conn.execute("ROLLBACK")
    finally:
        source.close()
    # From now on every command of the store is told its index is in PostgreSQL.
    binding.mark(store, bound)
    return Copied(shown, rows, next_ids, time.monotonic() - started)


def _copy(
    source: SQLiteEngine, conn: psycopg.Connection[Any], shown: str, progress: Progress | None
) -> tuple[dict[str, int], dict[str, int]]:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK])
    _refuse_unless_empty(conn, shown)
    made = postgres_schema.tables_and_indexes()
    tables = [statement for statement in made if statement.startswith("CREATE TABLE")]
    for statement in tables:
        conn.execute(statement)
    rows = {}
    for table in COPIED:
        rows[table] = _copy_table(source, conn, table, progress)
    # The indexes are built once the rows are in: faster than row by row.
    for statement in made:
        if statement not in tables:
            conn.execute(statement)
    next_ids = _continue_ids(source, conn)
    for statement in postgres_schema.triggers_and_version():
        conn.execute(statement)
    for table in COPIED:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))  # the planner's
    _check(source, conn, rows, progress)
    return rows, next_ids


def _data_version(source: SQLiteEngine) -> int:
    """A number that another connection's commit to the SQLite index changes."""
    return int(source.conn.execute("PRAGMA data_version").fetchone()[0])


def _refuse_unless_empty(conn: psycopg.Connection[Any], shown: str) -> None:
    """Refuse a database with an index, or with a table of an index's name."""
    names = [postgres_schema.VERSION_TABLE, *COPIED, *NOT_COPIED]
    found = [
        name
        for name in names
        if conn.execute("SELECT to_regclass(%s)", [name]).fetchone() != (None,)
    ]
    if postgres_schema.VERSION_TABLE in found:
        raise Refused(
            f"{shown} holds a dicomfs index already, left as it is: give --to a new, "
            "empty database (createdb), or use this one as it is (index = in the "
            "configuration file)"
        )
    if found:
        raise Refused(
            f"{shown} has tables of the index's names already ({', '.join(found)}), left "
            "as they are: give --to a new, empty database (createdb)"
        )


def _columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """A table's columns in PostgreSQL, in their order (SQLite's, translated)."""
    rows = conn.execute(
        """SELECT column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = %s
           ORDER BY ordinal_position""",
        [table],
    )
    return [row[0] for row in rows]


def _primary_key(source: SQLiteEngine, table: str) -> list[str]:
    """A table's primary key columns in SQLite, in the key's order."""
    info = source.conn.execute(f"PRAGMA table_info({table})").fetchall()
    return [row[1] for row in sorted(info, key=lambda row: row[5]) if row[5]]


def _sqlite_select(columns: list[str], table: str, order: list[str] | None = None) -> str:
    quoted = ", ".join(f'"{column}"' for column in columns)
    ordered = f" ORDER BY {', '.join(order)}" if order else ""
    return f"SELECT {quoted} FROM {table}{ordered}"


def _postgres_select(columns: list[str], table: str, order: list[str]) -> sql.Composed:
    return sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, order)),
    )


def _count(source: SQLiteEngine, table: str) -> int:
    return int(source.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _copy_table(
    source: SQLiteEngine, conn: psycopg.Connection[Any], table: str, progress: Progress | None
) -> int:
    columns = _columns(conn, table)
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    if progress is not None:
        progress.start(_count(source, table), f"Copying {table}")
    copied = 0
    try:
        with conn.cursor() as cursor, cursor.copy(copy) as into:
            for row in source.conn.execute(_sqlite_select(columns, table)):
                into.write_row(row)
                copied += 1
                if progress is not None and copied % STEP == 0:
                    progress.advance(STEP)
    except psycopg.Error as exc:
        raise Failed(f"cannot copy the table {table}: {_one_line(exc)}") from exc
    if progress is not None:
        progress.advance(copied % STEP)
    return copied


def _continue_ids(source: SQLiteEngine, conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Each copied table's identity column gives ids past the highest SQLite gave:
    its sqlite_sequence (AUTOINCREMENT's), or its highest row's."""
    given = dict(source.conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    identities = conn.execute(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND is_identity = 'YES'"""
    ).fetchall()
    next_ids = {}
    for table, column in identities:
        if table not in COPIED:
            continue  # the journal starts afresh
        (highest,) = source.conn.execute(
            f'SELECT coalesce(max("{column}"), 0) FROM {table}'
        ).fetchone()
        highest = max(int(highest), int(given.get(table) or 0))
        if highest > 0:
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, %s), %s)", [table, column, highest]
            )
        next_ids[table] = highest + 1
    return next_ids


def _check(
    source: SQLiteEngine,
    conn: psycopg.Connection[Any],
    copied: dict[str, int],
    progress: Progress | None,
) -> None:
    """Each table's rows in PostgreSQL are the SQLite index's: as many, and the same
    values as Python reads them from both (floats compare exactly: both are IEEE
    doubles), row by row in the order of the primary key."""
    for table in COPIED:
        columns, key = _columns(conn, table), _primary_key(source, table)
        if progress is not None:
            progress.start(copied[table], f"Checking {table}")
        expected = _digest(source.conn.execute(_sqlite_select(columns, table, key)))
        with conn.cursor(name=f"check_{table}") as cursor:
            cursor.itersize = STEP
            cursor.execute(_postgres_select(columns, table, key))
            found = _digest(cursor, progress)
        if found[0] != expected[0] or expected[0] != copied[table]:
            raise Mismatch(
                f"the copy of the table {table} has {found[0]} rows, the SQLite index "
                f"{expected[0]}: nothing was copied"
            )
        if found != expected:
            raise Mismatch(
                f"the copy of the table {table} differs from the SQLite index's rows: "
                "nothing was copied"
            )


def _digest(rows: Iterable[tuple[Any, ...]], progress: Progress | None = None) -> tuple[int, str]:
    """How many rows, and a digest of their values in their order."""
    digest = hashlib.sha256()
    count = 0
    for row in rows:
        digest.update(repr(tuple(row)).encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
        count += 1
        if progress is not None and count % STEP == 0:
            progress.advance(STEP)
    if progress is not None:
        progress.advance(count % STEP)
    return count, digest.hexdigest()


def _one_line(exc: psycopg.Error) -> str:
    """The server's message, without its detail lines."""
    primary = exc.diag.message_primary if exc.diag else None
    return primary or (str(exc).splitlines() or [type(exc).__name__])[0]
