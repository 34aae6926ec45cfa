"""What a `dicomfs find` term means: a date, month, year or range; the beginning of a patient
ID, accession number or StudyInstanceUID; the beginnings of the words of a name or description."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dicomfs.dicom import corpus
from dicomfs.store import search
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile

STUDIES = {
    "john": corpus.Spec(
        patient_name="DOE^JOHN", patient_id="12345", study_date="20040609", accession="ACC77",
        study_description="Brain", series_description="T1 axial", study_uid="1.2.840.113619.2.5.1",
    ),
    "jurgen": corpus.Spec(
        patient_name="MÜLLER^JÜRGEN", patient_id="PULL0021", study_date="20041231",
        accession="Acc-77A", study_description="Genou droit", series_description="T1 sagittal",
        study_uid="1.2.826.0.1.5",
    ),
    "jane": corpus.Spec(
        patient_name="DOE^JANE", patient_id="2004-13B", study_date="20050101", accession="X1",
        study_description="Knee", series_description="PD fat sat", study_uid="1.3.6.1.7",
    ),
    "anna": corpus.Spec(
        patient_name="SMITH^ANNA", patient_id="777", study_date="", accession="",
        study_description="", series_description="", study_uid="1.3.6.1.8",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    for key, spec in STUDIES.items():
        corpus.write(store / f"{key}.dcm", spec)
    with Index(store) as index:
        reconcile(index, store)
    return store


def found(store: Path, *terms: str) -> set[str]:
    """The studies the terms find, by their key in STUDIES."""
    by_uid = {spec.study_uid: key for key, spec in STUDIES.items()}
    with Index(store, readonly=True) as index:
        ids = search.matching_studies(index, list(terms))
        return {by_uid[summary.study_uid] for summary in index.study_summaries(ids)}


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        # names: the beginnings of words, whatever the case and accents
        ("doe", {"john", "jane"}),
        ("DOE", {"john", "jane"}),
        ("doe^jo", {"john"}),
        ("doe jo", {"john"}),
        ("jo", {"john"}),
        ("ohn", set()),  # not the beginning of a word
        ("muller", {"jurgen"}),
        ("MÜLL", {"jurgen"}),
        ("jürgen", {"jurgen"}),
        # patient IDs and accession numbers: their beginning, any case
        ("pull002", {"jurgen"}),
        ("123", {"john"}),
        ("acc-77", {"jurgen"}),
        ("acc", {"john", "jurgen"}),
        ("0021", set()),  # the end of an ID is not its beginning
        # descriptions of studies and series: like names
        ("genou", {"jurgen"}),
        ("sagit", {"jurgen"}),
        ("t1", {"john", "jurgen"}),
        ("fat sat", {"jane"}),
        # StudyInstanceUIDs: their beginning
        ("1.2.840", {"john"}),
        ("1.2", {"john", "jurgen"}),
        ("1.3.6.1.", {"jane", "anna"}),
        ("2.5.1", set()),
        # dates as find prints them, and as DICOM writes them
        ("2004-06-09", {"john"}),
        ("20040609", {"john"}),
        ("2004-06", {"john"}),
        ("200406", {"john"}),
        ("2004", {"john", "jurgen", "jane"}),  # jane's ID begins with 2004
        ("2005", {"jane"}),
        ("2004-06-10", set()),
        # ranges, either end open; a study without a date is in none
        ("2004-12-01..2005-01-31", {"jurgen", "jane"}),
        ("..2004-12-31", {"john", "jurgen"}),
        ("2005..", {"jane"}),
        ("2004-07..2004", {"jurgen"}),
        ("20041201-20050131", {"jurgen", "jane"}),
        ("20050101-", {"jane"}),
        ("-20040609", {"john"}),
        # a date that is none, but the beginning of a patient ID: no error
        ("2004-13", {"jane"}),
    ],
)
def test_what_a_term_finds(indexed: Path, term: str, expected: set[str]) -> None:
    assert found(indexed, term) == expected


def test_every_term_must_match(indexed: Path) -> None:
    assert found(indexed, "doe", "2004-06") == {"john"}
    assert found(indexed, "doe", "knee") == {"jane"}
    assert found(indexed, "doe", "genou") == set()
    assert found(indexed, " 2004-06-09 ", "doe ") == {"john"}  # as a shell may pass it
    assert found(indexed) == set()
    assert found(indexed, "") == set()


@pytest.mark.parametrize("term", ["2004-14", "2004-02-30", "..2004-13", "2005..2004"])
def test_a_date_that_is_none_and_nothing_else_is_an_error_that_says_so(
    indexed: Path, term: str
) -> None:
    with pytest.raises(search.NotADate, match=f"{re.escape(term)}.* is not a date"):
        found(indexed, term)


@pytest.mark.parametrize(
    ("term", "bounds"),
    [
        ("2004", ("20040000", "20049999")),
        ("2004-06", ("20040600", "20040699")),
        ("200406", ("20040600", "20040699")),
        ("2004-06-09", ("20040609", "20040609")),
        ("2000-02-29", ("20000229", "20000229")),  # a leap year
        ("2004-06-09..", ("20040609", "99999999")),
        ("..2004", ("00000000", "20049999")),
        ("2004-06..2004-07", ("20040600", "20040799")),
        ("20040601-20040630", ("20040601", "20040630")),
        ("-200406", ("00000000", "20040699")),
    ],
)
def test_the_days_a_date_term_covers(term: str, bounds: tuple[str, str]) -> None:
    assert search.date_bounds(term) == bounds


@pytest.mark.parametrize(
    "term", ["..", "-", "2004-6-9", "12345", "2004061", "2004-06-09T10", "06/09/2004", "doe", ""]
)
def test_terms_not_written_as_dates(term: str) -> None:
    assert search.date_bounds(term) is None


@pytest.mark.parametrize(
    ("term", "problem"),
    [
        ("1900-02-29", "1900-02 has no day 29"),  # not a leap year
        ("2004-04-31", "2004-04 has no day 31"),
        ("2004-00", "there is no month 00"),
        ("0000-01-01", "there is no year 0"),
        ("2004-01-01..2004-13-01", "2004-13-01 in 2004-01-01..2004-13-01 is not a date"),
        ("2004-06-30..2004-06-01", "it ends before it starts"),
    ],
)
def test_a_date_that_is_none_says_what_is_wrong(term: str, problem: str) -> None:
    with pytest.raises(search.NotADate) as caught:
        search.date_bounds(term)
    assert problem in str(caught.value)
