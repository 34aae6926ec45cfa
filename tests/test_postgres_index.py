"""The index in PostgreSQL: the same schema as SQLite's, writers that take turns across
machines, a doorbell for the mounts, an audit trail nobody can change, and clear
errors. (The index, view, search, query, expiry and journal tests run on both
engines: index_engine in conftest.py.)"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest
import sqlite_utils

from dicomfs.dicom import corpus
from dicomfs.dicom.meta import read_meta
from dicomfs.store.index import INDEX_VARIABLE, FileState, Index, IndexUnusable, Sender, audit
from dicomfs.store.index import postgres_schema as pg
from dicomfs.store.index.postgres_engine import PostgresEngine, numbered
from dicomfs.store.index.schema import SCHEMA_VERSION
from dicomfs.store.indexer import reconcile
from dicomfs.store.writer import IndexWriter

from .postgres import Cluster, free_port

# What PostgreSQL has beyond SQLite's schema, and why: TRUNCATE skips row triggers;
# the mounts' doorbell; the schema's version (SQLite's is a PRAGMA).
PG_ONLY_TRIGGERS = {"audit_append_only_truncate", "changes_ring"}
PG_ONLY_TABLES = {pg.VERSION_TABLE}


def sqlite_shape(store: Path) -> dict[str, object]:
    store.mkdir(exist_ok=True)
    with Index(store, url=""):
        pass
    db = sqlite_utils.Database(sqlite3.connect(store / ".dicomfs" / "index.sqlite"))
    try:
        tables = {
            name: [column.name for column in db[name].columns]
            for name in db.table_names()
            if name != "sqlite_sequence"
        }
        indexes = {
            index.name
            for name in tables
            for index in db[name].indexes
            if not index.name.startswith("sqlite_autoindex")
        }
        return {"tables": tables, "indexes": indexes, "triggers": {t.name for t in db.triggers}}
    finally:
        db.conn.close()


def postgres_shape(url: str) -> dict[str, object]:
    with psycopg.connect(url) as conn:
        tables: dict[str, list[str]] = {}
        for table, column in conn.execute(
            """SELECT table_name, column_name FROM information_schema.columns
               WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"""
        ):
            tables.setdefault(table, []).append(column)
        indexes = {
            name
            for (name,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
            )
            if not name.endswith(("_pkey", "_key"))  # those of PRIMARY KEY and UNIQUE
        }
        triggers = {
            name for (name,) in conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        }
    return {"tables": tables, "indexes": indexes, "triggers": triggers}


def test_postgresql_has_sqlite_s_tables_columns_indexes_and_triggers(
    store: Path, postgres_url: str, tmp_path: Path
) -> None:
    Index(store, url=postgres_url).close()
    made, translated = sqlite_shape(tmp_path / "beside"), postgres_shape(postgres_url)
    assert translated["tables"] == {
        **made["tables"],  # type: ignore[dict-item]
        pg.VERSION_TABLE: ["version", "store_id"],
    }
    assert set(translated["tables"]) - set(made["tables"]) == PG_ONLY_TABLES  # type: ignore[arg-type]
    assert translated["indexes"] == made["indexes"]
    assert translated["triggers"] == made["triggers"] | PG_ONLY_TRIGGERS  # type: ignore[operator]


def test_placeholders_are_numbered_outside_quoted_text() -> None:
    assert numbered("SELECT ? , ?") == "SELECT $1 , $2"
    assert numbered("WHERE a >= ?1 AND a < ?2 OR b = ?1") == "WHERE a >= $1 AND a < $2 OR b = $1"
    assert numbered("SELECT '?', \"a?\" -- why?\n, ?") == "SELECT '?', \"a?\" -- why?\n, $1"


def test_an_instance_indexed_comes_back_as_from_sqlite(store: Path, postgres_url: str) -> None:
    corpus.write_regular(store / "a", patients=1, studies=1, series=1, instances=2)
    paths = sorted((store / "a").rglob("*.dcm"))
    answers = []
    for url in ("", postgres_url):
        with Index(store, url=url) as index:
            with index.transaction():
                for path in paths:
                    meta = read_meta(str(path))
                    rel = str(path.relative_to(store))
                    index.put_instance(meta, rel, FileState(path.stat().st_size, 1),
                                       received_at=1e9, sender=Sender("SCANNER"))  # fmt: skip
            (summary,) = index.study_summaries(index.study_ids())
            answers.append((index.counts(), index.totals(), summary))
    assert answers[0] == answers[1]
    assert isinstance(answers[1][1]["bytes"], int)  # a sum, as SQLite gives it


def test_writers_take_turns_and_the_journal_grows_in_the_order_of_commits(
    store: Path, postgres_url: str
) -> None:
    """Two writers, as two machines' receivers: the second waits for the first to
    commit, so a mount that read the journal up to the first's rows never misses
    rows of the second's committed before them."""
    first, second = Index(store, url=postgres_url), Index(store, url=postgres_url)
    try:
        first.engine.begin()
        first.record_skipped("a.dcm", FileState(1, 1), "first")
        first.conn.execute("INSERT INTO changes (study) VALUES (1)")
        done = threading.Event()

        def write_second() -> None:
            with second.transaction():
                second.conn.execute("INSERT INTO changes (study) VALUES (2)")
            done.set()

        thread = threading.Thread(target=write_second)
        thread.start()
        with psycopg.connect(postgres_url, autocommit=True) as watcher:
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            deadline = time.monotonic() + 60
            while watcher.execute(waiting).fetchone() != (1,):  # the second waits its turn
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert not done.is_set()
        first.engine.commit()
        thread.join(60)
        assert done.is_set()
        rows = first.conn.execute("SELECT study FROM changes ORDER BY seq").fetchall()
        assert [row[0] for row in rows] == [1, 2]
    finally:
        first.close()
        second.close()


