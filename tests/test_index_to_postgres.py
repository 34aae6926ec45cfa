"""`dicomfs index --to URL`: a lab's SQLite index moved into PostgreSQL, every table with
its row ids, checked, in one transaction; the SQLite file only read."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dicomfs.dicom import corpus
from dicomfs.dicom.meta import InstanceMeta
from dicomfs.life import access, expiry
from dicomfs.store import views
from dicomfs.store.index import FileState, Index, Sender, audit, binding, to_postgres
from dicomfs.store.index import postgres_schema as pg
from dicomfs.store.index.postgres_engine import SCHEMA_LOCK
from dicomfs.store.index.to_postgres import COPIED, NOT_COPIED
from dicomfs.store.indexer import reconcile

from .postgres import TIMEOUT, wait_until

TIME = 1_700_000_000.25  # an access time with a fraction, to be copied exactly


def dicomfs(*args: str) -> subprocess.CompletedProcess[str]:
    """dicomfs as a user runs it, with the index wherever the command line says."""
    env = {key: value for key, value in os.environ.items() if key != "DICOMFS_INDEX"}
    return subprocess.run([sys.executable, "-m", "dicomfs", *args], capture_output=True,
                          text=True, env=env, timeout=TIMEOUT * 2)  # fmt: skip


def sqlite_file(store: Path) -> Path:
    return store / ".dicomfs" / "index.sqlite"


@dataclasses.dataclass(frozen=True)
class Lab:
    store: Path
    given: dict[str, int]  # table -> the highest row id SQLite ever gave (sqlite_sequence)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """A store indexed as a lab's is after a while: a corpus with awkward names and junk
    (skipped files), reads through the mount (access times, reads, read records), keeps,
    audit records, a deletion cut short (a doomed path), and rows deleted at the end of
    each table, so that the highest id ever given is above every row's."""
    store = tmp_path_factory.mktemp("lab") / "store"
    corpus.write_regular(store / "a", patients=3, studies=2, series=2, instances=3)
    corpus.write_awkward(store / "gen")
    with Index(store, url="") as index:
        reconcile(index, store)
        conn = index.conn
        instances = [row[0] for row in conn.execute("SELECT id FROM instances ORDER BY id")]
        with index.transaction():
            access.record(index, {instances[0]: (TIME, os.getuid()),
                                  instances[5]: (TIME + 3600.5, 4242)})  # fmt: skip
            (study_uid, series_uid) = conn.execute(
                "SELECT st.study_uid, se.series_uid FROM series se "
                "JOIN studies st ON st.id = se.study ORDER BY se.id LIMIT 1"
            ).fetchone()
            expiry.keep(index, study_uid, "study", None, "alice")
            expiry.keep(index, series_uid, "series", TIME + 86400 * 30, "bob")
            audit.append(conn, [
                audit.Record("received", at=TIME + 1, calling_aet="SCANNER", address="10.0.0.7",
                             called_aet="DICOMFS", user="tech\ttab", patient_id="ID00001",
                             patient_name="Müller^Jürgen", study_uid=study_uid, instances=3,
                             bytes=1234, detail="back\\slash\nnewline"),
                audit.Record("rejected", at=TIME + 2, outcome="not allowed: 10.9.9.9"),
            ])  # fmt: skip
        # A patient indexed last, then gone whole: its rows had the highest ids.
        for number in (1, 2):
            spec = corpus.Spec(patient_name="LAST^ONE", patient_id="LAST1", study_uid="9.9.1",
                               series_uid="9.9.1.1", sop_uid=f"9.9.1.1.{number}")  # fmt: skip
            corpus.write(store / "last" / f"{number}.dcm", spec)
        assert reconcile(index, store).indexed == 2
        for path in (store / "last").iterdir():
            path.unlink()
        assert reconcile(index, store).removed == 2
        with index.transaction():
            index.doom_instance(instances[1])  # deleted from the index, still on disk
        given = dict(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        for table in ("patients", "studies", "series", "instances"):
            (highest,) = conn.execute(f"SELECT max(id) FROM {table}").fetchone()
            assert given[table] > highest, table  # given once, then deleted
    return Lab(store, given)


def fingerprint(path: Path) -> tuple[str, int, int]:
    """Its bytes, its mtime and its size."""
    state = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), state.st_mtime_ns, state.st_size


