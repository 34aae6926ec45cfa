"""The lines the commands print, where tests/test_output.py leaves off: the index summary and
its skipped files, a study, a series due for expiry, a keep, sizes and times, and the progress
shown on a terminal or kept quiet off one."""

from __future__ import annotations

import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from dicomfs.cli import output
from dicomfs.dicom import corpus
from dicomfs.life.expiry import DueSeries, Keep
from dicomfs.store import catalog
from dicomfs.store.index import Index
from dicomfs.store.indexer import Report, reconcile

WHEN = datetime.datetime(2026, 11, 25, 14, 30).timestamp()
SHOWN = datetime.datetime.fromtimestamp(WHEN).astimezone().isoformat(timespec="seconds")


def test_times_in_iso_8601_with_their_offset_and_none_as_nothing() -> None:
    assert output.iso(WHEN) == SHOWN
    assert datetime.datetime.fromisoformat(SHOWN).utcoffset() is not None
    assert output.iso(0) == ""


def test_sizes_in_the_unit_a_reader_takes_in() -> None:
    assert [output.size(n) for n in (0, 1023, 1024, 10 * 1024**2, 3 * 1024**3, 5000 * 1024**3)] == [
        "0 bytes", "1023 bytes", "1.0 KB", "10.0 MB", "3.0 GB", "4.9 TB"]  # fmt: skip


def test_the_index_summary_lists_each_skipped_file_with_its_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = Report(unchanged=7, removed=2, skipped=[("junk/a.txt", "not a DICOM file")],
                    indexed_paths={"a.dcm", "b.dcm"})  # fmt: skip
    output.print_index_report(report, Path("/data/dicom"))
    assert capsys.readouterr().out.splitlines() == [
        "2 indexed, 7 unchanged, 2 removed, 1 skipped (/data/dicom)",
        "  skipped junk/a.txt: not a DICOM file",
    ]


def test_many_skipped_files_are_summed_up_by_reason_after_the_first_fifty(
    capsys: pytest.CaptureFixture[str],
) -> None:
    skipped = [(f"junk/{n}.txt", "not a DICOM file") for n in range(60)]
    skipped += [(f"dup/{n}.dcm", f"duplicate SOPInstanceUID of newer file new/{n}.dcm")
                for n in range(5)]  # fmt: skip
    output.print_index_report(Report(skipped=skipped), Path("/data/dicom"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "0 indexed, 0 unchanged, 0 removed, 65 skipped (/data/dicom)"
    assert len(lines) == 1 + output.MAX_SKIPPED_SHOWN + 1
    assert lines[-1] == ("  ... and 15 more skipped (10 not a DICOM file, "
                         "5 duplicate SOPInstanceUID); --json lists them all")  # fmt: skip


def test_a_study_line_says_who_when_what_how_much_and_where(store: Path) -> None:
    corpus.write(store / "doe.dcm", corpus.Spec(study_uid="1.2.3", study_date="20040609"))
    for number in (1, 2):
        corpus.write(store / f"bare{number}.dcm", corpus.Spec(
            patient_name="", patient_id="", study_date="", modality="", station_name=None,
            study_uid="1.2.4", series_uid="1.2.4.1", instance_number=number))  # fmt: skip
    with Index(store) as index:
        reconcile(index, store)
        rows = catalog.study_rows(index, index.studies_with_uid_prefix("1.2."), Path("/mnt"))
    bare, doe = rows  # by date: none first
    paths = [path for found in doe["paths"].values() for path in found]
    assert {path.split("/")[2] for path in paths} >= {"by-patient", "by-uid", "by-modality"}
    assert output.study_line(doe) == "  ".join(
        ["2004-06-09", "DOE^JOHN", "12345", "MR", "BWOW1", "1 series", "1 instance", *paths]
    )
    assert output.study_line(bare).startswith(
        "----------  (no name)  (no id)  -  -  1 series  2 instances  /mnt/"
    )


def due(**values: object) -> DueSeries:
    fields: dict[str, object] = dict(
        series_id=1, series_uid="1.2.3.1", study_uid="1.2.3", patient_name="DOE^JOHN",
        patient_id="12345", study_date="20040609", modality="MR", description="T1 axial",
        instances=120, bytes=15_728_640, last_used=WHEN, series_number=1,
    )  # fmt: skip
    fields.update(values)
    return DueSeries(**fields)  # type: ignore[arg-type]


def test_a_series_due_for_expiry_says_whose_what_how_big_and_since_when() -> None:
    assert output.expiry_line(due()) == (
        f"2004-06-09  DOE^JOHN  12345  MR  T1 axial  120 instances  15.0 MB  "
        f"untouched since {SHOWN}  1.2.3.1"
    )
    bare = due(study_date="", patient_name="", patient_id="", modality="", description="")
    assert output.expiry_line(bare).startswith(
        "----------  (no name)  (no id)  -  (no description)"
    )
    record = output.due_record(due())
    assert (record["study_date"], record["last_used"]) == ("2004-06-09", SHOWN)


def test_series_due_are_listed_by_patient_study_and_number_unnumbered_last() -> None:
    listed = output.in_patient_order([
        due(series_uid="b3", patient_name="B", series_number=3),
        due(series_uid="a-none", patient_name="A", series_number=None),
        due(series_uid="a10", patient_name="A", series_number=10),
        due(series_uid="a2", patient_name="A", series_number=2),
        due(series_uid="a-old", patient_name="A", study_date="19990101", series_number=7),
    ])  # fmt: skip
    assert [s.series_uid for s in listed] == ["a-old", "a2", "a10", "a-none", "b3"]


def test_a_keep_says_how_long_and_who_made_it() -> None:
    forever = Keep("1.2.3", "study", None, "alice", WHEN, "DOE^JOHN", "12345")
    assert output.keep_span(forever) == f"for good, kept by alice {SHOWN}"
    assert (
        output.kept_line(forever)
        == f"study 1.2.3  DOE^JOHN (12345)  for good, kept by alice {SHOWN}"
    )
    until = Keep("1.2.3.1", "series", WHEN, "bob", WHEN, "", None)
    assert output.kept_line(until) == (
        f"series 1.2.3.1  (no name) (no id)  until {SHOWN}, kept by bob {SHOWN}")  # fmt: skip
    gone = Keep("1.2.9", "study", WHEN, "bob", WHEN, lapsed=True)
    assert output.kept_line(gone) == (
        f"study 1.2.9  (no longer in the store)  LAPSED at {SHOWN}: it expires as usual, "
        f"kept by bob {SHOWN}")  # fmt: skip


def test_progress_is_quiet_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with output.ProgressBar("Indexing") as bar:
        bar.start(100, "Parsing")
        bar.advance(50)
    assert capsys.readouterr() == ("", "")


def test_pull_progress_off_a_terminal_is_one_plain_line_each_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    show = output.PullProgressLine("pacs\x1b[2J")
    for fetched in (0, 5):
        show(SimpleNamespace(found=10, had=2, fetched=fetched, remaining=8 - fetched, rate=12.4))
    show.done()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "pacs\\x1b[2J: 10 found, 2 here before, 0 fetched, 8 remaining, 12/s",
        "pacs\\x1b[2J: 10 found, 2 here before, 5 fetched, 3 remaining, 12/s",
    ]
