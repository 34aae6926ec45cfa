"""Last access and expiry: what goes, when, and that nothing else does."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dicomfs.cli import timeparse
from dicomfs.dicom import corpus
from dicomfs.life import access, expiry
from dicomfs.service import ExpiryOptions, sweeper
from dicomfs.store.index import Index
from dicomfs.store.indexer import check, reconcile
from dicomfs.store.writer import IndexWriter

pytestmark = pytest.mark.usefixtures("index_engine")

DAY = 86400.0


def old_store(store: Path, age_days: float = 10) -> dict[str, list[Path]]:
    """Two patients, one study of two series each, all received `age_days` ago."""
    corpus.write_regular(store, patients=2, studies=1, series=2, instances=3)
    then = time.time() - age_days * DAY
    by_series: dict[str, list[Path]] = {}
    for path in store.rglob("*.dcm"):
        os.utime(path, (then, then))
        series_uid = path.name.split(".", 1)[1].rsplit(".", 2)[0]  # MR.<series uid>.<n>.dcm
        by_series.setdefault(series_uid, []).append(path)
    with Index(store) as index:
        reconcile(index, store)
    return by_series


def dicomfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomfs", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def series_uids(store: Path) -> set[str]:
    with Index(store, readonly=True) as index:
        return {row[0] for row in index.conn.execute("SELECT series_uid FROM series")}


def test_a_series_is_due_when_untouched_for_the_retention(store: Path) -> None:
    by_series = old_store(store, age_days=10)
    with Index(store) as index:
        now = time.time()
        assert {s.series_uid for s in expiry.due(index.conn, now, 14 * DAY)} == set()
        assert {s.series_uid for s in expiry.due(index.conn, now, 7 * DAY)} == set(by_series)
        # A read yesterday saves one series only.
        (first, *_) = sorted(by_series)
        instance = index.conn.execute(
            "SELECT i.id FROM instances i JOIN series se ON se.id = i.series "
            "WHERE se.series_uid = ? LIMIT 1", (first,)).fetchone()[0]  # fmt: skip
        log = access.AccessLog()
        log.note(instance, os.getuid(), now - DAY)
        with index.transaction():
            access.record(index, log.take())
        due = {s.series_uid for s in expiry.due(index.conn, now, 7 * DAY)}
        assert due == set(by_series) - {first}
        # ... and it is due six days after that read.
        later = {s.series_uid for s in expiry.due(index.conn, now + 6.5 * DAY, 7 * DAY)}
        assert first in later


def test_expire_dry_run_lists_with_sizes_and_deletes_nothing(store: Path) -> None:
    by_series = old_store(store)
    result = dicomfs("expire", "--store", str(store), "--dry-run", "--json")
    listed = json.loads(result.stdout)
    assert {s["series_uid"] for s in listed} == set(by_series)
    assert all(s["bytes"] > 0 and s["instances"] == 3 for s in listed)
    assert series_uids(store) == set(by_series)
    # "What goes by Friday?" at a time when nothing is old enough yet:
    early = time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() - 5 * DAY))
    result = dicomfs("expire", "--store", str(store), "--dry-run", "--now", early, "--json")
    assert json.loads(result.stdout) == []
    # A later --now without --dry-run would delete early: refused.
    result = dicomfs("expire", "--store", str(store), "--now", "2999-01-01")
    assert result.returncode != 0
    assert "--dry-run" in result.stderr


def test_expire_deletes_whole_series_but_not_kept_ones_and_audits(store: Path) -> None:
    by_series = old_store(store)
    with Index(store, readonly=True) as index:
        study = index.conn.execute("SELECT study_uid FROM studies ORDER BY study_uid").fetchone()
    kept_result = dicomfs("keep", "--store", str(store), study[0])
    assert kept_result.returncode == 0, kept_result.stderr
    assert study[0] in dicomfs("keep", "--store", str(store), "--list").stdout
    result = dicomfs("expire", "--store", str(store))
    assert result.returncode == 0, result.stderr
    with Index(store, readonly=True) as index:
        left = index.conn.execute(
            "SELECT DISTINCT st.study_uid FROM series se JOIN studies st ON st.id = se.study"
        ).fetchall()
        deleted = json.loads(dicomfs("audit", "--store", str(store), "--event", "deleted",
                                     "--json").stdout)  # fmt: skip
    assert left == [study]
    gone = set(by_series) - series_uids(store)
    assert len(gone) == 2
    for series_uid in gone:
        assert not any(p.exists() for p in by_series[series_uid])
    assert sorted(r["series_uid"] for r in deleted) == sorted(gone)
    assert all(r["instances"] == 3 and r["bytes"] > 0 for r in deleted)
    assert all(str(r["outcome"]).startswith("expired") for r in deleted)


def test_keep_until_a_date_lapses(store: Path) -> None:
    old_store(store)
    with Index(store) as index:
        (series_uid,) = index.conn.execute("SELECT series_uid FROM series LIMIT 1").fetchone()
        expiry.keep(index, series_uid, "series", time.time() + 3 * DAY, "me")
        now = time.time()
        assert series_uid not in {s.series_uid for s in expiry.due(index.conn, now, 7 * DAY)}
        later = now + 4 * DAY
        assert series_uid in {s.series_uid for s in expiry.due(index.conn, later, 7 * DAY)}


def test_a_deletion_cut_short_by_a_crash_is_finished_never_undone(store: Path) -> None:
    by_series = old_store(store)
    victim = sorted(by_series)[0]
    with Index(store) as index, index.transaction():
        (series_id,) = index.conn.execute(
            "SELECT id FROM series WHERE series_uid = ?", (victim,)).fetchone()  # fmt: skip
        index.doom_series(series_id)  # rows gone; the crash comes before the files go
    assert all(p.exists() for p in by_series[victim])
    with Index(store) as index:
        report = reconcile(index, store)
    assert report.indexed == 0
    assert not any(p.exists() for p in by_series[victim])
    assert victim not in series_uids(store)


def test_check_reports_every_disagreement_and_repair_fixes_them(store: Path) -> None:
    by_series = old_store(store)
    files = sorted(p for paths in by_series.values() for p in paths)
    files[0].unlink()  # a row without its file
    with files[1].open("ab") as handle:  # changed since indexed
        handle.write(b"\0\0")
    corpus.write(store / "late.dcm", corpus.Spec())  # a file without a row
    with Index(store, readonly=True) as index:
        found = check(index, store)
    assert found.missing == [str(files[0].relative_to(store))]
    assert found.changed == [str(files[1].relative_to(store))]
    assert found.unindexed == ["late.dcm"]
    result = dicomfs("check", "--store", str(store))
    assert result.returncode == 1
    assert "row without its file" in result.stdout
    assert dicomfs("check", "--store", str(store), "--repair").returncode == 0
    assert dicomfs("check", "--store", str(store)).returncode == 0


def test_the_sweeper_in_serve_expires_on_its_interval(store: Path) -> None:
    by_series = old_store(store)
    writer = IndexWriter(store)

    waits: list[float] = []

    class Intervals:
        """The sweeper's stop event: each wait is one interval gone by, the third stops."""

        def wait(self, timeout: float) -> bool:
            waits.append(timeout)
            if len(waits) == 1:
                assert series_uids(store) == set(by_series)  # nothing before the first interval
            return len(waits) == 3

    with Index(store) as index:
        turn = index.engine.sweeper_turn()  # this serve's: it is the only one
    task = sweeper(store, writer, ExpiryOptions(retention=7 * DAY, interval=300), turn)
    try:
        task(Intervals())  # type: ignore[arg-type]
    finally:
        turn.close()
        writer.close()
    assert waits == [300, 300, 300]
    assert series_uids(store) == set()


