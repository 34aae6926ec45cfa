"""Search in the index: every kind of find term is served by an index, never a table scan,
and the words of descriptions follow their rows."""

from __future__ import annotations

import dataclasses
import os
import re
import sqlite3
from pathlib import Path

import pytest

from dicomfs.dicom import corpus
from dicomfs.dicom.meta import read_meta
from dicomfs.store import search
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile

from .conftest import back_to_v5

pytestmark = pytest.mark.usefixtures("index_engine")

SPEC = corpus.Spec(
    patient_name="MARTIN^PAUL", patient_id="PULL0021", accession="Acc-77A",
    study_description="Genou droit", series_description="T1 sagittal",
)  # fmt: skip


def statements_of(index: Index, terms: list[str]) -> list[str]:
    """The SQL a search runs, with its values."""
    statements: list[str] = []
    index.conn.set_trace_callback(statements.append)
    try:
        search.matching_studies(index, terms)
    finally:
        index.conn.set_trace_callback(None)
    return statements


@pytest.mark.sqlite_only("SQLite's query plans")
@pytest.mark.parametrize(
    "term", ["pull002", "ACC-77", "genou", "sagit", "martin", "2004-06", "1.2.826.0.1"]
)
def test_every_kind_of_search_is_an_index_range_scan(store: Path, term: str) -> None:
    corpus.write_regular(store, patients=30, studies=2, series=2, instances=1)
    corpus.write(store / "knee.dcm", SPEC)
    with Index(store) as index:
        reconcile(index, store)
        index.conn.execute("ANALYZE")  # plans as on a store that has been used
        assert search.matching_studies(index, [term])
        for statement in statements_of(index, [term]):
            plan = " / ".join(
                row[3] for row in index.conn.execute(f"EXPLAIN QUERY PLAN {statement}")
            )
            assert not re.search(r"\bSCAN (?!CONSTANT)", plan), (statement, plan)


def test_description_words_follow_their_rows(store: Path) -> None:
    path = store / "knee.dcm"
    corpus.write(path, SPEC)
    with Index(store) as index:
        reconcile(index, store)
        assert search.matching_studies(index, ["genou"])
        # The study and series are described anew: their old words go.
        corpus.write(path, dataclasses.replace(
            SPEC, sop_uid=read_meta(str(path)).sop_uid, study_description="Knee left",
            series_description="PD fat sat"))  # fmt: skip
        os.utime(path, ns=(1, 2_000_000_000_000_000_000))  # certainly changed
        reconcile(index, store)
        assert not search.matching_studies(index, ["genou"])
        assert not search.matching_studies(index, ["sagittal"])
        assert search.matching_studies(index, ["knee", "fat"])
        # The study and series are gone: so are their words.
        path.unlink()
        reconcile(index, store)
        for table in ("study_words", "series_words"):
            assert index.conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


@pytest.mark.sqlite_only("an upgrade of an older SQLite index")
def test_an_index_of_schema_4_learns_the_words_of_its_descriptions(store: Path) -> None:
    corpus.write(store / "knee.dcm", SPEC)
    with Index(store) as index:
        reconcile(index, store)
    conn = sqlite3.connect(store / ".dicomfs" / "index.sqlite")
    back_to_v5(conn)
    conn.executescript(
        """DROP TABLE study_words; DROP TABLE series_words;
           DROP INDEX patients_patient_id_nocase; DROP INDEX studies_accession_nocase;
           PRAGMA user_version = 4;"""
    )
    conn.close()
    Index.upgrade(store)  # what every command does before it reads
    with Index(store, readonly=True) as index:
        assert search.matching_studies(index, ["genou", "sagit", "pull00"])


@pytest.mark.parametrize(
    "term", ["2004-13", "2004-00", "2004-02-30", "20050229", "20041301", "0000", "2004-13..",
             "..2004-02-30", "2004-06-30..2004-06-01", "20040630-20040601", "2005..2004"],
)  # fmt: skip
def test_a_term_written_as_a_date_that_is_none_is_an_error(index: Index, term: str) -> None:
    with pytest.raises(search.NotADate, match=re.escape(term)):
        search.date_bounds(term)
    with pytest.raises(search.NotADate):
        search.matching_studies(index, [term])


def test_dates_that_are_dates() -> None:
    assert search.date_bounds("20040229") == ("20040229", "20040229")
    assert search.date_bounds("2004-06..2004") == ("20040600", "20049999")
    assert search.date_bounds("2004..2004") == ("20040000", "20049999")
    assert search.date_bounds("PULL0021") is None
