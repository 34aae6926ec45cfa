"""What a view is declared with: levels, typed nodes, and the listings views share.

A view is a path of levels, from its top directory (by-patient/) down to the
instance files. Each level says how one of its directories lists its entries,
with their attributes, in one indexed query, narrowed to the entries that can
carry a wanted name when a lookup asks for one; and how one directory's times
are found. A lookup is the listing narrowed, so what `ls` shows is exactly
what `cd` finds.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

from ...dicom import names
from ..index.engine import Connection

Key = tuple[object, ...]  # which directory or file of its level: row ids, names


class Kind(enum.Enum):
    ROOT = "root"
    PAGE = "page"  # index.html
    TOP = "top"  # a view's own directory: by-patient/
    GROUP = "group"  # a patient, a modality, a day...
    STUDY = "study"
    SERIES = "series"
    FILE = "file"


class Attributes(NamedTuple):  # a tuple: readdir makes one per entry
    """What stat shows. A directory's times summarise what it holds."""

    is_dir: bool
    size: int
    received: float | None  # a file's receipt; a directory's newest receipt inside
    accessed: float | None  # the last read, or None if never read


Listed = tuple[str, Key, Attributes]  # an entry's name, its key in the level below, its stat
Lister = Callable[[Connection, Key, str | None], list[Listed]]
AllLister = Callable[[Connection], dict[Key, list[Listed]]]  # by directory key
FileNamer = Callable[[Connection, Key], list[tuple[str, int]]]  # (name, row id)
Times = Callable[[Key], tuple[str, tuple[object, ...]]]  # SQL of (newest receipt, access)


@dataclasses.dataclass(frozen=True, eq=False)
class Level:
    """One level of a view. Its directories list entries of the next level."""

    kind: Kind
    lists: Lister | None = None  # None for files
    times: Times | None = None  # None where the node's attributes come otherwise
    # How study_paths names an entry of this level without listing its parent:
    name_of: Callable[[Key], str] | None = None  # the key is the name (a date, a modality)
    base_of: Callable[[Connection, Key], str] | None = None  # else: narrow by this
    # A series' files by name alone, sorted: what a find reads of them, a query its
    # index answers without the rows. None: the listing's names.
    file_names: FileNamer | None = None
    # Every directory of this level listed at once, as `lists` lists each: for a level
    # of thousands of directories (a patient's studies) that index.html names whole.
    lists_all: AllLister | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class View:
    """A top directory of the mount and the levels below it (levels[0] is the top)."""

    name: str
    levels: tuple[Level, ...]
    # The keys of a study's directory in this view, one key per level below the top
    # (several chains where a study shows in several places: by-modality).
    study_chains: Callable[[Connection, int], list[list[Key]]]
    places: tuple[Place, ...] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        places = tuple(Place(self, depth, level) for depth, level in enumerate(self.levels))
        object.__setattr__(self, "places", places)

    @property
    def top(self) -> Node:
        return Node(self.places[0], ())


@dataclasses.dataclass(frozen=True, eq=False)
class Place:
    """One level of one view: what a node's first item names."""

    view: View
    depth: int
    level: Level


class Node(tuple):
    """One directory or file of the mount: (place, *key), a flat tuple, for the mount
    holds one per inode the kernel knows (a million after a find over a large store)."""

    __slots__ = ()

    def __new__(cls, place: Place, key: Key) -> Node:
        return tuple.__new__(cls, (place, *key))

    @property
    def place(self) -> Place:
        return self[0]

    @property
    def view(self) -> View:
        return self.place.view

    @property
    def level(self) -> Level:
        return self.place.level

    @property
    def kind(self) -> Kind:
        return self.place.level.kind

    @property
    def key(self) -> Key:
        return tuple(self[1:])

    @property
    def row(self) -> int:
        """The row id of a study, series or file node."""
        return int(self[-1])

    def child(self, key: Key) -> Node:
        place = self.place
        return Node(place.view.places[place.depth + 1], key)

    def entries(self, listed: list[Listed]) -> list[Entry]:
        """The directory's entries, from its listing: Entry(name, child node, stat).
        Built as plain tuples, for a listing may hold thousands (a view's patients)
        and the named constructors cost more than the rest of the listing's Python."""
        place = self.place
        below = place.view.places[place.depth + 1]
        new = tuple.__new__
        return [new(Entry, (name, new(Node, (below, *key)), found)) for name, key, found in listed]

    def __repr__(self) -> str:
        return f"Node({self.view.name}/{self.place.depth}, {self.key})"


class Entry(NamedTuple):
    name: str
    node: Node
    attributes: Attributes


def directory(received: float | None, accessed: float | None) -> Attributes:
    return tuple.__new__(Attributes, (True, 0, received, accessed))  # see Node.entries