def test_keep_takes_a_directory_of_any_view_or_a_uid(store: Path, tmp_path: Path) -> None:
    old_store(store)
    mountpoint = tmp_path / "mnt"  # resolved through the index: no mount needed
    with Index(store, readonly=True) as index:
        conn = index.conn
        study_uid, series_uid = conn.execute(
            "SELECT st.study_uid, se.series_uid FROM series se JOIN studies st "
            "ON st.id = se.study LIMIT 1").fetchone()  # fmt: skip
        assert expiry.resolve(conn, study_uid, mountpoint) == (study_uid, "study")
        assert expiry.resolve(conn, series_uid, mountpoint) == (series_uid, "series")
        study_dir = mountpoint / "by-uid" / study_uid
        assert expiry.resolve(conn, str(study_dir), mountpoint) == (study_uid, "study")
        series_dir = study_dir / series_uid
        assert expiry.resolve(conn, str(series_dir), mountpoint) == (series_uid, "series")
        for wrong in ("1.2.3.4", str(mountpoint / "by-patient"), "/elsewhere/x"):
            with pytest.raises(expiry.NotFound):
                expiry.resolve(conn, wrong, mountpoint)


def one_series(store: Path) -> str:
    with Index(store, readonly=True) as index:
        (uid,) = index.conn.execute("SELECT series_uid FROM series ORDER BY series_uid").fetchone()
    return str(uid)


