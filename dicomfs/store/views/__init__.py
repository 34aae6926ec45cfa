"""The views of the mount, as pure queries over the index.

Each view is declared once, in its own module (by_patient.py...): its levels,
how each lists its entries and finds their times. From that one declaration
come the listing (readdir), the lookup of one name, a node's attributes
(getattr), and a study's paths (`dicomfs find`, index.html). This package
knows nothing of FUSE, inodes or errno.

To add a view: a module declaring its View, one line in VIEWS, one line in
tests/test_views.py.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple, cast

from ..index.engine import Connection
from . import by_date, by_modality, by_patient, by_received, by_uid
from .levels import (
    ALL_TIMES,
    FILES,
    Attributes,
    Entry,
    Key,
    Kind,
    Level,
    Listed,
    Node,
    View,
    directory,
)

VIEWS: tuple[View, ...] = (
    by_modality.VIEW,
    by_patient.VIEW,
    by_date.VIEW,
    by_received.VIEW,
    by_uid.VIEW,
)
VIEW_NAMES = tuple(view.name for view in VIEWS)

# index.html shows each study's directory in by-patient/; a page of the same studies for
# each other view sits beside it, hidden (a dot file), for the page's view switch.
PAGE_NAME = "index.html"
PAGE_VIEW = "by-patient"


def page_name(view: str) -> str:
    return PAGE_NAME if view == PAGE_VIEW else f".index.{view}.html"


_ROOT_VIEW = View("", (Level(Kind.ROOT),), lambda conn, study: [])
_PAGE_VIEWS = {
    name: View(page_name(name), (Level(Kind.PAGE),), lambda conn, study: []) for name in VIEW_NAMES
}
ROOT = _ROOT_VIEW.top
PAGES = {name: view.top for name, view in _PAGE_VIEWS.items()}  # view name -> its page


def page_view(page: Node) -> str:
    """The view whose directories a page shows."""
    return next(name for name, node in PAGES.items() if node == page)


# What the pages show on demand, found by name but never listed: a study's series (in a
# view), a series' thumbnail. Named by row id: a page names them as it is generated.
_SERIES_PAGES = {
    name: View(f".series.{name}", (Level(Kind.PAGE),), lambda conn, study: [])
    for name in VIEW_NAMES
}
_THUMBNAILS = View(".thumb", (Level(Kind.PAGE),), lambda conn, study: [])
_ON_DEMAND = re.compile(r"\.series\.([a-z-]+)\.([1-9][0-9]*)\.html|\.thumb\.([1-9][0-9]*)\.png")


def series_page_name(view: str, study: int) -> str:
    return f".series.{view}.{study}.html"


def thumbnail_name(series: int) -> str:
    return f".thumb.{series}.png"


class Generated(NamedTuple):
    """What a page node shows: "studies" (index.html and its kin: the row is 0),
    "series" (of the study `row`) or "thumbnail" (of the series `row`: no view)."""

    what: str
    view: str
    row: int


def generated(node: Node) -> Generated:
    view = node.view
    if view is _THUMBNAILS:
        return Generated("thumbnail", "", node.row)
    for name, series_page in _SERIES_PAGES.items():
        if view is series_page:
            return Generated("series", name, node.row)
    return Generated("studies", page_view(node), 0)


def _on_demand(conn: Connection, name: str) -> Entry | None:
    found = _ON_DEMAND.fullmatch(name)
    if found is None:
        return None
    view, study, series = found.groups()
    if study is not None:
        if view not in _SERIES_PAGES:
            return None
        table, row, place = "studies", int(study), _SERIES_PAGES[view].places[0]
    else:
        table, row, place = "series", int(series), _THUMBNAILS.places[0]
    if conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row,)).fetchone() is None:
        return None
    return Entry(name, Node(place, (row,)), _PAGE_ATTRIBUTES)


# An instance file is the same in every view: the mount knows it by its row id alone.
_INSTANCE_VIEW = View("", (FILES,), lambda conn, study: [])
_PAGE_ATTRIBUTES = Attributes(False, 0, None, None)  # its size is the mount's, which makes it
_TOPS = {view.name: view.top for view in VIEWS}


class InstanceFile(NamedTuple):  # a tuple: every open of a file makes one
    """What opening an instance file needs."""

    instance: int
    path: str  # relative to the store
    size: int
    mtime_ns: int
    received_at: float
    last_access: float | None

    @property
    def attributes(self) -> Attributes:
        return Attributes(False, self.size, self.received_at, self.last_access)


def top(name: str) -> Node:
    """A view's own directory: top('by-uid')."""
    return _TOPS[name]