# --- narrowing and naming ------------------------------------------------------------


def base(wanted: str | None) -> str | None:
    """The wanted name without its disambiguating suffix, if any."""
    return None if wanted is None else names.split_suffix(wanted)[0]


def rows(
    conn: Connection,
    sql: str,
    args: Key,
    column: str,
    value: str | None,
    tail: str = "",
) -> list[tuple[Any, ...]]:
    """Run sql (which ends in a WHERE clause) then tail (GROUP BY...), narrowed to
    column = value when a value is given."""
    if value is not None:
        sql += f" AND {column} = ?"
        args = (*args, value)
    return conn.execute(f"{sql} {tail}", args).fetchall()


def named(rows: Sequence[tuple[str, str, Key, Attributes]]) -> list[Listed]:
    """(base, key, child key, attributes) -> entries named by names.unique_names,
    among these rows: every entry of the directory that shares a base."""
    unique = names.unique_names([(base, key) for base, key, _, _ in rows])
    return [(name, child, found) for name, (_, _, child, found) in zip(unique, rows, strict=True)]


def key_of(*values: object) -> str:
    """What tells apart entries that share a base name (see names.unique_names): the
    values that make the entry one, a patient's ID and name, say, NUL between them."""
    return "\x00".join(map(str, values))


def named_among_all(
    conn: Connection,
    rows: Sequence[tuple[str, str, int, Key, Attributes]],
    peers_sql: str,
) -> list[Listed]:
    """Like named, for a level whose names are unique across the whole store, not
    just this directory (a patient under by-date/ is named as under by-patient/).
    Each row carries how many entries of the store share its base; the keys of
    those that do are found by peers_sql, for just those bases."""
    shared: dict[str, dict[str, str]] = {}
    for base_name, _, sharing, _, _ in rows:
        if sharing > 1 and base_name not in shared:
            keys = [key_of(*row) for row in conn.execute(peers_sql, (base_name,))]
            unique = names.unique_names([(base_name, key) for key in keys])
            shared[base_name] = dict(zip(keys, unique, strict=True))
    return [
        (shared[base_name][key] if base_name in shared else base_name, child, found)
        for base_name, key, _, child, found in rows
    ]


def present(entries: list[Listed]) -> list[Listed]:
    """The entries whose rows still hold something (named among all, shown if there)."""
    return [entry for entry in entries if entry[2].received is not None]


# --- what several views share: a study's series, a series' files, their times --------


def study_series(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    found = rows(
        conn,
        """SELECT id, dir_name, series_uid, last_received, last_access FROM series
           WHERE study = ?""",
        key[-1:],
        "dir_name",
        base(wanted),
    )
    return present(
        named([(str(n), str(uid), (sid,), directory(r, a)) for sid, n, uid, r, a in found])
    )


def series_files(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    found = rows(
        conn,
        """SELECT id, file_name, sop_uid, size, received_at, last_access FROM instances
           WHERE series = ?""",
        key[-1:],
        "file_name",
        base(wanted),
    )
    new = tuple.__new__  # see Node.entries
    return named(
        [
            (str(name), str(uid), (iid,), new(Attributes, (False, size, r, a)))
            for iid, name, uid, size, r, a in found
        ]
    )


def series_file_names(conn: Connection, key: Key) -> list[tuple[str, int]]:
    """series_files' names and row ids, sorted, from the index on (series, file_name)
    alone, unless two files share a name (then series_files says how each is named)."""
    found = conn.execute(
        "SELECT file_name, id FROM instances WHERE series = ? ORDER BY file_name", key[-1:]
    ).fetchall()
    if any(found[i][0] == found[i - 1][0] for i in range(1, len(found))):
        listed = sorted(series_files(conn, key, None))
        return [(name, cast(int, child[-1])) for name, child, _ in listed]
    return found


def study_times(key: Key) -> tuple[str, Key]:
    return "SELECT last_received, last_access FROM studies WHERE id = ?", key[-1:]


def series_times(key: Key) -> tuple[str, Key]:
    return "SELECT last_received, last_access FROM series WHERE id = ?", key[-1:]


def study_dir_name(conn: Connection, key: Key) -> str:
    (dir_name,) = conn.execute("SELECT dir_name FROM studies WHERE id = ?", key[-1:]).fetchone()
    return str(dir_name)


# Every store-wide summary: what a view's top directory shows.
ALL_TIMES = "SELECT max(last_received), max(last_access) FROM studies"

# Every view's series but by-uid's, whose files are named by their UIDs.
SERIES = Level(Kind.SERIES, series_files, series_times, file_names=series_file_names)
FILES = Level(Kind.FILE)
