"""`dicomfs index`: the index follows the files, and never touches them."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import time
import warnings
from pathlib import Path

import pydicom
import pytest

from dicomfs.dicom import corpus
from dicomfs.store.index import Index, IndexUnusable
from dicomfs.store.index.schema import SCHEMA_VERSION
from dicomfs.store.indexer import import_paths, reconcile

from .conftest import back_to_v5, copy_pydicom_files, tree_fingerprint

pytestmark = pytest.mark.usefixtures("index_engine")


def indexed_sops(index: Index) -> set[str]:
    return {row[0] for row in index.conn.execute("SELECT sop_uid FROM instances")}


def indexed_paths(index: Index) -> set[str]:
    return {row[0] for row in index.conn.execute("SELECT path FROM instances")}


def oracle_sops(files: list[Path]) -> dict[str, list[Path]]:
    """What a plain, strict pydicom read says is an indexable instance."""
    found: dict[str, list[Path]] = {}
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            uids = [
                str(ds.get(k) or "").strip()
                for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
            ]
        except Exception:
            continue
        if all(uids):
            found.setdefault(uids[0], []).append(path)
    return found


def test_mixed_tree_is_indexed_with_correct_counts_and_reasons(store: Path, index: Index):
    real = copy_pydicom_files(store / "real")
    expect = corpus.write_awkward(store / "gen")
    regular = corpus.write_regular(store / "incoming", patients=4, studies=2, series=2, instances=5)
    before = tree_fingerprint(store)

    report = reconcile(index, store)

    total_files = len(real) + regular + len(expect["indexed"]) + len(expect["skipped"]) + 1
    assert report.indexed + len(report.skipped) == total_files
    skipped = dict(report.skipped)
    assert all(skipped.values()), "every skipped file has a reason"
    for rel in expect["skipped"]:
        assert f"gen/{rel}" in skipped
    assert "duplicate SOPInstanceUID" in skipped["gen/dup/older.dcm"]
    # Every generated instance is in, once; every real file pydicom reads strictly is in.
    sops = indexed_sops(index)
    assert set(expect["indexed"]) <= sops
    assert set(oracle_sops(real)) <= sops
    assert len(sops) == index.counts()["instances"]
    # The newer of two files with one SOPInstanceUID wins.
    assert "gen/dup/newer.dcm" in indexed_paths(index)
    assert "gen/dup/older.dcm" not in indexed_paths(index)
    # Nothing was changed on disk by reading it.
    assert tree_fingerprint(store) == before


def test_unchanged_files_are_not_reparsed_and_vanished_ones_are_removed(store, index):
    corpus.write_regular(store, patients=2, studies=1, series=2, instances=3)
    corpus.write_awkward(store / "gen")
    first = reconcile(index, store)
    second = reconcile(index, store)
    assert second.indexed == 0
    assert second.unchanged == first.indexed
    assert sorted(second.skipped) == sorted(first.skipped)

    victim = sorted(indexed_paths(index))[0]
    (store / victim).unlink()
    third = reconcile(index, store)
    assert (third.removed, third.indexed) == (1, 0)
    assert victim not in indexed_paths(index)


def test_a_changed_file_is_reparsed(store, index):
    spec = corpus.Spec(patient_name="BEFORE^X", patient_id="P1", sop_uid="1.2.3.4")
    corpus.write(store / "a.dcm", spec)
    reconcile(index, store)
    corpus.write(
        store / "a.dcm", corpus.Spec(patient_name="AFTER^Y", patient_id="P1", sop_uid="1.2.3.4")
    )
    os.utime(store / "a.dcm", ns=(1, 2_000_000_000_000_000_000))
    report = reconcile(index, store)
    assert report.indexed == 1
    names = [r[0] for r in index.conn.execute("SELECT patient_name FROM patients")]
    assert names == ["AFTER^Y"], "the old patient, left without studies, is gone"


def test_a_moved_file_is_a_move_not_a_duplicate(store, index):
    corpus.write(store / "a" / "x.dcm", corpus.Spec(sop_uid="1.2.3.5"))
    reconcile(index, store)
    (store / "b").mkdir()
    shutil.move(store / "a" / "x.dcm", store / "b" / "x.dcm")
    report = reconcile(index, store)
    assert (report.indexed, report.removed, report.skipped) == (1, 1, [])
    assert indexed_paths(index) == {"b/x.dcm"}


def test_empty_parents_are_pruned_when_their_last_file_goes(store, index):
    corpus.write_regular(store, patients=2, studies=1, series=1, instances=2)
    reconcile(index, store)
    for path in store.rglob("*.dcm"):
        path.unlink()
    reconcile(index, store)
    assert index.counts() == {"patients": 0, "studies": 0, "series": 0, "instances": 0}


def test_parsing_uses_a_process_pool_for_large_jobs(store, index):
    count = corpus.write_regular(store, patients=10, studies=2, series=3, instances=5)
    assert count >= 256
    report = reconcile(index, store, workers=2)
    assert report.indexed == count
    assert index.counts() == {"patients": 10, "studies": 20, "series": 60, "instances": 300}


def test_import_copies_in_and_never_touches_the_originals(tmp_path, store, index):
    outside = tmp_path / "cdrom"
    expect = corpus.write_awkward(outside)
    before = tree_fingerprint(outside)

    report = import_paths(index, store, [outside, tmp_path / "missing"])

    assert tree_fingerprint(outside) == before
    assert set(expect["indexed"]) <= indexed_sops(index)
    skipped = dict(report.skipped)
    assert skipped[str(tmp_path / "missing")] == "no such file or directory"
    for rel in expect["skipped"]:
        assert str(outside / rel) in skipped
    # The copies are complete files in the store, named by UID, and no temp file remains.
    for (path,) in index.conn.execute("SELECT path FROM instances"):
        assert pydicom.dcmread(store / path, force=True).SOPInstanceUID
    assert not [path for path in (store / ".dicomfs" / "tmp").rglob("*") if path.is_file()]
    # A reconcile afterwards agrees with what import wrote.
    again = reconcile(index, store)
    assert again.indexed == 0
    assert again.removed == 0


def test_reimporting_the_same_file_replaces_it_with_one_row(tmp_path, store, index):
    src = tmp_path / "one.dcm"
    corpus.write(src, corpus.Spec(sop_uid="1.2.3.6"))
    import_paths(index, store, [src])
    import_paths(index, store, [src])
    assert index.counts()["instances"] == 1
    assert len(list(store.rglob("*.dcm"))) == 1


def store_files(store: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(store)): path.read_bytes()
        for path in store.rglob("*")
        if path.is_file() and ".dicomfs" not in path.parts
    }


def write_aged(path: Path, spec: corpus.Spec, age: float) -> bytes:
    corpus.write(path, spec)
    then = time.time() - age
    os.utime(path, (then, then))
    return path.read_bytes()


@pytest.mark.parametrize("series_of_older", ["1.2.3.9.1", "1.2.3.9.2"])
def test_import_copies_only_the_newest_of_one_instance(
    tmp_path: Path, store: Path, index: Index, series_of_older: str
) -> None:
    newer, older = tmp_path / "newer.dcm", tmp_path / "older.dcm"
    spec = corpus.Spec(sop_uid="1.2.3.9.1.1", study_uid="1.2.3.9", series_uid="1.2.3.9.1")
    newest_bytes = write_aged(newer, dataclasses.replace(spec, series_description="new"), 10)
    write_aged(older, dataclasses.replace(spec, series_uid=series_of_older), 1000)

    report = import_paths(index, store, [newer, older])  # the older is seen last

    assert list(store_files(store).values()) == [newest_bytes]
    assert (str(older), f"duplicate SOPInstanceUID of newer file {newer}") in report.skipped
    assert report.indexed == 1
    assert index.conn.execute("SELECT description FROM series").fetchall() == [("new",)]


def test_import_does_not_copy_an_instance_older_than_the_stores(
    tmp_path: Path, store: Path, index: Index
) -> None:
    spec = corpus.Spec(sop_uid="1.2.3.8.1.1", study_uid="1.2.3.8", series_uid="1.2.3.8.1")
    write_aged(store / "incoming" / "a.dcm", spec, 10)
    reconcile(index, store)
    before = store_files(store)
    older = tmp_path / "cd" / "a.dcm"
    write_aged(older, dataclasses.replace(spec, series_uid="1.2.3.8.2"), 1000)

    report = import_paths(index, store, [older])

    assert store_files(store) == before
    assert report.skipped == [(str(older), "duplicate SOPInstanceUID of newer file incoming/a.dcm")]
    assert indexed_paths(index) == {"incoming/a.dcm"}


def test_schema_is_versioned_and_reopening_keeps_data(store):
    corpus.write(store / "a.dcm", corpus.Spec(sop_uid="1.2.3.7"))
    with Index(store) as first:
        assert first.version() == SCHEMA_VERSION
        reconcile(first, store)
    with Index(store, readonly=True) as again:
        assert again.counts()["instances"] == 1


def test_a_study_corrected_to_another_patient_leaves_no_empty_patient(store, index):
    uids = {"study_uid": "1.2.9", "series_uid": "1.2.9.1", "sop_uid": "1.2.9.1.1"}
    corpus.write(store / "a.dcm", corpus.Spec(patient_name="WRONG^NAME", patient_id="P9", **uids))
    reconcile(index, store)
    corpus.write(store / "a.dcm", corpus.Spec(patient_name="RIGHT^NAME", patient_id="P9", **uids))
    os.utime(store / "a.dcm", ns=(1, 2_000_000_000_000_000_000))
    reconcile(index, store)
    names = [r[0] for r in index.conn.execute("SELECT patient_name FROM patients")]
    assert names == ["RIGHT^NAME"]
    assert index.counts() == {"patients": 1, "studies": 1, "series": 1, "instances": 1}


@pytest.mark.sqlite_only("an upgrade of an older SQLite index")
def test_an_index_made_by_the_first_schema_is_upgraded_with_its_times(tmp_path: Path) -> None:
    store = tmp_path / "store"
    corpus.write_regular(store, patients=1, studies=1, series=2, instances=3)
    with Index(store) as index:
        reconcile(index, store)
    conn = sqlite3.connect(store / ".dicomfs" / "index.sqlite")
    back_to_v5(conn)
    conn.executescript(
        """DROP TABLE study_words; DROP TABLE series_words;
           DROP INDEX patients_patient_id_nocase; DROP INDEX studies_accession_nocase;
           DROP TABLE audit; DROP TABLE kept; DROP TABLE doomed; DROP TABLE reads;
           DROP INDEX series_last_access; DROP INDEX series_last_received;
           DROP INDEX studies_first_received;
           ALTER TABLE series DROP COLUMN last_received;
           ALTER TABLE series DROP COLUMN last_access;
           ALTER TABLE studies DROP COLUMN first_received;
           ALTER TABLE studies DROP COLUMN last_received;
           ALTER TABLE studies DROP COLUMN last_access;
           PRAGMA user_version = 1;"""
    )
    conn.close()
    with pytest.raises(IndexUnusable, match="older dicomfs"):
        Index(store, readonly=True)  # a reader never writes, so never upgrades
    Index.upgrade(store)  # what every command does before it reads
    with Index(store, readonly=True) as index:
        assert index.version() == SCHEMA_VERSION
        first, last = index.conn.execute(
            "SELECT first_received, last_received FROM studies"
        ).fetchone()
        times = [p.stat().st_mtime for p in store.rglob("*.dcm")]
        assert (first, last) == pytest.approx((min(times), max(times)))