def instance_file(instance: int) -> Node:
    """The node of the instance file with this row id, whichever view lists it."""
    return Node(_INSTANCE_VIEW.places[0], (instance,))


def lists_files(node: Node) -> bool:
    """Whether the directory node's entries are instance files (it is a series)."""
    place = node.place
    below = place.depth + 1
    return below < len(place.view.levels) and place.view.levels[below].kind is Kind.FILE


def is_file(node: Node) -> bool:
    return node.kind in (Kind.FILE, Kind.PAGE)


def list_entries(conn: Connection, node: Node) -> list[Entry]:
    """The entries of a directory node with their attributes, sorted by name: what
    readdir shows. Empty if the directory no longer exists."""
    entries = _entries(conn, node, None)
    entries.sort(key=lambda entry: entry.name)
    return entries


def list_children(conn: Connection, node: Node) -> list[Listed]:
    """list_entries without a node for each entry: (name, key in the level below,
    attributes), sorted by name, for a find lists thousands; the node of the one
    wanted is node.child(key). Not for the root, whose entries are of several views."""
    lists = node.level.lists
    children = [] if lists is None else lists(conn, node.key, None)
    children.sort(key=_by_name)
    return children


def file_names(conn: Connection, node: Node) -> list[tuple[str, int]]:
    """The names and row ids of a series directory's files, sorted by name: what
    readdir shows of them."""
    names_of = node.level.file_names
    if names_of is not None:
        return names_of(conn, node.key)
    return [(name, cast(int, key[-1])) for name, key, _ in list_children(conn, node)]


def _by_name(listed: Listed) -> str:
    return listed[0]


def lookup(conn: Connection, node: Node, name: str) -> Entry | None:
    """The entry called name in a directory node, or None: the listing narrowed to
    the entries that can carry that name, through an indexed column."""
    if node == ROOT and name.startswith("."):
        on_demand = _on_demand(conn, name)
        if on_demand is not None:
            return on_demand
    for entry in _entries(conn, node, name):
        if entry.name == name:
            return entry
    return None


def _entries(conn: Connection, node: Node, wanted: str | None) -> list[Entry]:
    if node == ROOT:
        return _root_entries(conn)
    lists = node.level.lists
    if lists is None:
        return []
    return node.entries(lists(conn, node.key, wanted))


def _root_entries(conn: Connection) -> list[Entry]:
    received, accessed = conn.execute(ALL_TIMES).fetchone()
    views = directory(received, accessed)
    return [
        *(Entry(view.name, view.top, views) for view in VIEWS),
        *(Entry(page_name(name), page, _PAGE_ATTRIBUTES) for name, page in PAGES.items()),
    ]


def attributes(conn: Connection, node: Node) -> Attributes | None:
    """The node's attributes, or None if it no longer exists.

    index.html's size is not known here: it is the mount's, which generates it."""
    kind = node.kind
    if kind is Kind.PAGE:
        return _PAGE_ATTRIBUTES
    if kind is Kind.FILE:
        info = file_info(conn, node)
        return None if info is None else info.attributes
    if kind is Kind.ROOT:
        return directory(*conn.execute(ALL_TIMES).fetchone())
    times = node.level.times
    assert times is not None, node
    row = conn.execute(*times(node.key)).fetchone()
    if kind is Kind.TOP:
        return directory(*row)  # a view stays, empty, on an empty store
    if row is None or row[0] is None:
        return None
    return directory(*row)


def file_info(conn: Connection, node: Node) -> InstanceFile | None:
    row = conn.execute(
        """SELECT id, path, size, mtime_ns, received_at, last_access
           FROM instances WHERE id = ?""",
        (node.row,),
    ).fetchone()
    return InstanceFile(*row) if row else None


