"""The views as queries: what a listing shows is exactly what a lookup finds, and a
study's paths (find, index.html) are the names the listings give it."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pydicom
import pytest

from dicomfs.dicom import corpus, names
from dicomfs.store import index as index_module
from dicomfs.store import views
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile

from .conftest import lookalike_uids_with_one_short_hash, write_lookalike_uids

pytestmark = pytest.mark.usefixtures("index_engine")


def walk(conn, node, path=""):  # type: ignore[no-untyped-def]
    for name, child, _ in views.list_entries(conn, node):
        yield f"{path}/{name}", node, name, child
        if not views.is_file(child):
            yield from walk(conn, child, f"{path}/{name}")


def found(conn, node, name):  # type: ignore[no-untyped-def]
    """The node a lookup of name in node finds, or None."""
    entry = views.lookup(conn, node, name)
    return None if entry is None else entry.node


# Every view, once: a new view adds its line here.
@pytest.mark.parametrize(
    "view",
    ["by-modality", "by-patient", "by-date", "by-received", "by-uid"],
)
def test_a_view_lists_looks_up_and_places_each_study_alike(store: Path, view: str) -> None:
    write_lookalike_uids(store / "gen")
    corpus.write_awkward(store / "awkward")
    corpus.write_regular(store / "incoming", patients=2, studies=2, series=2, instances=2)
    with Index(store) as index:
        reconcile(index, store)
        conn = index.conn
        top = views.top(view)
        studies: dict[int, set[str]] = {}
        instances = set()
        for path, parent, name, child in walk(conn, top, view):
            entry = views.lookup(conn, parent, name)
            assert entry is not None, path
            assert entry.node == child, path
            # The listing's attributes are those a getattr of the node finds.
            assert entry.attributes == views.attributes(conn, child), path
            assert views.lookup(conn, parent, name + "x") is None, path
            if child.kind is views.Kind.STUDY:
                studies.setdefault(child.row, set()).add(path)
            if child.kind is views.Kind.FILE:
                instances.add(child.row)
        # Every instance shows, and every study is where study_paths says.
        assert len(instances) == index.counts()["instances"]
        assert len(studies) == index.counts()["studies"]
        for study, paths in studies.items():
            assert set(views.study_paths(conn, study)[view]) == paths
        # And where one namer places them all (find, index.html), listing a parent
        # whole once it is asked about often.
        namer = views.Namer(conn)
        for study, paths in studies.items():
            assert set(namer.study_paths(study)[view]) == paths


def test_every_listed_name_is_found_by_lookup_and_nothing_else(store: Path) -> None:
    corpus.write_awkward(store / "gen")
    corpus.write_regular(store / "incoming", patients=3, studies=2, series=2, instances=3)
    with Index(store) as index:
        reconcile(index, store)
        conn = index.conn
        seen = 0
        for path, parent, name, child in walk(conn, views.ROOT):
            assert found(conn, parent, name) == child, path
            assert found(conn, parent, name + "x") is None, path
            assert views.attributes(conn, child) is not None, path
            seen += 1
        files = sum(1 for *_, child in walk(conn, views.ROOT) if views.is_file(child))
        instances = index.counts()["instances"]
    assert files == instances * len(views.VIEWS) + len(views.PAGES)  # and the pages
    assert seen > files


def test_a_series_files_by_name_alone_are_its_listing_s(store: Path) -> None:
    """What readdir shows of a series (its index alone) is what the listing names, with
    look-alike names told apart the same way."""
    corpus.write_awkward(store / "gen")
    corpus.write_regular(store / "incoming", patients=2, studies=1, series=2, instances=3)
    for sop in ("1.2.3.9.1", "1.2.3.9.2"):  # two files numbered 1 in one series
        spec = corpus.Spec(study_uid="1.2.3", series_uid="1.2.3.9", sop_uid=sop, instance_number=1)
        corpus.write(store / f"{sop}.dcm", spec)
    with Index(store) as index:
        reconcile(index, store)
        series = [child for *_, child in walk(index.conn, views.ROOT) if views.lists_files(child)]
        shared = 0
        for child in series:
            listed = [(name, key[-1]) for name, key, _ in views.list_children(index.conn, child)]
            assert views.file_names(index.conn, child) == listed
            shared += any("~" in name for name, _ in listed)
    assert shared  # files that share a name in a series are told apart


def test_listing_with_attributes_agrees_with_attributes_one_by_one(store: Path) -> None:
    corpus.write_regular(store, patients=2, studies=1, series=2, instances=3)
    with Index(store) as index:
        reconcile(index, store)
        for _, _, _, child in walk(index.conn, views.ROOT):
            if views.is_file(child):
                continue
            for _, entry, listed in views.list_entries(index.conn, child):
                assert listed == views.attributes(index.conn, entry)


def test_a_directory_summarises_the_receipt_times_of_what_it_holds(store: Path) -> None:
    corpus.write_regular(store, patients=2, studies=1, series=2, instances=2)
    files = sorted(store.rglob("*.dcm"))
    for number, path in enumerate(files):  # a file found in the store arrived at its mtime
        os.utime(path, (1_000_000 + number, 1_000_000 + number))
    with Index(store) as index:
        reconcile(index, store)
        conn = index.conn
        for node in (views.ROOT, *(view.top for view in views.VIEWS)):
            times = views.attributes(conn, node)
            assert times is not None
            assert times.received == 1_000_000 + len(files) - 1
        for name, study, _ in views.list_entries(conn, views.top("by-uid")):
            uid_files = [p for p in files if pydicom.dcmread(p).StudyInstanceUID == name]
            times = views.attributes(conn, study)
            assert times is not None
            assert times.received == max(p.stat().st_mtime for p in uid_files)


def directories(conn, node=views.ROOT, path=""):  # type: ignore[no-untyped-def]
    """(path, node, listing) of every directory under node."""
    listing = [(name, child) for name, child, _ in views.list_entries(conn, node)]
    yield path or "/", node, listing
    for name, child in listing:
        if not views.is_file(child):
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
                assert found(conn, node, name) == child, f"{path}/{name}"
                files += views.is_file(child)
    assert files == len(specs) * len(views.VIEWS) + len(views.PAGES)  # and the pages


def test_by_uid_shows_plain_uids_as_they_are_and_odd_ones_with_their_own_suffix(
    store: Path,
) -> None:
    specs = write_lookalike_uids(store / "gen")
    colliding = set(lookalike_uids_with_one_short_hash(specs[0].series_uid))
    with Index(store) as index:
        reconcile(index, store)
        conn = index.conn
        reached = set()
        for path, _, listing in directories(conn, views.top("by-uid")):
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
                if views.is_file(child):
                    reached.add(uid)
        assert reached == {spec.sop_uid for spec in specs}


def uid_of(conn, node) -> str:  # type: ignore[no-untyped-def]
    table, column = {
        views.Kind.STUDY: ("studies", "study_uid"),
        views.Kind.SERIES: ("series", "series_uid"),
        views.Kind.FILE: ("instances", "sop_uid"),
    }[node.kind]
    return str(
        conn.execute(f"SELECT {column} FROM {table} WHERE id = ?", (node.row,)).fetchone()[0]
    )


@pytest.mark.sqlite_only("SQLite's query plans and statements")
def test_a_by_uid_lookup_seeks_through_an_index_and_never_scans_a_table(store: Path) -> None:
    write_lookalike_uids(store / "gen")
    corpus.write_regular(store / "incoming", patients=3, studies=2, series=2, instances=2)
    with Index(store) as index:
        reconcile(index, store)
        conn = index.conn
        statements: list[str] = []
        for _, node, listing in directories(conn, views.top("by-uid")):
            conn.set_trace_callback(statements.append)
            for name, _ in listing:  # and names that are not there
                for probe in (name, f"{name}x", names.with_suffix(name, "absent")):
                    views.lookup(conn, node, probe)
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
                    node = views.ROOT
                    for part in path.split("/"):
                        child = found(conn, node, part)
                        assert child is not None, path
                        node = child
                    assert node.kind is views.Kind.STUDY, path
                    assert node.row == study, path


def test_every_study_s_paths_at_once_are_each_study_s_own(store: Path) -> None:
    """index.html names thousands of studies at once (views.all_study_paths): the same
    names as one study's (study_paths), look-alikes and awkward names included."""
    write_lookalike_uids(store / "gen")
    corpus.write_awkward(store / "odd")
    corpus.write_regular(store / "regular", patients=3, studies=2, series=2, instances=1)
    with Index(store) as index:
        reconcile(index, store)
        conn = index.conn
        every = views.all_study_paths(conn)
        studies = [row[0] for row in conn.execute("SELECT id FROM studies")]
        assert sorted(every) == sorted(studies)
        for study in studies:
            own = {view: sorted(paths) for view, paths in views.study_paths(conn, study).items()}
            assert every[study] == own, study


