"""The audit trail: records only ever added, found in time order by patient, time and kind,
and shown by `dicomfs audit` one line each (or as JSON)."""

from __future__ import annotations

import datetime
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from dicomfs.store.index import Index, audit

pytestmark = pytest.mark.usefixtures("index_engine")

DICOMFS = Path(sys.executable).with_name("dicomfs")  # the command users run
T0 = datetime.datetime(2026, 11, 25, 8, 0).timestamp()
HOUR = 3600.0

RECORDS = [
    audit.Record("received", at=T0, calling_aet="BAY3T", address="10.1.2.3", called_aet="DICOMFS",
                 user="alice", patient_id="12345", patient_name="DOE^JOHN", study_uid="1.2.3",
                 instances=120, bytes=15_728_640),
    audit.Record("rejected", at=T0 + HOUR, calling_aet="INTRUDER", address="10.9.9.9",
                 outcome="calling AE title INTRUDER is not allowed"),
    audit.Record("read", at=T0 + 2 * HOUR, user="bob", patient_id="12345",
                 patient_name="DOE^JOHN", study_uid="1.2.3", series_uid="1.2.3.1", instances=3),
    audit.Record("deleted", at=T0 + 3 * HOUR, patient_id="999", patient_name="DOE^JANE",
                 study_uid="1.2.4", series_uid="1.2.4.1", instances=2, bytes=1536,
                 detail="expired"),
    audit.Record("pulled", at=T0 + 3 * HOUR, user="carol", calling_aet="PACS",
                 patient_id="999", detail="from pacs: 2 instances"),
]  # fmt: skip


@pytest.fixture
def audited(store: Path) -> Path:
    with Index(store) as index, index.transaction():
        audit.append(index.conn, reversed(RECORDS))  # written in any order
    return store


def events(records: list[dict[str, object]]) -> list[object]:
    return [record["event"] for record in records]


def test_records_are_found_in_time_order_and_by_what_they_are(audited: Path) -> None:
    with Index(audited, readonly=True) as index:
        every = audit.search(index.conn)
        assert events(every) == ["received", "rejected", "read", "pulled", "deleted"]  # ties
        assert every[0] == {field: getattr(RECORDS[0], field) for field in audit.FIELDS}
        by_patient = audit.search(index.conn, patient_id="12345")
        assert events(by_patient) == ["received", "read"]
        assert events(audit.search(index.conn, since=T0 + HOUR)) == [
            "rejected", "read", "pulled", "deleted"]  # fmt: skip
        assert events(audit.search(index.conn, until=T0 + HOUR)) == ["received"]
        assert events(audit.search(index.conn, event="rejected")) == ["rejected"]
        assert audit.search(index.conn, patient_id="999", event="read") == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit SET \"user\" = 'mallory'",
        "DELETE FROM audit",
        "DELETE FROM audit WHERE event = 'read'",
    ],
)
def test_records_can_never_be_changed_or_removed(audited: Path, statement: str) -> None:
    with Index(audited) as index:
        refused = (sqlite3.IntegrityError, psycopg.errors.RaiseException)
        with pytest.raises(refused, match="the audit trail is append-only"):
            index.conn.execute(statement)
        assert len(audit.search(index.conn)) == len(RECORDS)


def dicomfs_audit(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DICOMFS), "audit", "--store", str(store), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def test_dicomfs_audit_shows_one_line_per_record(audited: Path) -> None:
    result = dicomfs_audit(audited)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{when(T0)}  received  BAY3T@10.1.2.3 user=alice  patient DOE^JOHN (12345)  "
        "study 1.2.3  120 instances  15.0 MB  ok",
        f"{when(T0 + HOUR)}  rejected  INTRUDER@10.9.9.9  calling AE title INTRUDER is not allowed",
        f"{when(T0 + 2 * HOUR)}  read  bob  patient DOE^JOHN (12345)  study 1.2.3  "
        "series 1.2.3.1  3 instances  ok",
        f"{when(T0 + 3 * HOUR)}  pulled  PACS user=carol  patient 999  ok  from pacs: 2 instances",
        f"{when(T0 + 3 * HOUR)}  deleted  -  patient DOE^JANE (999)  study 1.2.4  "
        "series 1.2.4.1  2 instances  1.5 KB  ok  expired",
    ]


def test_dicomfs_audit_filters_as_asked(audited: Path) -> None:
    def shown(*args: str) -> list[str]:
        result = dicomfs_audit(audited, "--json", *args)
        assert result.returncode == 0, result.stderr
        return [record["event"] for record in json.loads(result.stdout)]

    assert shown("--patient-id", "12345") == ["received", "read"]
    assert shown("--event", "pulled") == ["pulled"]
    assert shown("--since", datetime.datetime.fromtimestamp(T0 + 2 * HOUR).isoformat()) == [
        "read", "pulled", "deleted"]  # fmt: skip
    assert shown("--since", "2026-11-26") == []
    assert shown("--patient-id", "999", "--event", "deleted") == ["deleted"]


def test_dicomfs_audit_json_gives_times_in_iso_8601(audited: Path) -> None:
    (record,) = json.loads(dicomfs_audit(audited, "--json", "--event", "received").stdout)
    assert record["at"] == when(T0)
    assert datetime.datetime.fromisoformat(record["at"]).timestamp() == T0
    assert (record["user"], record["instances"], record["bytes"]) == ("alice", 120, 15_728_640)


def test_dicomfs_audit_says_when_nothing_matches_and_what_a_bad_time_is(audited: Path) -> None:
    result = dicomfs_audit(audited, "--event", "read", "--patient-id", "999")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "no audit records match\n")
    result = dicomfs_audit(audited, "--since", "last week")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "'last week' is neither a date or time" in line
    assert "--since" in line