def all_study_paths(
    conn: Connection, wanted: Sequence[str] = VIEW_NAMES
) -> dict[int, dict[str, list[str]]]:
    """Every study's directories in every view (or the views wanted), by study row id,
    as study_paths gives one study's: each view walked down once, each directory above
    the studies listed once (a level of thousands, at once where it can:
    Level.lists_all), where study_paths asks each study's parents anew (index.html:
    thousands of studies)."""
    paths: dict[int, dict[str, list[str]]] = {}
    for view in VIEWS:
        if view.name not in wanted:
            continue
        frontier = [(view.top, view.name)]
        for place in view.places[1:]:  # the levels below the top, down to the studies
            if place.level.kind is Kind.STUDY:
                for _, path, listed in _listings(conn, frontier):
                    for name, key, _ in listed:
                        study = int(key[-1])  # type: ignore[call-overload]
                        found = paths.get(study)
                        if found is None:
                            found = paths[study] = {each: [] for each in wanted}
                        found[view.name].append(f"{path}/{name}")
                break
            frontier = [
                (tuple.__new__(Node, (place, *key)), f"{path}/{name}")  # as Node.child makes
                for _, path, listed in _listings(conn, frontier)
                for name, key, _ in listed
            ]
    for found in paths.values():
        for listed_paths in found.values():
            listed_paths.sort()
    return paths


def _listings(
    conn: Connection, frontier: list[tuple[Node, str]]
) -> Iterator[tuple[Node, str, list[Listed]]]:
    """Each directory of one level with its listing: one query for them all where the
    level can, else one each."""
    lists_all = frontier[0][0].level.lists_all
    everything = lists_all(conn) if lists_all is not None and len(frontier) > 1 else None
    for node, path in frontier:
        if everything is not None:
            yield node, path, everything.get(node.key, [])
            continue
        lists = node.level.lists
        yield node, path, [] if lists is None else lists(conn, node.key, None)


def series_paths(conn: Connection, study: int, view: str) -> dict[int, list[str]]:
    """The directories of a study's series in a view, by series row id, each as the
    study's directory there (study_paths) and the name its listing gives the series."""
    found: dict[int, list[str]] = {}
    for path in study_paths(conn, study)[view]:
        node: Node | None = top(view)
        for part in path.split("/")[1:]:
            entry = lookup(conn, node, part) if node is not None else None
            node = entry.node if entry is not None else None
        for entry in list_entries(conn, node) if node is not None else []:
            found.setdefault(entry.node.row, []).append(f"{path}/{entry.name}")
    return found


def study_paths(conn: Connection, study: int) -> dict[str, list[str]]:
    """The study's directory in each view, relative to the mount point: the names
    the views' own listings give it."""
    return Namer(conn).study_paths(study)


class Namer:
    """Names of nodes in their parents' listings, for one study or many (find, the
    page). A parent's listing is narrowed to the name wanted, through an index; one
    asked about again and again (a day of a thousand studies) is listed whole, once."""

    NARROWED_AT_MOST = 4  # lookups in one parent before it is listed whole

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._asked: collections.Counter[Node] = collections.Counter()
        self._listed: dict[Node, dict[Node, str]] = {}

    def study_paths(self, study: int) -> dict[str, list[str]]:
        return {
            view.name: [self._path(view, chain) for chain in view.study_chains(self.conn, study)]
            for view in VIEWS
        }

    def _path(self, view: View, chain: list[Key]) -> str:
        parts = [view.name]
        parent = view.top
        for key in chain:
            node = parent.child(key)
            parts.append(self._name_in(parent, node))
            parent = node
        return "/".join(parts)

    def _name_in(self, parent: Node, node: Node) -> str:
        level = node.level
        if level.name_of is not None:
            return level.name_of(node.key)
        listed = self._listed.get(parent)
        if listed is None:
            self._asked[parent] += 1
            if self._asked[parent] <= self.NARROWED_AT_MOST:
                return self._narrowed(parent, node)
            listed = {entry.node: entry.name for entry in _entries(self.conn, parent, None)}
            self._listed[parent] = listed
        name = listed.get(node)
        if name is None:
            raise LookupError(f"{node} is not listed in {parent}")
        return name

    def _narrowed(self, parent: Node, node: Node) -> str:
        base_of = node.level.base_of
        wanted = None if base_of is None else base_of(self.conn, node.key)
        for entry in _entries(self.conn, parent, wanted):
            if entry.node == node:
                return entry.name
        raise LookupError(f"{node} is not listed in {parent}")
