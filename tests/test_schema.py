"""The schema as schema.py shows it is the schema every migrated index has."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from dicomfs.store.index import INDEX_DIR, INDEX_FILE, Index, IndexUnusable, migrations, schema


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
    }


def test_a_new_index_and_a_migrated_one_have_the_same_schema(tmp_path: Path) -> None:
    migrated = sqlite_utils.Database(sqlite3.connect(tmp_path / "old.sqlite"))
    for migration in migrations.MIGRATIONS:
        migration(migrated)
    made = sqlite_utils.Database(sqlite3.connect(tmp_path / "new.sqlite"))
    schema.create(made)
    assert shape(made) == shape(migrated)
    assert made.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION


def test_index_makes_a_new_store_from_the_current_schema(store: Path) -> None:
    with Index(store) as index:
        assert index.version() == schema.SCHEMA_VERSION
        assert shape(index.db) == shape(_created(store.parent / "reference.sqlite"))


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