def test_many_studies_are_summarised_at_once_as_each_alone(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus.write_regular(store, patients=3, studies=2, series=2, instances=2)
    corpus.write_awkward(store / "odd")
    with Index(store) as index:
        reconcile(index, store)
        ids = index.study_ids()
        monkeypatch.setattr(index_module, "SUMMARIES_AT_ONCE", 1)
        statements: list[str] = []
        traced = isinstance(index.conn, sqlite3.Connection)  # SQLite's plans are known here
        if traced:
            index.conn.set_trace_callback(statements.append)
        try:
            at_once = index.study_summaries(ids)
        finally:
            if traced:
                index.conn.set_trace_callback(None)
        if traced:
            assert [instance_steps(index, statement) for statement in statements] == [[]]
        monkeypatch.setattr(index_module, "SUMMARIES_AT_ONCE", len(ids) + 1)
        assert at_once == index.study_summaries(ids)
        assert len(at_once) == len(ids)


@pytest.mark.sqlite_only("SQLite's query plans and statements")
def test_a_study_summary_never_reads_the_instances(store: Path) -> None:
    """At a million instances, counting each study's instances is what made find and
    index.html slow: the triggers count them per series as they are written."""
    corpus.write_regular(store, patients=2, studies=1, series=2, instances=3)
    with Index(store) as index:
        reconcile(index, store)
        statements: list[str] = []
        index.conn.set_trace_callback(statements.append)
        try:
            summaries = index.study_summaries(index.study_ids())
        finally:
            index.conn.set_trace_callback(None)
        assert [s.instance_count for s in summaries] == [6, 6]
        assert statements
        for statement in statements:
            assert instance_steps(index, statement) == [], statement


def instance_steps(index: Index, statement: str) -> list[str]:
    """The steps of a statement's plan that read the instances table."""
    plan = [row[3] for row in index.conn.execute(f"EXPLAIN QUERY PLAN {statement}")]
    return [step for step in plan if re.search(r"^(SEARCH|SCAN) (instances|i)\b", step)]


def test_the_pages_series_and_thumbnails_are_found_by_name_and_never_listed(store: Path) -> None:
    corpus.write_regular(store, patients=1, studies=1, series=2, instances=1)
    with Index(store) as index:
        reconcile(index, store)
        conn = index.conn
        (study,) = conn.execute("SELECT id FROM studies").fetchone()
        (series,) = conn.execute("SELECT max(id) FROM series").fetchone()
        found = {
            name: views.lookup(conn, views.ROOT, name)
            for name in (
                views.series_page_name("by-date", study),
                views.thumbnail_name(series),
                views.series_page_name("by-date", study + 1000),  # no such study
                views.thumbnail_name(series + 1000),
                f".series.by-date.0{study}.html",  # one name for each: no leading zeros
                f".series.by-nothing.{study}.html",
            )
        }
        listed = {entry.name for entry in views.list_entries(conn, views.ROOT)}
    assert [name for name, entry in found.items() if entry is not None] == [
        views.series_page_name("by-date", study),
        views.thumbnail_name(series),
    ]
    page = found[views.series_page_name("by-date", study)]
    picture = found[views.thumbnail_name(series)]
    assert page is not None
    assert picture is not None
    assert views.generated(page.node) == views.Generated("series", "by-date", study)
    assert views.generated(picture.node) == views.Generated("thumbnail", "", series)
    assert not any(name.startswith((".series", ".thumb")) for name in listed)
