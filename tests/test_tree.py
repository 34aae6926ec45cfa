"""The views as queries: what a listing shows is exactly what a lookup finds."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pydicom

from dicomfs.dicom import corpus, names
from dicomfs.mount import tree, views
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile

from .conftest import lookalike_uids_with_one_short_hash, write_lookalike_uids


def walk(conn, node, path=""):  # type: ignore[no-untyped-def]
    for name, child in tree.list_dir(conn, node):
        yield f"{path}/{name}", node, name, child
        if not tree.is_file(child):
            yield from walk(conn, child, f"{path}/{name}")


def test_every_listed_name_is_found_by_lookup_and_nothing_else(store: Path) -> None:
    corpus.write_awkward(store / "gen")
    corpus.write_regular(store / "incoming", patients=3, studies=2, series=2, instances=3)
    with Index(store) as index:
        reconcile(index, store)
        conn = index.conn
        seen = 0
        for path, parent, name, child in walk(conn, tree.ROOT):
            assert tree.lookup(conn, parent, name) == child, path
            assert tree.lookup(conn, parent, name + "x") is None, path
            assert tree.attributes(conn, child) is not None, path
            seen += 1
        files = sum(1 for *_, child in walk(conn, tree.ROOT) if tree.is_file(child))
        instances = index.counts()["instances"]
    assert files == instances * (len(tree.TOP)) + 1  # every view, plus index.html
    assert seen > files


def test_listing_with_attributes_agrees_with_attributes_one_by_one(store: Path) -> None:
    corpus.write_regular(store, patients=2, studies=1, series=2, instances=3)
    with Index(store) as index:
        reconcile(index, store)
        for _, _, _, child in walk(index.conn, tree.ROOT):
            if tree.is_file(child):
                continue
            for _, entry, found in tree.list_with_attributes(index.conn, child):
                assert found == tree.attributes(index.conn, entry)


def test_a_directory_summarises_the_receipt_times_of_what_it_holds(store: Path) -> None:
    corpus.write_regular(store, patients=2, studies=1, series=2, instances=2)
    files = sorted(store.rglob("*.dcm"))
    for number, path in enumerate(files):  # a file found in the store arrived at its mtime
        os.utime(path, (1_000_000 + number, 1_000_000 + number))
    with Index(store) as index:
        reconcile(index, store)
        conn = index.conn
        for node in (tree.ROOT, ("P",), ("M",), ("D",), ("R",), ("U",)):
            found = tree.attributes(conn, node)
            assert found is not None
            assert found.received == 1_000_000 + len(files) - 1
        for name, study in tree.list_dir(conn, ("U",)):
            uid_files = [p for p in files if pydicom.dcmread(p).StudyInstanceUID == name]
            found = tree.attributes(conn, study)
            assert found is not None
            assert found.received == max(p.stat().st_mtime for p in uid_files)


def directories(conn, node=tree.ROOT, path=""):  # type: ignore[no-untyped-def]
    """(path, node, listing) of every directory under node."""
    listing = tree.list_dir(conn, node)
    yield path or "/", node, listing
    for name, child in listing:
        if not tree.is_file(child):
            yield from directories(conn, child, f"{path}/{name}")


def test_lookalike_uids_have_unique_names_that_lead_to_them_in_every_view(store: Path) -> None:
    specs = write_lookalike_uids(store / "gen")
    with Index(store) as index:
        reconcile(index, store)
        conn = index.conn
        files = 0
        for path, node, listing in directories(conn):
            entry_names = [name for name, _ in listing]
            assert len(set(entry_names)) == len(entry_names), path
            for name, child in listing:
                assert tree.lookup(conn, node, name) == child, f"{path}/{name}"
                files += tree.is_file(child)
            with_attributes = tree.list_with_attributes(conn, node)
            assert [(name, child) for name, child, _ in with_attributes] == listing, path
    assert files == len(specs) * len(tree.TOP) + 1  # every instance in every view


def test_by_uid_shows_plain_uids_as_they_are_and_odd_ones_with_their_own_suffix(
    store: Path,
) -> None:
    specs = write_lookalike_uids(store / "gen")
    colliding = set(lookalike_uids_with_one_short_hash(specs[0].series_uid))
    with Index(store) as index:
        reconcile(index, store)
        conn = index.conn
        reached = set()
        for path, _, listing in directories(conn, tree.TOP["by-uid"]):
            for name, child in listing:
                uid = uid_of(conn, child)
                shown = name.removesuffix(".dcm")
                if names.safe_component(uid) == uid:
                    assert shown == uid, path
                else:
                    digits = names.LONG_DIGITS if uid in colliding else names.SHORT_DIGITS
                    assert re.fullmatch(
                        rf"{re.escape(names.safe_component(uid))}~[0-9a-f]{{{digits}}}", shown
                    ), name
                if tree.is_file(child):
                    reached.add(uid)
        assert reached == {spec.sop_uid for spec in specs}


def uid_of(conn, node) -> str:  # type: ignore[no-untyped-def]
    table, column = {
        "U-study": ("studies", "study_uid"),
        "U-series": ("series", "series_uid"),
        "U-file": ("instances", "sop_uid"),
    }[str(node[0])]
    return str(
        conn.execute(f"SELECT {column} FROM {table} WHERE id = ?", (node[-1],)).fetchone()[0]
    )


def test_a_by_uid_lookup_seeks_through_an_index_and_never_scans_a_table(store: Path) -> None:
    write_lookalike_uids(store / "gen")
    corpus.write_regular(store / "incoming", patients=3, studies=2, series=2, instances=2)
    with Index(store) as index:
        reconcile(index, store)
        conn = index.conn
        statements: list[str] = []
        for _, node, listing in directories(conn, tree.TOP["by-uid"]):
            conn.set_trace_callback(statements.append)
            for name, _ in listing:  # and names that are not there
                for probe in (name, f"{name}x", names.with_suffix(name, "absent")):
                    tree.lookup(conn, node, probe)
            conn.set_trace_callback(None)
        assert statements
        for sql in statements:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            assert not any(step.startswith("SCAN") for step in plan), (sql, plan)


def test_the_paths_find_and_index_html_print_lead_to_their_study(store: Path) -> None:
    write_lookalike_uids(store / "gen")
    with Index(store) as index:
        reconcile(index, store)
        conn = index.conn
        for (study,) in conn.execute("SELECT id FROM studies").fetchall():
            for paths in views.study_paths(conn, study).values():
                for path in paths:
                    node = tree.ROOT
                    for part in path.split("/"):
                        found = tree.lookup(conn, node, part)
                        assert found is not None, path
                        node = found
                    assert str(node[0]).endswith("-study"), path
                    assert node[-1] == study, path