def test_a_commit_that_changes_the_tree_rings_every_mount_s_doorbell(
    store: Path, postgres_url: str
) -> None:
    corpus.write_regular(store / "a", patients=1, studies=1, series=1, instances=1)
    (path,) = (store / "a").rglob("*.dcm")
    with Index(store, url=postgres_url) as index:
        assert isinstance(index.engine, PostgresEngine)
        rung, stop = threading.Event(), threading.Event()
        bell = threading.Thread(target=index.engine.doorbell().run, args=(rung, stop))
        bell.start()
        try:
            assert rung.wait(60)  # listening: rung once, for whatever came meanwhile
            rung.clear()
            with index.transaction():
                index.record_skipped("b.dcm", FileState(1, 1), "not the tree")
            with index.transaction():
                meta = read_meta(str(path))
                index.put_instance(meta, "a/x.dcm", FileState(1, 1), received_at=1e9)
            assert rung.wait(60)
        finally:
            stop.set()
            bell.join(60)


def test_the_audit_trail_cannot_be_truncated_either(store: Path, postgres_url: str) -> None:
    with Index(store, url=postgres_url) as index:
        with index.transaction():
            audit.append(index.conn, [audit.Record("read", user="alice")])
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            index.conn.execute("TRUNCATE audit")
        assert [record["user"] for record in audit.search(index.conn)] == ["alice"]


def test_an_index_of_another_version_is_refused_with_what_to_do(
    store: Path, postgres_url: str
) -> None:
    Index(store, url=postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"UPDATE {pg.VERSION_TABLE} SET version = {SCHEMA_VERSION + 1}")
    for readonly in (True, False):
        with pytest.raises(IndexUnusable, match="run the same dicomfs on every machine"):
            Index(store, url=postgres_url, readonly=readonly)


def test_a_reader_of_a_database_with_no_index_is_told_to_make_one(
    store: Path, postgres_url: str
) -> None:
    with pytest.raises(IndexUnusable, match=r"no index at .* yet: run 'dicomfs index'"):
        Index(store, url=postgres_url, readonly=True)


def test_a_server_out_of_reach_is_one_line_that_never_shows_the_password(store: Path) -> None:
    url = f"postgresql://dicomfs:secret@127.0.0.1:{free_port()}/dicomfs?connect_timeout=5"
    with pytest.raises(IndexUnusable, match="cannot reach the index at") as raised:
        Index(store, url=url)
    assert "secret" not in str(raised.value)
    assert "dicomfs:***@127.0.0.1" in str(raised.value)


