"""Inode numbers for tree nodes, with the kernel's lookup counts.

A directory keeps its inode number while the kernel holds a reference to it
(lookup count above zero); numbers are never reused within one mount, so a
stale handle can never reach another directory.

An instance file needs no table: its inode is its row id above FILE_INODES, the
same in every view (like a hard link, with st_nlink 1 so that no tool treats
it as one). After a find over a million instances the kernel knows a million
files; the table holds only their few thousand directories.
"""

from __future__ import annotations

from ..store import views
from ..store.views import ROOT, Node

ROOT_INODE = 1
FILE_INODES = 1 << 48  # directories are numbered below, files above


def file_inode(instance: int) -> int:
    """The inode of the instance file with this row id."""
    return FILE_INODES + instance


class Inodes:
    def __init__(self) -> None:
        self._by_node: dict[Node, int] = {ROOT: ROOT_INODE}
        self._by_inode: dict[int, Node] = {ROOT_INODE: ROOT}
        self._lookups: dict[int, int] = {}
        self._places: dict[int, tuple[int, str]] = {}  # inode -> (parent inode, name)
        self._next = ROOT_INODE + 1

    def __len__(self) -> int:
        return len(self._by_inode)

    def inode_of(self, node: Node) -> int:
        """The node's inode number, allocating one on first sight."""
        inode = self._by_node.get(node)
        if inode is None:
            inode = self._next
            self._next += 1
            self._by_node[node] = inode
            self._by_inode[inode] = node
        return inode

    def node_of(self, inode: int) -> Node | None:
        if inode >= FILE_INODES:
            return views.instance_file(inode - FILE_INODES)
        return self._by_inode.get(inode)

    def looked_up(self, node: Node) -> int:
        """Count one kernel reference (a lookup reply); return the inode."""
        inode = self.inode_of(node)
        self.count_lookup(inode)
        return inode

    def count_lookup(self, inode: int) -> None:
        self._lookups[inode] = self._lookups.get(inode, 0) + 1

    def place(self, inode: int, parent: int, name: str) -> None:
        """Note where the kernel has the inode: in directory `parent`, as `name`."""
        self._places[inode] = (parent, name)

    def place_of(self, inode: int) -> tuple[int, str] | None:
        return self._places.get(inode)

    def forget(self, inode: int, count: int) -> None:
        """The kernel dropped `count` references; the inode goes when none remain."""
        if inode >= FILE_INODES:
            return  # never in the table
        remaining = self._lookups.get(inode, 0) - count
        if remaining > 0:
            self._lookups[inode] = remaining
            return
        self._lookups.pop(inode, None)
        self._places.pop(inode, None)
        if inode != ROOT_INODE:
            node = self._by_inode.pop(inode, None)
            if node is not None:
                self._by_node.pop(node, None)
