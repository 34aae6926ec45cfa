"""Inode numbers as the kernel sees them: stable while referenced, never reused; the root stays."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dicomfs.mount.inodes import FILE_INODES, ROOT_INODE, Inodes, file_inode
from dicomfs.store import views

# Nodes are opaque to the table: any hashable value stands for one here.
STUDY = ("by-uid-study", 7)
SERIES = ("by-uid-series", 8)


def test_the_root_is_inode_1_from_the_start_and_stays() -> None:
    inodes = Inodes()
    root = inodes.node_of(ROOT_INODE)
    assert ROOT_INODE == 1
    assert root is not None
    assert inodes.inode_of(root) == ROOT_INODE
    inodes.count_lookup(ROOT_INODE)
    inodes.forget(ROOT_INODE, 5)  # more than were counted: the kernel never frees the root
    assert inodes.node_of(ROOT_INODE) == root
    assert inodes.inode_of(root) == ROOT_INODE


def test_a_node_keeps_its_number_and_two_nodes_never_share_one() -> None:
    inodes = Inodes()
    study = inodes.inode_of(STUDY)
    series = inodes.inode_of(SERIES)
    assert len({ROOT_INODE, study, series}) == 3
    assert inodes.inode_of(STUDY) == study
    assert inodes.looked_up(STUDY) == study
    assert (inodes.node_of(study), inodes.node_of(series)) == (STUDY, SERIES)
    assert inodes.node_of(9999) is None


def test_an_inode_lives_until_the_kernel_forgets_every_lookup() -> None:
    inodes = Inodes()
    inode = inodes.looked_up(STUDY)
    inodes.looked_up(STUDY)
    inodes.count_lookup(inode)  # a readdirplus entry counts as a lookup too
    inodes.place(inode, ROOT_INODE, "1.2.3")
    inodes.forget(inode, 2)
    assert inodes.node_of(inode) == STUDY  # one reference left
    assert inodes.place_of(inode) == (ROOT_INODE, "1.2.3")
    inodes.forget(inode, 1)
    assert inodes.node_of(inode) is None
    assert inodes.place_of(inode) is None
    assert len(inodes) == 1  # the root alone


def test_a_forgotten_node_seen_again_gets_a_new_number_never_an_old_one() -> None:
    inodes = Inodes()
    first = inodes.looked_up(STUDY)
    inodes.forget(first, 1)
    again = inodes.looked_up(STUDY)
    assert again != first  # a stale handle of the old number must not reach it
    other = inodes.looked_up(SERIES)
    assert other not in (first, again)


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 3)), max_size=60))
def test_numbers_are_never_reused_whatever_the_kernel_looks_up_and_forgets(
    steps: list[tuple[int, int]],
) -> None:
    """Each step looks node n up, or (n odd) forgets some of its references."""
    inodes = Inodes()
    given_out: dict[int, object] = {ROOT_INODE: inodes.node_of(ROOT_INODE)}
    for number, count in steps:
        node = ("node", number % 3)
        if number % 2:
            inode = inodes.inode_of(node)
            inodes.forget(inode, count)
        else:
            inode = inodes.looked_up(node)
        # An inode number, once given out, means that node or nothing.
        assert given_out.setdefault(inode, node) == node
        for known, meant in given_out.items():
            assert inodes.node_of(known) in (None, meant)


def test_an_instance_file_is_known_by_its_row_id_alone_in_every_view() -> None:
    inodes = Inodes()
    inode = file_inode(7)
    assert inode >= FILE_INODES
    assert file_inode(8) != inode
    node = inodes.node_of(inode)
    assert node == views.instance_file(7)
    assert node is not None
    assert node.row == 7
    inodes.forget(inode, 3)  # the kernel forgets it: nothing was kept, nothing goes
    assert inodes.node_of(inode) == views.instance_file(7)
    assert len(inodes) == 1  # the table holds the root alone
