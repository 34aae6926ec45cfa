"""What differs between the index's two engines, SQLite and PostgreSQL, in its SQL.

Every statement is written once, in the SQL both engines speak: `?` and `?N`
placeholders, ON CONFLICT, RETURNING, TRUE. The few things they say differently
are the Dialect's fragments, which the statements that need them are built with.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

# The store's own directory: the spool, the locks, the marks, and SQLite's index.
INDEX_DIR = ".dicomfs"


class Cursor(Protocol):
    """The rows of a statement, as sqlite3's and psycopg's cursors give them."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """An index connection of either engine: sqlite3's, or postgres_engine's."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Cursor: ...


class SweeperTurn(Protocol):
    """Whether this serve is the one of those sharing the index that expires and
    reconciles (postgres_engine.SweeperTurn); a store's only serve always is."""

    def held(self) -> bool: ...

    def close(self) -> None: ...


class OnlyServe:
    """The sweeper's turn of a store's only serve (the index in its SQLite file)."""

    def held(self) -> bool:
        return True

    def close(self) -> None:
        pass


class IndexUnusable(Exception):
    """The index cannot be used (newer schema, corrupt file, a server out of reach)."""


@dataclasses.dataclass(frozen=True)
class Dialect:
    name: str

    def greatest(self, a: str, b: str) -> str:
        """The larger of two values (neither NULL)."""
        return f"max({a}, {b})" if self.name == "sqlite" else f"greatest({a}, {b})"

    def distinct_list(self, expr: str) -> str:
        """An aggregate: the distinct values of expr, joined by commas."""
        if self.name == "sqlite":
            return f"group_concat(DISTINCT {expr})"
        return f"string_agg(DISTINCT {expr}, ',')"

    def matching(self, column: str) -> str:
        """A condition: column matches the pattern `pattern` makes, case and all."""
        return f"{column} GLOB ?" if self.name == "sqlite" else f"{column} LIKE ?"

    def pattern(self, pieces: Iterable[str]) -> str:
        """DICOM's wildcards (the pieces "*" and "?") and literal text (the other
        pieces) as a pattern for `matching`: GLOB's, or LIKE's with its default
        escape, the backslash."""
        return "".join(
            self._wildcard(piece) if piece in ("*", "?") else self._literal(piece)
            for piece in pieces
        )

    def _wildcard(self, piece: str) -> str:
        if self.name == "sqlite":
            return piece
        return "%" if piece == "*" else "_"

    def _literal(self, text: str) -> str:
        if self.name == "sqlite":
            return text.replace("[", "[[]")  # [ opens a set of GLOB's
        return re.sub(r"([\\%_])", r"\\\1", text)

    def nocase(self, expr: str) -> str:
        """expr, compared without regard to ASCII case (and through the index made
        for that)."""
        return f"{expr} COLLATE NOCASE" if self.name == "sqlite" else f"lower({expr})"

    @property
    def ordered_join(self) -> str:
        """A join whose tables are read in the order written: SQLite's planner has no
        statistics and would guess wrong; PostgreSQL's has them."""
        return "CROSS JOIN" if self.name == "sqlite" else "JOIN"

    def unindexed(self, column: str) -> str:
        """The column, with SQLite told not to use its index (a scan of a share of the
        table is faster than the index leading to it row by row)."""
        return f"+{column}" if self.name == "sqlite" else column

    def local_day(self, epoch: str) -> str:
        """The day, YYYY-MM-DD in the local time zone, of seconds since the epoch."""
        if self.name == "sqlite":
            return f"date({epoch}, 'unixepoch', 'localtime')"
        return f"to_char(to_timestamp({epoch}), 'YYYY-MM-DD')"


SQLITE = Dialect("sqlite")
POSTGRESQL = Dialect("postgresql")


def dialect_of(conn: Connection) -> Dialect:
    """The dialect of an index connection: SQLite's, or the one it says it speaks."""
    if isinstance(conn, sqlite3.Connection):
        return SQLITE
    return conn.dialect  # type: ignore[attr-defined]
