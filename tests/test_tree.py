"""The views as queries: what a listing shows is exactly what a lookup finds."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom

from dicomfs import corpus, tree
from dicomfs.index import Index
from dicomfs.indexer import reconcile


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