def walk(conn: Any, node: views.Node, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every entry of a view, as tests/test_views.py walks them: its path and what a
    listing says of it."""
    for entry in views.list_entries(conn, node):
        yield f"{path}/{entry.name}", (entry.node, entry.attributes)
        if not views.is_file(entry.node):
            yield from walk(conn, entry.node, f"{path}/{entry.name}")


def answers(index: Index) -> dict[str, Any]:
    """What the commands and the mount ask of an index."""
    conn = index.conn
    times = {
        table: conn.execute(f"SELECT id, last_access FROM {table} ORDER BY id").fetchall()
        for table in ("instances", "series", "studies")
    }
    return {
        "studies": index.study_summaries(index.study_ids()),
        "counts": index.counts(),
        "totals": index.totals(),
        "keeps": expiry.kept(conn, TIME),
        "audit": audit.search(conn),
        "access": {table: [tuple(row) for row in rows] for table, rows in times.items()},
        "doomed": index.doomed(),
        "skipped": index.skipped_states(),
        "views": {view: list(walk(conn, views.top(view), view)) for view in views.VIEW_NAMES},
    }


@contextlib.contextmanager
def as_it_was(lab: Lab) -> Iterator[None]:
    """The store as before its move, for a look at its SQLite index (which every
    command is refused once the store is marked as in PostgreSQL)."""
    mark = binding.marker(lab.store)
    aside = mark.with_name("moved-aside")
    mark.rename(aside)
    try:
        yield
    finally:
        aside.rename(mark)


@pytest.fixture(autouse=True)
def unmoved(lab: Lab) -> Iterator[None]:
    """Each test moves the lab's store afresh: the mark a move leaves in the store
    (that its index is in PostgreSQL now) goes after each."""
    yield
    binding.marker(lab.store).unlink(missing_ok=True)


@pytest.fixture
def moved(lab: Lab, postgres_url: str) -> subprocess.CompletedProcess[str]:
    result = dicomfs("index", "--store", str(lab.store), "--to", postgres_url)
    assert result.returncode == 0, result.stderr
    return result


def test_every_table_but_the_journal_is_copied() -> None:
    made = {statement.split()[2] for statement in pg.tables_and_indexes()
            if statement.startswith("CREATE TABLE")}  # fmt: skip
    assert set(COPIED) | set(NOT_COPIED) == made


def test_the_moved_index_answers_as_the_sqlite_one(
    lab: Lab, postgres_url: str, moved: subprocess.CompletedProcess[str]
) -> None:
    with as_it_was(lab), Index(lab.store, url="", readonly=True) as before:
        expected = answers(before)
    with Index(lab.store, url=postgres_url, readonly=True) as after:
        found = answers(after)
        (journal,) = after.conn.execute("SELECT count(*) FROM changes").fetchone()
    for key in ("audit", "keeps", "doomed", "skipped"):
        assert expected[key], key  # the copy has something to prove
    assert any(last is not None for _, last in expected["access"]["instances"])
    for key in expected:
        assert found[key] == expected[key], key
    assert journal == 0  # mounts start afresh
    lines = moved.stdout.splitlines()
    assert any(line.split()[:2] == ["instances", str(expected["counts"]["instances"])]
               for line in lines)  # fmt: skip
    assert any(line.startswith("checked:") for line in lines)
    assert f'index = "{postgres_url}"' in moved.stdout  # what to do next


def test_a_new_row_gets_an_id_above_every_id_sqlite_ever_gave(
    lab: Lab, postgres_url: str, moved: subprocess.CompletedProcess[str]
) -> None:
    meta = InstanceMeta(
        sop_uid="9.9.9.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        transfer_syntax="1.2.840.10008.1.2.1", study_uid="9.9", series_uid="9.9.9",
        patient_name="NEW^PATIENT", patient_id="NEW1", patient_birth_date="", study_date="",
        study_time="", study_description="", accession="", modality="MR", station_name="",
        series_number=1, series_description="", instance_number=1,
    )  # fmt: skip
    with Index(lab.store, url=postgres_url) as index:
        with index.transaction():
            index.put_instance(meta, "new/1.dcm", FileState(10, 1), sender=Sender("NEW"))
            audit.append(index.conn, [audit.Record("received", calling_aet="NEW")])
        new = {
            "patients": "SELECT id FROM patients WHERE patient_id = 'NEW1'",
            "studies": "SELECT id FROM studies WHERE study_uid = '9.9'",
            "series": "SELECT id FROM series WHERE series_uid = '9.9.9'",
            "instances": "SELECT id FROM instances WHERE sop_uid = '9.9.9.1'",
        }
        for table, query in new.items():
            (row_id,) = index.conn.execute(query).fetchone()
            assert row_id == lab.given[table] + 1, table
        (newest_audit,) = index.conn.execute("SELECT max(id) FROM audit").fetchone()
        (counted,) = index.conn.execute(
            "SELECT instances FROM series_counts sc JOIN series se ON se.id = sc.series "
            "WHERE se.series_uid = '9.9.9'"
        ).fetchone()
    with as_it_was(lab), Index(lab.store, url="", readonly=True) as before:
        (highest_audit,) = before.conn.execute("SELECT max(id) FROM audit").fetchone()
    assert newest_audit == highest_audit + 1
    assert counted == 1  # the triggers count from now on


def test_the_audit_trail_stays_append_only(
    lab: Lab, postgres_url: str, moved: subprocess.CompletedProcess[str]
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for statement in ("UPDATE audit SET outcome = 'forged'", "DELETE FROM audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
        forged = conn.execute("SELECT count(*) FROM audit WHERE outcome = 'forged'").fetchone()
    assert forged == (0,)


def test_the_sqlite_file_is_only_read(lab: Lab, postgres_url: str) -> None:
    before = fingerprint(sqlite_file(lab.store))
    result = dicomfs("index", "--store", str(lab.store), "--to", postgres_url)
    assert result.returncode == 0, result.stderr
    assert fingerprint(sqlite_file(lab.store)) == before


def everything(url: str) -> dict[str, Any]:
    """Every table of the public schema, every row, and the next id of each sequence."""
    with psycopg.connect(url) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]  # fmt: skip
        found: dict[str, Any] = {
            table: sorted(map(repr, conn.execute(f'SELECT * FROM "{table}"'))) for table in tables
        }
        found["sequences"] = conn.execute(
            "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1"
        ).fetchall()
    return found


def test_a_database_that_holds_an_index_is_refused_and_left_as_it_was(
    lab: Lab, postgres_url: str, moved: subprocess.CompletedProcess[str]
) -> None:
    with Index(lab.store, url=postgres_url) as index, index.transaction():
        index.record_skipped("written/after.dcm", FileState(1, 1), "since the move")
    before = everything(postgres_url)
    result = dicomfs("index", "--store", str(lab.store), "--to", postgres_url)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "is in PostgreSQL already: --to copies a SQLite index" in line
    binding.marker(lab.store).unlink()  # another store's SQLite index, then
    result = dicomfs("index", "--store", str(lab.store), "--to", postgres_url)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "holds a dicomfs index already" in line
    assert "new, empty database" in line  # what to do
    assert everything(postgres_url) == before


def test_a_table_of_an_index_s_name_is_refused_too(lab: Lab, postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (what text)")
    result = dicomfs("index", "--store", str(lab.store), "--to", postgres_url)
    assert result.returncode == 1
    assert "tables of the index's names already (kept)" in result.stderr
    assert set(everything(postgres_url)) == {"kept", "sequences"}


def test_a_failure_halfway_leaves_the_database_as_it_was(
    lab: Lab, tmp_path: Path, postgres_url: str
) -> None:
    """A value PostgreSQL cannot store (a NUL in text), in the last table but one."""
    store = tmp_path / "store"
    (store / ".dicomfs").mkdir(parents=True)
    source, copy = sqlite3.connect(sqlite_file(lab.store)), sqlite3.connect(sqlite_file(store))
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    with Index(store, url="") as index, index.transaction():
        index.record_skipped("junk/nul.dcm", FileState(1, 1), "a NUL \x00 in it")
    result = dicomfs("index", "--store", str(store), "--to", postgres_url)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "skipped" in line
    assert everything(postgres_url) == {"sequences": []}


@pytest.mark.parametrize(
    ("table", "spoil", "said"),
    [
        ("kept", "UPDATE kept SET until = until + 1e-6 WHERE until IS NOT NULL", "differs"),
        ("reads", "DELETE FROM reads WHERE ctid IN (SELECT ctid FROM reads LIMIT 1)", "rows"),
    ],
)
def test_a_copy_that_differs_is_an_error_naming_the_table_and_is_undone(
    lab: Lab, postgres_url: str, monkeypatch: pytest.MonkeyPatch, table: str, spoil: str,
    said: str,
) -> None:  # fmt: skip
    copy_table = to_postgres._copy_table

    def spoiled(source: Any, conn: psycopg.Connection[Any], name: str, progress: Any) -> int:
        copied = copy_table(source, conn, name, progress)
        if name == table:
            assert conn.execute(spoil).rowcount == 1
        return copied

    monkeypatch.setattr(to_postgres, "_copy_table", spoiled)
    with pytest.raises(to_postgres.Mismatch, match=f"the table {table} .*{said}"):
        to_postgres.copy_index(lab.store, postgres_url)
    assert everything(postgres_url) == {"sequences": []}


def test_a_copy_waits_for_a_serve_making_the_index_and_is_then_refused(
    lab: Lab, postgres_url: str
) -> None:
    """A serve that starts on the database first makes the index under the lock a new
    index is made under; the copy waits for it, then finds the index there."""
    with psycopg.connect(postgres_url) as serve:
        serve.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK])
        env = {key: value for key, value in os.environ.items() if key != "DICOMFS_INDEX"}
        copying = subprocess.Popen(
            [sys.executable, "-m", "dicomfs", "index", "--store", str(lab.store), "--to",
             postgres_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            with psycopg.connect(postgres_url, autocommit=True) as watcher:
                waiting = (
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                assert wait_until(
                    lambda: (
                        copying.poll() is not None or watcher.execute(waiting).fetchone() == (1,)
                    )
                )
            assert copying.poll() is None, copying.communicate()  # it waits its turn
            for statement in pg.statements():
                serve.execute(statement)
            serve.commit()
            _, stderr = copying.communicate(timeout=TIMEOUT)
        finally:
            if copying.poll() is None:
                copying.kill()
                copying.wait()
    assert copying.returncode == 1, stderr
    assert "holds a dicomfs index already" in stderr
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM instances").fetchone() == (0,)


def test_json_says_what_was_copied(lab: Lab, postgres_url: str) -> None:
    result = dicomfs("index", "--store", str(lab.store), "--to", postgres_url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report["rows"]) == list(COPIED)
    assert report["checked"] is True
    assert report["next_ids"]["instances"] == lab.given["instances"] + 1
    assert report["where"] == postgres_url


def test_to_with_paths_is_a_usage_error(lab: Lab, tmp_path: Path, postgres_url: str) -> None:
    result = dicomfs("index", "--store", str(lab.store), "--to", postgres_url, str(tmp_path))
    assert result.returncode == 2
    assert "--to" in result.stderr
