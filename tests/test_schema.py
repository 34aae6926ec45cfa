"""The schema as schema.py shows it is the schema every migrated index has."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from dicomfs.dicom import corpus
from dicomfs.dicom.meta import read_meta
from dicomfs.store.index import (
    INDEX_DIR,
    INDEX_FILE,
    FileState,
    Index,
    IndexUnusable,
    Sender,
    migrations,
    schema,
)
from dicomfs.store.indexer import reconcile


def shape(db: sqlite_utils.Database) -> dict[str, object]:
    """Every table's columns (in order, with types and constraints), indexes and
    triggers, as sqlite-utils introspects them."""
    return {
        "tables": {
            name: (
                [(c.name, c.type, c.notnull, c.default_value, c.is_pk) for c in db[name].columns],
                db[name].foreign_keys,
                sorted(
                    (index.name, tuple(index.columns), index.unique) for index in db[name].indexes
                ),
                db[name].use_rowid,
            )
            for name in db.table_names()
        },
        "triggers": sorted((trigger.name, trigger.table) for trigger in db.triggers),
        "never reusing row ids": sorted(
            name for name in db.table_names() if "AUTOINCREMENT" in db[name].schema.upper()
        ),
    }


def test_a_new_index_and_a_migrated_one_have_the_same_schema(tmp_path: Path) -> None:
    migrated = sqlite_utils.Database(sqlite3.connect(tmp_path / "old.sqlite"))
    for migration in migrations.MIGRATIONS:
        migration(migrated)
    made = sqlite_utils.Database(sqlite3.connect(tmp_path / "new.sqlite"))
    schema.create(made)
    assert shape(made) == shape(migrated)
    assert made.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION


def test_an_upgrade_to_7_keeps_every_row_and_a_row_id_is_never_given_twice(store: Path) -> None:
    """Version 7 makes the tree's tables anew (AUTOINCREMENT): their rows, and the rows
    that refer to them, must all survive; and the id of a row deleted is not given to
    the next one, as the mount names files and directories by row id."""
    path = store / INDEX_DIR / INDEX_FILE
    path.parent.mkdir(mode=0o700)
    old = sqlite_utils.Database(sqlite3.connect(path))
    for migration in migrations.MIGRATIONS[:6]:
        migration(old)
    old.executescript(
        """
        INSERT INTO patients VALUES (1, 'P1', 'P1', 'DOE^J', '', 'doe j', 'DOE_J_P1');
        INSERT INTO patient_words VALUES ('doe', 1), ('j', 1);
        INSERT INTO studies (id, study_uid, patient, study_date, study_time, description,
            accession, dir_name, day_dir, uid_dir) VALUES
            (1, '1.2', 1, '20040101', '', 'Brain', 'A1', 'd', '20040101.DAY', '1.2.UID');
        INSERT INTO series (id, series_uid, study, modality, station_name, series_number,
            description, dir_name, modality_dir, station_dir, number_dir) VALUES
            (1, '1.2.3', 1, 'MR', 'S', 1, 'T1', 's', 'MR0000.MOD', 'S.STA', '000001.SER');
        INSERT INTO instances (id, sop_uid, series, sop_class_uid, instance_number,
            transfer_syntax, file_name, path, size, mtime_ns, received_at) VALUES
            (1, '1.2.3.1', 1, '1.2.840', 1, '1.2.840.10008.1.2.1', 'a', 'a', 10, 1, 1),
            (2, '1.2.3.2', 1, '1.2.840', 2, '1.2.840.10008.1.2.1', 'b', 'b', 10, 1, 1);
        PRAGMA user_version = 6;
        """
    )
    old.conn.close()
    with Index(store) as index:  # upgraded on opening
        conn = index.conn
        assert index.version() == schema.SCHEMA_VERSION
        assert conn.execute("SELECT id, sop_uid FROM instances ORDER BY id").fetchall() == [
            (1, "1.2.3.1"), (2, "1.2.3.2")
        ]  # fmt: skip
        assert conn.execute("SELECT count(*) FROM patient_words").fetchone() == (2,)
        assert conn.execute("SELECT instances FROM series_counts").fetchone() == (2,)
        with index.transaction():
            index.remove_paths(["b"])  # the newest row goes
            conn.execute(
                """INSERT INTO instances (sop_uid, series, sop_class_uid, transfer_syntax,
                   file_name, path, size, mtime_ns, received_at)
                   VALUES ('1.2.3.3', 1, '1.2.840', '1.2.840.10008.1.2.1', 'c', 'c', 1, 1, 1)"""
            )
        assert conn.execute("SELECT id FROM instances WHERE sop_uid = '1.2.3.3'").fetchone() == (3,)


def test_an_upgrade_to_9_keys_patients_by_id_and_name_and_gives_no_patient_id_twice(
    store: Path,
) -> None:
    path = store / INDEX_DIR / INDEX_FILE
    path.parent.mkdir(mode=0o700)
    old = sqlite_utils.Database(sqlite3.connect(path))
    for migration in migrations.MIGRATIONS[:8]:
        migration(old)
    old.executescript(
        """
        INSERT INTO patients VALUES (1, 'P1' || char(0) || 'DOE^J', 'P1', 'DOE^J', '', 'doe j',
                                     'DOE_J_P1');
        INSERT INTO patients VALUES (2, 'P2' || char(0) || 'ROE^R', 'P2', 'ROE^R', '', 'roe r',
                                     'ROE_R_P2');
        INSERT INTO patient_words VALUES ('doe', 1), ('j', 1);
        INSERT INTO studies (id, study_uid, patient, study_date, study_time, description,
            accession, dir_name, day_dir, uid_dir) VALUES
            (1, '1.2', 1, '20040101', '', 'Brain', 'A1', 'd', '20040101.DAY', '1.2.UID');
        DELETE FROM patients WHERE id = 2;
        PRAGMA user_version = 8;
        """
    )
    old.conn.commit()
    old.conn.close()
    with Index(store) as index:  # upgraded on opening
        conn = index.conn
        assert conn.execute("SELECT id, patient_id, patient_name FROM patients").fetchall() == [
            (1, "P1", "DOE^J")
        ]
        assert conn.execute("SELECT patient FROM studies").fetchall() == [(1,)]
        assert conn.execute("SELECT count(*) FROM patient_words").fetchone() == (2,)
        with index.transaction():
            (new,) = conn.execute(
                """INSERT INTO patients (patient_id, patient_name, birth_date, name_folded,
                   dir_name) VALUES ('P3', 'X', '', 'x', 'X_P3') RETURNING id"""
            ).fetchone()
        assert new == 3  # not 2: the mount may still name the patient that had it
        with pytest.raises(sqlite3.IntegrityError), index.transaction():
            conn.execute(
                """INSERT INTO patients (patient_id, patient_name, birth_date, name_folded,
                   dir_name) VALUES ('P1', 'DOE^J', '', 'doe j', 'DOE_J_P1')"""
            )


def test_index_makes_a_new_store_from_the_current_schema(store: Path) -> None:
    with Index(store) as index:
        assert index.version() == schema.SCHEMA_VERSION
        assert shape(index.engine.db) == shape(_created(store.parent / "reference.sqlite"))


def _created(path: Path) -> sqlite_utils.Database:
    db = sqlite_utils.Database(sqlite3.connect(path))
    schema.create(db)
    return db


def test_a_read_only_index_never_writes(store: Path) -> None:
    with Index(store) as index:
        index.conn.execute("INSERT INTO doomed (path) VALUES ('a')")
    with Index(store, readonly=True) as reader:
        with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only"):
            reader.conn.execute("DELETE FROM doomed")
        assert reader.conn.execute("SELECT path FROM doomed").fetchall() == [("a",)]


def test_a_reader_refuses_an_index_an_older_dicomfs_made_and_a_command_upgrades_it(
    store: Path,
) -> None:
    (store / INDEX_DIR).mkdir(mode=0o700)
    old = sqlite_utils.Database(sqlite3.connect(store / INDEX_DIR / INDEX_FILE))
    for migration in migrations.MIGRATIONS[:-1]:
        migration(old)
    old.execute(f"PRAGMA user_version = {len(migrations.MIGRATIONS) - 1}")
    old.conn.commit()
    old.close()
    with pytest.raises(IndexUnusable, match="older dicomfs"):
        Index(store, readonly=True)
    Index.upgrade(store)
    with Index(store, readonly=True) as reader:
        assert reader.version() == schema.SCHEMA_VERSION


def counted(index: Index) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """What the triggers keep, and what counting the instances gives, for every series."""
    kept = index.conn.execute(
        """SELECT se.id, coalesce(sum(sc.instances), 0), coalesce(sum(sc.bytes), 0),
                  (SELECT group_concat(sender_aet || ':' || instances, ',') FROM
                   (SELECT * FROM series_counts WHERE series = se.id ORDER BY sender_aet))
           FROM series se LEFT JOIN series_counts sc ON sc.series = se.id
           GROUP BY se.id ORDER BY se.id"""
    ).fetchall()
    counts = index.conn.execute(
        """SELECT se.id, count(i.id), coalesce(sum(i.size), 0),
                  (SELECT group_concat(aet || ':' || n, ',') FROM
                   (SELECT coalesce(sender_aet, '') AS aet, count(*) AS n FROM instances
                    WHERE series = se.id GROUP BY 1 ORDER BY 1))
           FROM series se LEFT JOIN instances i ON i.series = se.id
           GROUP BY se.id ORDER BY se.id"""
    ).fetchall()
    return kept, counts


def test_what_a_series_holds_stays_counted_through_every_kind_of_write(store: Path) -> None:
    """find and index.html read a series' counts, never its instances: they must agree
    after a receipt, a replacement, a move to another series, a deletion, an expiry."""
    corpus.write_regular(store / "a", patients=2, studies=1, series=2, instances=3)
    with Index(store) as index:
        reconcile(index, store)
        assert counted(index)[0] == counted(index)[1]
        victim = sorted((store / "a").rglob("*.dcm"))[0]
        meta = read_meta(str(victim))
        # Received again over DICOM from two senders: larger, then in another series.
        rel = str(victim.relative_to(store))
        for aet, series_uid in (("CT1", meta.series_uid), ("MR7", meta.series_uid + ".9")):
            moved = dataclasses.replace(meta, series_uid=series_uid)
            with index.transaction():
                index.put_instance(moved, rel, FileState(99_999, 1), sender=Sender(aet=aet))
            assert counted(index)[0] == counted(index)[1]
        with index.transaction():
            index.remove_paths(
                [str(p.relative_to(store)) for p in list((store / "a").rglob("*.dcm"))[1:3]]
            )
        assert counted(index)[0] == counted(index)[1]
        (series_id,) = index.conn.execute("SELECT id FROM series LIMIT 1").fetchone()
        with index.transaction():
            index.doom_series(series_id)
        kept, counts = counted(index)
        assert kept == counts
        assert sum(row[1] for row in kept) == index.counts()["instances"]