def due_now(store: Path) -> set[str]:
    result = dicomfs("expire", "--store", str(store), "--dry-run", "--json")
    return {series["series_uid"] for series in json.loads(result.stdout)}


def test_keep_until_a_duration_keeps_that_long_from_now(store: Path) -> None:
    old_store(store)
    series_uid = one_series(store)
    result = dicomfs("keep", "--store", str(store), series_uid, "--until", "30d")
    assert result.returncode == 0, result.stderr
    assert series_uid not in due_now(store)
    (line,) = dicomfs("keep", "--store", str(store), "--list").stdout.splitlines()
    until = datetime.datetime.fromisoformat(line.split("until ")[1].split(",")[0])
    assert until.timestamp() == pytest.approx(time.time() + 30 * DAY, abs=600)


def test_keep_until_a_past_date_is_an_error_that_changes_nothing(store: Path) -> None:
    old_store(store)
    series_uid = one_series(store)
    assert dicomfs("keep", "--store", str(store), series_uid).returncode == 0
    before = dicomfs("keep", "--store", str(store), "--list").stdout
    result = dicomfs("keep", "--store", str(store), series_uid, "--until", "2020-01-01")
    assert result.returncode != 0
    (line,) = result.stderr.splitlines()
    assert "in the past" in line
    assert dicomfs("keep", "--store", str(store), "--list").stdout == before
    assert "for good" in before


def test_a_time_limited_keep_replacing_one_for_good_says_so(store: Path) -> None:
    old_store(store)
    series_uid = one_series(store)
    assert dicomfs("keep", "--store", str(store), series_uid).returncode == 0
    result = dicomfs("keep", "--store", str(store), series_uid, "--until", "2d")
    assert result.returncode == 0, result.stderr
    assert "replacing for good" in result.stdout


def test_a_lapsed_keep_stays_listed_as_lapsed_until_dropped(store: Path) -> None:
    old_store(store)
    series_uid = one_series(store)
    with Index(store) as index:
        expiry.keep(index, series_uid, "series", time.time() - DAY, "alice")
    (line,) = dicomfs("keep", "--store", str(store), "--list").stdout.splitlines()
    assert series_uid in line
    assert "LAPSED" in line
    assert "alice" in line
    assert series_uid in due_now(store)
    # Expired, it is no longer in the store; its keep is still listed, and can be dropped.
    assert dicomfs("expire", "--store", str(store)).returncode == 0
    (line,) = dicomfs("keep", "--store", str(store), "--list").stdout.splitlines()
    assert "LAPSED" in line
    assert "no longer in the store" in line
    assert dicomfs("keep", "--store", str(store), "--drop", series_uid).returncode == 0
    result = dicomfs("keep", "--store", str(store), "--list")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "nothing is kept\n")


def test_future_moments() -> None:
    now = 1_800_000_000.0
    assert timeparse.future_moment("30d", now) == now + 30 * DAY
    assert timeparse.future_moment("36h", now) == now + 36 * 3600
    # A date alone: until that day is over, local time.
    end = datetime.datetime(2030, 1, 1, 23, 59, 59, 999999).timestamp()
    assert timeparse.future_moment("2030-01-01", now) == end
    assert timeparse.future_moment("2030-01-01T18:00", now) == datetime.datetime(
        2030, 1, 1, 18).timestamp()  # fmt: skip
    for past in ("2020-01-01", "2027-01-15T08:00", "0d"):
        with pytest.raises(ValueError, match=r"in the past|no time"):
            timeparse.future_moment(past, now)


