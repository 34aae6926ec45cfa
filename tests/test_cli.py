"""The command line as a user runs it: a real `dicomfs` process."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from dicomfs.cli.main import main
from dicomfs.dicom import corpus
from dicomfs.store.index import Index, audit


def dicomfs(
    *args: str, store: Path | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    if store is not None:
        full_env["DICOMFS_STORE"] = str(store)
    result = subprocess.run(
        [sys.executable, "-m", "dicomfs", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("store")
    corpus.write_awkward(store / "gen")
    corpus.write(
        store / "doe.dcm",
        corpus.Spec(
            patient_name="DOE^JOHN",
            patient_id="12345",
            study_uid="1.2.840.113619.2.5.1762874864",
            series_uid="1.2.840.113619.2.5.1762874864.1",
            sop_uid="1.2.840.113619.2.5.1762874864.1.1",
            study_date="20040609",
            accession="ACC77",
            station_name="BWOW1",
            modality="MR",
        ),
    )
    corpus.write(
        store / "doe2.dcm",
        corpus.Spec(
            patient_name="DOE^JANE", patient_id="999", study_date="20050101", accession="ACC78"
        ),
    )
    dicomfs("index", store=store)
    return store


def test_index_json_summary_counts_and_reasons(tmp_path: Path) -> None:
    expect = corpus.write_awkward(tmp_path / "s" / "gen")
    result = dicomfs("index", "--json", "--store", str(tmp_path / "s"))
    report = json.loads(result.stdout)
    assert report["indexed"] == len(expect["indexed"])
    skipped = {item["path"]: item["reason"] for item in report["skipped_files"]}
    assert set(skipped) == {f"gen/{p}" for p in expect["skipped"] + expect["duplicate"]}
    assert report["skipped"] == len(skipped)
    again = json.loads(dicomfs("index", "--json", "--store", str(tmp_path / "s")).stdout)
    assert (again["indexed"], again["unchanged"]) == (0, len(expect["indexed"]))


def test_index_prints_one_summary_line_then_reasons(filled_store: Path) -> None:
    lines = dicomfs("index", store=filled_store).stdout.splitlines()
    assert lines[0].startswith("0 indexed, ")
    assert any("junk/empty.dcm: not a DICOM file" in line for line in lines[1:])


@pytest.mark.parametrize(
    "terms",
    [
        ["doe"],
        ["DOE^JO"],
        ["doe", "john"],
        ["12345"],
        ["ACC77"],
        ["1.2.840.113619.2.5"],
        ["20040609"],
        ["200406"],
        ["20040601-20040630"],
        ["--", "-20040610", "john"],
        ["john", "2004"],
    ],
)
def test_find_by_every_kind_of_term(filled_store: Path, terms: list[str]) -> None:
    rows = json.loads(dicomfs("find", "--json", *terms, store=filled_store).stdout)
    terms = [t for t in terms if t != "--"]
    found = {row["patient_id"] for row in rows if row["patient_id"] in {"12345", "999"}}
    assert "12345" in found
    if terms != ["doe"]:
        assert "999" not in found, terms


def test_find_is_accent_and_case_insensitive(filled_store: Path) -> None:
    rows = json.loads(dicomfs("find", "--json", "MULLER", "jürg", store=filled_store).stdout)
    assert [row["patient_name"] for row in rows] == ["Müller^Jürgen"]
    rows = json.loads(dicomfs("find", "--json", "やまだ", store=filled_store).stdout)
    assert [row["patient_id"] for row in rows] == ["AWK-japanese"]


def test_find_line_shows_who_when_what_and_where(filled_store: Path) -> None:
    out = dicomfs("find", "--mount", "/spl/dicom", "12345", store=filled_store).stdout
    (line,) = out.splitlines()
    for part in [
        "2004-06-09",
        "DOE^JOHN",
        "12345",
        "MR",
        "BWOW1",
        "  1 series  ",
        "  1 instance  ",
        "/spl/dicom/by-modality/MR0000.MOD/BWOW1.STA/20040609.DAY/"
        "1.2.840.113619.2.5.1762874864.UID",
        "/spl/dicom/by-patient/DOE_JOHN_12345/20040609_Brain",
        "/spl/dicom/by-date/2004/06/09/DOE_JOHN_12345/20040609_Brain",
        "/spl/dicom/by-uid/1.2.840.113619.2.5.1762874864",
    ]:
        assert part in line


def test_find_without_match_exits_1(filled_store: Path) -> None:
    result = dicomfs("find", "nobody-at-all", store=filled_store, check=False)
    assert result.returncode == 1
    assert "no study matches nobody-at-all" in result.stderr


def test_awkward_names_never_reach_a_path_unsafely(filled_store: Path) -> None:
    rows = []
    for label in corpus.AWKWARD_NAMES:
        rows += json.loads(dicomfs("find", "--json", f"AWK-{label}", store=filled_store).stdout)
    assert len(rows) == len(corpus.AWKWARD_NAMES)
    for row in rows:
        for paths in row["paths"].values():
            for path in paths:
                parts = Path(path).relative_to(Path(path).anchor).parts
                assert ".." not in parts
                assert all(p and not p.startswith("-") and len(p.encode()) <= 255 for p in parts)


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    result = dicomfs("find", "x", "--store", str(tmp_path / "nowhere"), check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "does not exist" in result.stderr
    result = dicomfs("find", "x", "--store", str(tmp_path), check=False)
    assert "no index" in result.stderr
    assert "Traceback" not in result.stderr


def test_import_refuses_a_path_inside_the_store(filled_store: Path) -> None:
    result = dicomfs("index", str(filled_store / "gen"), store=filled_store, check=False)
    assert result.returncode == 1
    assert "inside the store" in result.stderr


def test_help_explains_every_command() -> None:
    for command in ("index", "find"):
        out = dicomfs(command, "-h").stdout
        assert "Examples:" in out


# --- what reaches the terminal ------------------------------------------------------------

HOSTILE = "x\x1b]0;owned\x07\nFORGED LINE"
TERMINAL_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_audit_shows_a_hostile_username_as_one_line_without_escapes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    record = audit.Record("received", calling_aet="BAY3T", address="10.1.2.3", user=HOSTILE)
    with Index(store) as index, index.transaction():
        audit.append(index.conn, [record])
    out = dicomfs("audit", store=store).stdout
    (line,) = out.splitlines()
    assert "\x1b" not in line
    assert "\x07" not in line
    assert "user=x\\x1b]0;owned\\x07\\x0aFORGED LINE" in line
    (record,) = json.loads(dicomfs("audit", "--json", store=store).stdout)
    assert record["user"] == HOSTILE  # scripts get the value itself
    assert not TERMINAL_CONTROLS.search(dicomfs("audit", "--json", store=store).stdout)


def test_index_report_shows_a_hostile_file_name_on_one_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "junk\x1b]0;owned\x07\nFORGED.dcm").write_bytes(b"not dicom")
    out = dicomfs("index", store=store).stdout
    assert not TERMINAL_CONTROLS.search(out)
    assert (
        out.splitlines()[1] == "  skipped junk\\x1b]0;owned\\x07\\x0aFORGED.dcm: not a DICOM file"
    )


def test_find_shows_a_bidi_override_in_a_name_as_an_escape(tmp_path: Path) -> None:
    store = tmp_path / "store"
    corpus.write(store / "a.dcm", corpus.Spec(patient_name="EVIL\u202eEMAN", patient_id="BIDI1"))
    dicomfs("index", store=store)
    (line,) = dicomfs("find", "BIDI1", store=store).stdout.splitlines()
    assert "EVIL\\u202eEMAN" in line
    assert not TERMINAL_CONTROLS.search(line)


def test_log_lines_of_the_command_are_escaped(tmp_path: Path) -> None:
    """main() installs the escaping formatter on the log the user sees."""
    script = (
        "import logging, sys\n"
        "from dicomfs.cli.main import main\n"
        "main(['remote', 'list'], standalone_mode=False)\n"
        f"logging.getLogger('dicomfs.receiver').warning('refused %s', {HOSTILE!r})\n"
    )
    env = {**os.environ, "DICOMFS_STORE": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.stderr.splitlines() == [
        "no peers yet (dicomfs remote add NAME AET@HOST:PORT)",
        "WARNING refused x\\x1b]0;owned\\x07\\x0aFORGED LINE",
    ]


def every_command(group: click.Group = main, path: tuple[str, ...] = ()) -> list[list[str]]:
    commands = []
    for name, command in group.commands.items():
        commands.append([*path, name])
        if isinstance(command, click.Group):
            commands += every_command(command, (*path, name))
    return commands


@pytest.mark.parametrize("command", every_command(), ids=" ".join)
def test_every_command_takes_v_after_it(command: list[str]) -> None:
    result = dicomfs(*command, "-v", "-h", check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert "-v, --verbose" in result.stdout


@pytest.mark.parametrize(
    ("args", "levels"),
    [
        (["remote", "list"], []),
        (["-v", "remote", "list"], ["INFO"]),
        (["remote", "list", "-v"], ["INFO"]),
        (["remote", "list", "-vv"], ["INFO", "DEBUG"]),
        (["-v", "remote", "-v", "list"], ["INFO", "DEBUG"]),
    ],
)
def test_v_before_or_after_the_command_shows_more_of_the_log(
    tmp_path: Path, args: list[str], levels: list[str]
) -> None:
    script = (
        "import logging\n"
        "from dicomfs.cli.main import main\n"
        f"main({args!r}, standalone_mode=False)\n"
        "logging.getLogger('dicomfs.receiver').info('said')\n"
        "logging.getLogger('dicomfs.receiver').debug('said')\n"
    )
    env = {**os.environ, "DICOMFS_STORE": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    shown = [line.split()[0] for line in result.stderr.splitlines() if line.endswith(" said")]
    assert shown == levels


# --- find: what users type ------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_store(tmp_path_factory) -> Path:
    """Studies as a lab has them: IDs and accession numbers in any case, descriptions."""
    store = tmp_path_factory.mktemp("lab")
    specs = {
        "knee": corpus.Spec(patient_name="MARTIN^PAUL", patient_id="PULL0021",
                            accession="Acc-77A", study_date="20061201",
                            study_description="Genou droit", series_description="T1 sagittal"),
        "shoulder": corpus.Spec(patient_name="DURAND^ANNE", patient_id="pull0099",
                                accession="B500", study_date="20061231",
                                study_description="Épaule gauche", series_description="STIR"),
        "brain": corpus.Spec(patient_name="PETIT^LEA", patient_id="X1", accession="C1",
                             study_date="20070115", study_description="Brain",
                             series_description="Coronal FLAIR"),
    }  # fmt: skip
    for name, spec in specs.items():
        corpus.write(store / f"{name}.dcm", spec)
    dicomfs("index", store=store)
    return store


def found_ids(store: Path, *terms: str) -> list[str]:
    result = dicomfs("find", "--json", *terms, store=store, check=False)
    return sorted(row["patient_id"] for row in json.loads(result.stdout or "[]"))


@pytest.mark.parametrize(
    ("terms", "expected"),
    [
        (["pull002"], ["PULL0021"]),  # an ID by its beginning, whatever the case
        (["PULL00"], ["PULL0021", "pull0099"]),
        (["pull0021"], ["PULL0021"]),
        (["acc-77"], ["PULL0021"]),  # an accession number too
        (["b500"], ["pull0099"]),
        (["2006-12-01"], ["PULL0021"]),  # dates as find prints them
        (["2006-12"], ["PULL0021", "pull0099"]),
        (["2006-12-01..2006-12-31"], ["PULL0021", "pull0099"]),
        (["2006-12-02..2007-01-31"], ["X1", "pull0099"]),
        (["..2006-12-15"], ["PULL0021"]),
        (["2007-01.."], ["X1"]),
        (["20061201"], ["PULL0021"]),  # the old forms still work
        (["200612"], ["PULL0021", "pull0099"]),
        (["20061202-20070131"], ["X1", "pull0099"]),
        (["genou"], ["PULL0021"]),  # study descriptions, by the beginnings of words
        (["GEN"], ["PULL0021"]),
        (["epaule"], ["pull0099"]),  # accents do not matter
        (["sagit"], ["PULL0021"]),  # series descriptions too
        (["flair", "2007"], ["X1"]),
        (["genou droit"], ["PULL0021"]),
        (["genou gauche"], []),
    ],
)
def test_find_what_users_type(lab_store: Path, terms: list[str], expected: list[str]) -> None:
    assert found_ids(lab_store, *terms) == expected


@pytest.mark.parametrize(
    ("term", "said"),
    [
        ("2004-13", "2004-13 is not a date: there is no month 13"),
        ("2004-02-30", "2004-02-30 is not a date: 2004-02 has no day 30"),
        ("20041301", "20041301 is not a date: there is no month 13"),
        ("2004-13..", "2004-13 in 2004-13.. is not a date: there is no month 13"),
        ("2004-06-30..2004-06-01", "2004-06-30..2004-06-01 is not a date range: it ends before"),
        ("20040630-20040601", "20040630-20040601 is not a date range: it ends before it starts"),
    ],
)
def test_find_a_date_that_is_none_is_an_error_not_an_empty_result(
    lab_store: Path, term: str, said: str
) -> None:
    result = dicomfs("find", "doe", term, store=lab_store, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: {said}")


def test_find_a_patient_id_that_looks_like_a_date_is_found(tmp_path: Path) -> None:
    store = tmp_path / "store"
    corpus.write(store / "a.dcm", corpus.Spec(patient_id="20041301", study_date="20040609"))
    dicomfs("index", store=store)
    for term in ("20041301", "200413", "2004-06-09"):
        assert found_ids(store, term) == ["20041301"], term


def test_find_json_gives_dates_and_times_in_iso_8601(lab_store: Path) -> None:
    (row,) = json.loads(dicomfs("find", "--json", "genou", store=lab_store).stdout)
    assert row["study_date"] == "2006-12-01"
    assert row["study_time"] == "10:15:00"
    assert row["received_at"].startswith("20")
    assert datetime.datetime.fromisoformat(row["received_at"]).tzinfo is not None


def test_audit_json_gives_its_times_in_iso_8601(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    with Index(store) as index, index.transaction():
        audit.append(index.conn, [audit.Record("received", at=1086778760.0)])
    (record,) = json.loads(dicomfs("audit", "--json", store=store).stdout)
    at = datetime.datetime.fromisoformat(record["at"])
    assert at.timestamp() == 1086778760.0
    assert at.tzinfo is not None


def test_audit_since_a_time_alone_means_today(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    today = datetime.date.today()
    at = {hour: datetime.datetime.combine(today, datetime.time(hour)).timestamp()
          for hour in (10, 12)}  # fmt: skip
    records = [audit.Record("received", at=at[10], calling_aet="EARLY"),
               audit.Record("received", at=at[12], calling_aet="LATE")]  # fmt: skip
    with Index(store) as index, index.transaction():
        audit.append(index.conn, records)
    result = dicomfs("audit", "--since", "11:00", "--json", store=store)
    assert [r["calling_aet"] for r in json.loads(result.stdout)] == ["LATE"]


def test_audit_names_the_series_and_a_pulled_patient(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    records = [
        audit.Record("read", user="alice", patient_id="12345", patient_name="DOE^JOHN",
                     study_uid="1.2.3", series_uid=f"1.2.3.{n}", instances=1)
        for n in (1, 2)
    ] + [audit.Record("pulled", user="bob", patient_id="12345", instances=1)]  # fmt: skip
    with Index(store) as index, index.transaction():
        audit.append(index.conn, records)
    first, second, pulled = dicomfs("audit", store=store).stdout.splitlines()
    assert "patient DOE^JOHN (12345)  study 1.2.3  series 1.2.3.1  1 instance  " in first
    assert "series 1.2.3.2" in second
    assert "patient 12345  1 instance  " in pulled


# --- remote: named peers ----------------------------------------------------------------------


def test_remote_add_says_whether_it_added_or_replaced(tmp_path: Path) -> None:
    result = dicomfs("remote", "list", store=tmp_path)
    assert (result.stdout, result.stderr) == (
        "", "no peers yet (dicomfs remote add NAME AET@HOST:PORT)\n")  # fmt: skip
    added = dicomfs("remote", "add", "pacs", "PACS@[::1]:104", store=tmp_path).stdout
    assert added == "added pacs: PACS@[::1]:104\n"
    again = dicomfs("remote", "add", "pacs", "PACS@10.1.2.4:104", store=tmp_path).stdout
    assert again == "replaced pacs: was PACS@[::1]:104, now PACS@10.1.2.4:104\n"
    assert dicomfs("remote", "list", store=tmp_path).stdout == "pacs  PACS@10.1.2.4:104\n"


def test_a_peer_at_an_ipv6_address_is_reached(tmp_path: Path) -> None:
    asked: list[str] = []

    def on_find(event: evt.Event) -> Iterator[tuple[int, None]]:
        asked.append(str(event.identifier.QueryRetrieveLevel))
        yield from ()  # it has nothing

    ae = AE(ae_title="PACS6")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    server = ae.start_server(("::1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
    try:
        port = server.server_address[1]
        dicomfs("remote", "add", "pacs", f"PACS6@[::1]:{port}", store=tmp_path)
        result = dicomfs("pull", "--from", "pacs", "--study", "1.2.3", "--method", "get",
                         store=tmp_path, check=False)  # fmt: skip
    finally:
        server.shutdown()
    assert asked == ["STUDY"]
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "Error: pacs has nothing that matches"
