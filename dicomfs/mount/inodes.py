"""Inode numbers for tree nodes, with the kernel's lookup counts and where it has them.

A directory keeps its inode number while the mount knows it: from the first listing
that showed it (its number is the d_ino there) or lookup, until the kernel forgets it
(its lookup count falls to zero) or its rows are gone (changes.py); numbers are never
reused within one mount, so a stale handle can never reach another directory.

An instance file needs no table: its inode is its row id above FILE_INODES, the
same in every view (like a hard link, with st_nlink 1 so that no tool treats
it as one). After a find over a million instances the kernel knows a million
files; the table holds only their directories.

The table also answers what changes.py asks when the index changes: which inodes
show a study or a series, and in which directory, under which name, each one is.
The reading thread, the workers and the watcher of changes share it: every method
takes the table's lock.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from ..store import views
from ..store.views import ROOT, Kind, Node

ROOT_INODE = 1
FILE_INODES = 1 << 48  # directories are numbered below, files above


def file_inode(instance: int) -> int:
    """The inode of the instance file with this row id."""
    return FILE_INODES + instance


class Inodes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_node: dict[Node, int] = {ROOT: ROOT_INODE}
        self._by_inode: dict[int, Node] = {ROOT_INODE: ROOT}
        self._lookups: dict[int, int] = {}
        self._places: dict[int, tuple[int, str]] = {}  # inode -> (parent inode, name)
        # study or series row id -> the inodes of the directories that show it
        self._showing: dict[tuple[Kind, int], set[int]] = defaultdict(set)
        self._next = ROOT_INODE + 1

    def __len__(self) -> int:
        return len(self._by_inode)

    def node_of(self, inode: int) -> Node | None:
        if inode >= FILE_INODES:
            return views.instance_file(inode - FILE_INODES)
        return self._by_inode.get(inode)

    def looked_up(self, node: Node, parent: int, name: str) -> int:
        """A lookup reply names node as `name` in `parent`: count one kernel reference."""
        with self._lock:
            inode = self._inode_of(node, parent, name)
            self._lookups[inode] = self._lookups.get(inode, 0) + 1
        return inode

    def listed(self, entries: list[tuple[Node, str]], parent: int) -> list[int]:
        """The inodes of directories a listing of parent shows, by name: no reference."""
        with self._lock:
            return [self._inode_of(node, parent, name) for node, name in entries]

    def _inode_of(self, node: Node, parent: int, name: str) -> int:
        inode = self._by_node.get(node)
        if inode is None:
            inode = self._next
            self._next += 1
            self._by_node[node] = inode
            self._by_inode[inode] = node
            if node.kind in (Kind.STUDY, Kind.SERIES):
                self._showing[node.kind, node.row].add(inode)
        self._places[inode] = (parent, name)
        return inode

    def forget(self, inode: int, count: int) -> None:
        """The kernel dropped `count` references; the inode goes when none remain."""
        if inode >= FILE_INODES:
            return  # never in the table
        with self._lock:
            remaining = self._lookups.get(inode, 0) - count
            if remaining > 0:
                self._lookups[inode] = remaining
            else:
                self._drop(inode)

    def drop_if_unreferenced(self, inode: int) -> None:
        """Forget a directory whose rows are gone, unless the kernel still holds it."""
        with self._lock:
            if inode not in self._lookups:
                self._drop(inode)

    def _drop(self, inode: int) -> None:
        self._lookups.pop(inode, None)
        self._places.pop(inode, None)
        if inode == ROOT_INODE:
            return
        node = self._by_inode.pop(inode, None)
        if node is None:
            return
        self._by_node.pop(node, None)
        if node.kind in (Kind.STUDY, Kind.SERIES):
            showing = self._showing[node.kind, node.row]
            showing.discard(inode)
            if not showing:
                del self._showing[node.kind, node.row]

    # --- what changes.py asks -----------------------------------------------------------

    def known(self, node: Node) -> int | None:
        with self._lock:
            return self._by_node.get(node)

    def showing(self, kind: Kind, row: int) -> list[int]:
        """The inodes of the study or series directories (kind) of this row id."""
        with self._lock:
            return list(self._showing.get((kind, row), ()))

    def place_of(self, inode: int) -> tuple[int, str] | None:
        with self._lock:
            return self._places.get(inode)

    def ancestors(self, inode: int) -> list[int]:
        """The directories above inode, up to the root, as far as the table knows."""
        found = []
        with self._lock:
            place = self._places.get(inode)
            while place is not None and place[0] not in found:
                found.append(place[0])
                place = self._places.get(place[0])
        return found

    def placed(self) -> list[tuple[int, int, str]]:
        """(inode, parent, name) of every directory the table places."""
        with self._lock:
            return [(inode, parent, name) for inode, (parent, name) in self._places.items()]