def test_expire_by_hand_under_a_day_asks_for_yes(store: Path) -> None:
    by_series = old_store(store, age_days=0.5)
    result = dicomfs("expire", "--store", str(store), "--retention", "6h")
    assert result.returncode != 0
    (line,) = result.stderr.splitlines()
    assert "--yes" in line
    assert series_uids(store) == set(by_series)
    result = dicomfs("expire", "--store", str(store), "--retention", "6h", "--yes")
    assert result.returncode == 0, result.stderr
    assert series_uids(store) == set()


def test_expire_json_gives_times_in_iso_8601(store: Path) -> None:
    old_store(store)
    listed = json.loads(dicomfs("expire", "--store", str(store), "--dry-run", "--json").stdout)
    for series in listed:
        assert datetime.datetime.fromisoformat(series["last_used"]).tzinfo is not None
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", series["study_date"])


def test_a_time_alone_is_today() -> None:
    now = datetime.datetime(2026, 11, 25, 20, 15).timestamp()
    for parse in (timeparse.moment, timeparse.moment_ahead):
        assert parse("19:36", now) == datetime.datetime(2026, 11, 25, 19, 36).timestamp()
        assert parse("9:05:30", now) == datetime.datetime(2026, 11, 25, 9, 5, 30).timestamp()
    assert timeparse.future_moment("23:00", now) == datetime.datetime(2026, 11, 25, 23).timestamp()
    for wrong in ("25:00", "19:61", "19"):
        with pytest.raises(ValueError, match="neither a date or time"):
            timeparse.moment(wrong, now)


def test_expire_now_as_a_duration_is_that_long_from_now(store: Path) -> None:
    by_series = old_store(store, age_days=3)
    assert due_now(store) == set()
    result = dicomfs("expire", "--store", str(store), "--dry-run", "--now", "5d", "--json")
    assert {series["series_uid"] for series in json.loads(result.stdout)} == set(by_series)
    result = dicomfs("expire", "--store", str(store), "--dry-run", "--now", "3d", "--json")
    assert json.loads(result.stdout) == []
    assert "from now" in dicomfs("expire", "-h").stdout


def test_keep_until_a_date_keeps_to_the_end_of_that_day(store: Path) -> None:
    old_store(store)
    series_uid = one_series(store)
    day = datetime.date.today() + datetime.timedelta(days=10)
    result = dicomfs("keep", "--store", str(store), series_uid, "--until", day.isoformat())
    assert result.returncode == 0, result.stderr
    assert f"until {day.isoformat()}T23:59:59" in result.stdout
    (line,) = dicomfs("keep", "--store", str(store), "--list").stdout.splitlines()
    assert f"until {day.isoformat()}T23:59:59" in line

    def due_at(when: str) -> set[str]:
        result = dicomfs("expire", "--store", str(store), "--dry-run", "--now", when, "--json")
        return {series["series_uid"] for series in json.loads(result.stdout)}

    assert series_uid not in due_at(f"{day.isoformat()}T23:30")
    assert series_uid in due_at((day + datetime.timedelta(days=1)).isoformat())
    assert "end of that day" in dicomfs("keep", "-h").stdout


def test_expire_lists_by_patient_study_and_series_number(store: Path) -> None:
    """Listed least recently used first, a patient's series would be scattered."""
    order = [(patient, number) for patient in ("ALPHA^A", "BRAVO^B") for number in (1, 2, 10)]
    for age, (patient, number) in enumerate(reversed(order)):
        path = store / f"{patient[0]}{number}.dcm"
        corpus.write(path, corpus.Spec(patient_name=patient, patient_id=patient[0],
                                       study_uid=f"1.2.4.{ord(patient[0])}",
                                       series_uid=f"1.2.3.{ord(patient[0])}.{number}",
                                       series_number=number))  # fmt: skip
        then = time.time() - (10 + age) * DAY
        os.utime(path, (then, then))
    with Index(store) as index:
        reconcile(index, store)
    result = dicomfs("expire", "--store", str(store), "--dry-run")
    listed = [line.split("  ")[-1] for line in result.stdout.splitlines()]
    assert listed == [f"1.2.3.{ord(patient[0])}.{number}" for patient, number in order]
    assert "  1 instance  " in result.stdout.splitlines()[0]