def test_a_nul_in_a_header_s_text_is_indexed_as_the_replacement_character(
    store: Path, postgres_url: str
) -> None:
    """A damaged header may hold a NUL, which SQLite keeps and PostgreSQL cannot."""
    corpus.write_regular(store / "a", patients=1, studies=1, series=1, instances=1)
    (path,) = (store / "a").rglob("*.dcm")
    meta = dataclasses.replace(read_meta(str(path)), patient_name="DOE\x00^JOHN")
    with Index(store, url=postgres_url) as index:
        with index.transaction():
            index.put_instance(meta, "a/x.dcm", FileState(1, 1), received_at=1e9)
        (summary,) = index.study_summaries(index.study_ids())
    assert summary.patient_name == "DOE\ufffd^JOHN"


def test_a_server_restarted_between_two_transactions_is_connected_to_again(
    store: Path,
) -> None:
    """A restart of the lab's server (or a network cut): the serve and the mounts go
    on once it is back, without a restart of their own."""
    with Cluster(fsync=True) as cluster:
        url = cluster.create_database()
        with Index(store, url=url) as writer, Index(store, url=url, readonly=False) as reader:
            with writer.transaction():
                writer.record_skipped("a.dcm", FileState(1, 1), "before")
            cluster.kill()  # the server dies: every connection with it
            with pytest.raises((psycopg.OperationalError, IndexUnusable)), writer.transaction():
                writer.record_skipped("b.dcm", FileState(1, 1), "while it is down")
            cluster.start()
            with writer.transaction():
                writer.record_skipped("c.dcm", FileState(1, 1), "after")
            assert set(reader.skipped_states()) == {"a.dcm", "c.dcm"}


def test_a_directory_that_is_not_the_index_s_store_is_refused_and_nothing_is_dropped(
    store: Path, postgres_url: str, tmp_path: Path
) -> None:
    """The shared file system not mounted yet (an empty mount point), or another
    store: a reconcile there would find no files and drop every row."""
    corpus.write_regular(store / "a", patients=1, studies=1, series=1, instances=2)
    with Index(store, url=postgres_url) as index:
        reconcile(index, store)
    empty, other = tmp_path / "not-mounted", tmp_path / "other"
    empty.mkdir()
    (other / ".dicomfs").mkdir(parents=True)
    (other / ".dicomfs" / "index-in-postgresql").write_text("someone-else\n")
    for directory, why in ((empty, "is not the store"), (other, "another store's")):
        for readonly in (True, False):
            with pytest.raises(IndexUnusable, match=why):
                Index(directory, url=postgres_url, readonly=readonly)
    assert not (empty / ".dicomfs").exists()
    with Index(store, url=postgres_url, readonly=True) as index:
        assert index.counts()["instances"] == 2


def test_a_command_that_forgets_the_index_is_told_where_it_is(
    store: Path, postgres_url: str
) -> None:
    Index(store, url=postgres_url).close()
    for readonly in (True, False):
        with pytest.raises(IndexUnusable, match="is in PostgreSQL"):
            Index(store, url="", readonly=readonly)  # what SQLite would have started
    assert not (store / ".dicomfs" / "index.sqlite").exists()


def test_what_the_writer_said_was_done_survives_a_crash_of_the_server(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver's Success waits for the writer: its commit must be in the server's
    log on disk by then, though the commit itself returned earlier (writer.py)."""
    with Cluster(fsync=True) as cluster:
        url = cluster.create_database()
        monkeypatch.setenv(INDEX_VARIABLE, url)
        writer = IndexWriter(store)
        try:
            for n in range(20):
                writer.run(lambda index, n=n: index.record_skipped(f"{n}.dcm", FileState(1, 1),
                                                                   "said done"))  # fmt: skip
            cluster.kill()  # the server dies at once, its unflushed log with it
            cluster.start()
        finally:
            writer.close()
        with Index(store, url=url, readonly=True) as index:
            assert len(index.skipped_states()) == 20
