"""Inode numbers as the kernel sees them: stable while known, never reused; the root stays;
and what the watcher of changes asks: who shows a study or series, and where."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dicomfs.mount.inodes import FILE_INODES, ROOT_INODE, Inodes, file_inode
from dicomfs.store import views
from dicomfs.store.views import Kind

TOP = views.top("by-uid")
STUDY = TOP.child((7,))  # study row 7
SERIES = STUDY.child((8,))  # its series, row 8


def test_the_root_is_inode_1_from_the_start_and_stays() -> None:
    inodes = Inodes()
    root = inodes.node_of(ROOT_INODE)
    assert ROOT_INODE == 1
    assert root == views.ROOT
    assert inodes.known(views.ROOT) == ROOT_INODE
    inodes.forget(ROOT_INODE, 5)  # more than were counted: the kernel never frees the root
    assert inodes.node_of(ROOT_INODE) == root
    assert inodes.known(root) == ROOT_INODE


def test_a_node_keeps_its_number_and_two_nodes_never_share_one() -> None:
    inodes = Inodes()
    top = inodes.looked_up(TOP, ROOT_INODE, "by-uid")
    study, series = inodes.listed([(STUDY, "1.2.3"), (SERIES, "1.2.3.4")], top)
    assert len({ROOT_INODE, top, study, series}) == 4
    assert inodes.looked_up(STUDY, top, "1.2.3") == study
    assert (inodes.node_of(study), inodes.node_of(series)) == (STUDY, SERIES)
    assert inodes.node_of(9999) is None


def test_an_inode_lives_until_the_kernel_forgets_every_lookup() -> None:
    inodes = Inodes()
    inode = inodes.looked_up(STUDY, ROOT_INODE, "1.2.3")
    inodes.looked_up(STUDY, ROOT_INODE, "1.2.3")
    inodes.forget(inode, 1)
    assert inodes.node_of(inode) == STUDY  # one reference left
    assert inodes.place_of(inode) == (ROOT_INODE, "1.2.3")
    inodes.forget(inode, 1)
    assert inodes.node_of(inode) is None
    assert inodes.place_of(inode) is None
    assert inodes.showing(Kind.STUDY, 7) == []
    assert len(inodes) == 1  # the root alone


def test_a_listed_directory_is_numbered_without_a_reference_and_dropped_once_gone() -> None:
    inodes = Inodes()
    (listed,) = inodes.listed([(STUDY, "1.2.3")], ROOT_INODE)
    (held,) = inodes.listed([(SERIES, "1.2.3.4")], listed)
    inodes.looked_up(SERIES, listed, "1.2.3.4")
    inodes.drop_if_unreferenced(held)  # the kernel holds it: it stays
    assert inodes.node_of(held) == SERIES
    inodes.drop_if_unreferenced(listed)  # only listed: it goes
    assert inodes.node_of(listed) is None
    assert inodes.known(STUDY) is None


def test_a_forgotten_node_seen_again_gets_a_new_number_never_an_old_one() -> None:
    inodes = Inodes()
    first = inodes.looked_up(STUDY, ROOT_INODE, "a")
    inodes.forget(first, 1)
    again = inodes.looked_up(STUDY, ROOT_INODE, "a")
    assert again != first  # a stale handle of the old number must not reach it
    other = inodes.looked_up(SERIES, again, "b")
    assert other not in (first, again)


def test_the_table_says_which_directories_show_a_study_or_series_and_where() -> None:
    inodes = Inodes()
    by_uid = inodes.looked_up(TOP, ROOT_INODE, "by-uid")
    study = inodes.looked_up(STUDY, by_uid, "1.2.3")
    series = inodes.looked_up(SERIES, study, "1.2.3.4")
    by_modality = views.top("by-modality")
    shown_there = by_modality.child(("MR0000.MOD",)).child(("MR0000.MOD", "S.STA"))
    other_place = inodes.looked_up(shown_there, ROOT_INODE, "S.STA")
    study_there = inodes.looked_up(
        shown_there.child(("MR0000.MOD", "S.STA", "20040609.DAY")).child(("MR", "S", 7)),
        other_place, "1.2.3.UID",
    )  # fmt: skip
    assert sorted(inodes.showing(Kind.STUDY, 7)) == sorted([study, study_there])
    assert inodes.showing(Kind.SERIES, 8) == [series]
    assert inodes.ancestors(series) == [study, by_uid, ROOT_INODE]
    assert (series, study, "1.2.3.4") in inodes.placed()


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 3)), max_size=60))
def test_numbers_are_never_reused_whatever_the_kernel_looks_up_and_forgets(
    steps: list[tuple[int, int]],
) -> None:
    """Each step looks node n up, or (n odd) forgets some of its references."""
    inodes = Inodes()
    given_out: dict[int, object] = {ROOT_INODE: inodes.node_of(ROOT_INODE)}
    for number, count in steps:
        node = TOP.child((number % 3,))
        if number % 2:
            (inode,) = inodes.listed([(node, str(number))], ROOT_INODE)
            inodes.forget(inode, count)
        else:
            inode = inodes.looked_up(node, ROOT_INODE, str(number))
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
