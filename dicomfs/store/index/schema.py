"""The index's schema as it is now: every table, index and trigger, in one place.

A new index is made from CURRENT; an older one reaches the same schema through
migrations.py (tests/test_schema.py checks that both agree). Change both together:
a new migration appended there, and its result written here.
"""

from __future__ import annotations

import sqlite_utils

from .migrations import (
    CHANGE_TRIGGERS,
    CHANGES,
    COUNTING_TRIGGERS,
    MIGRATIONS,
    PATIENTS_V9,
    RECEIPT_TRIGGERS,
    REPLACED_V9,
    SERIES_COUNTS,
    TREE_INDEXES,
    TREE_TABLES,
    UNUSED_V8,
)

SCHEMA_VERSION = len(MIGRATIONS)

# The tree as migration 7 made it, less the indexes migration 8 dropped, with the
# patients of migration 9.
_TABLES_NOW = {**TREE_TABLES, "patients": PATIENTS_V9}
_GONE = (*UNUSED_V8, *REPLACED_V9)
_TREE_NOW = "".join(
    f"CREATE TABLE {name} {columns};\n" for name, columns in _TABLES_NOW.items()
) + "".join(
    line
    for line in TREE_INDEXES.splitlines(keepends=True)
    if not any(line.startswith(f"CREATE INDEX {name} ") for name in _GONE)
)

CURRENT = (
    _TREE_NOW
    + """
-- What each series holds, by sender, counted by the triggers below: a study's summary.
"""
    + SERIES_COUNTS
    + COUNTING_TRIGGERS
    + """
-- The receipt times of series and studies, widened by each instance received.
"""
    + RECEIPT_TRIGGERS
    + """
-- Words of folded patient names and descriptions (derived.set_words), so a search
-- is an index range scan.
CREATE TABLE patient_words (
    word TEXT NOT NULL,
    patient INTEGER NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
    PRIMARY KEY (word, patient)
) WITHOUT ROWID;
CREATE INDEX patient_words_patient ON patient_words(patient);
CREATE TABLE study_words (
    word TEXT NOT NULL,
    study INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    PRIMARY KEY (word, study)
) WITHOUT ROWID;
CREATE INDEX study_words_study ON study_words(study);
CREATE TABLE series_words (
    word TEXT NOT NULL,
    series INTEGER NOT NULL REFERENCES series(id) ON DELETE CASCADE,
    PRIMARY KEY (word, series)
) WITHOUT ROWID;
CREATE INDEX series_words_series ON series_words(series);

-- Files that could not be indexed, remembered so an unchanged one is not reparsed.
CREATE TABLE skipped (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL
);

-- The audit trail: who sent, pulled, read or deleted what, and when. Append-only.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,                      -- unix time
    event TEXT NOT NULL,                   -- received, pulled, rejected, read, deleted
    calling_aet TEXT,
    address TEXT,
    called_aet TEXT,
    user TEXT,                             -- DICOM user identity, or local user
    patient_id TEXT,
    patient_name TEXT,
    study_uid TEXT,
    series_uid TEXT,
    instances INTEGER,
    bytes INTEGER,
    outcome TEXT NOT NULL,                 -- ok, or what went wrong
    detail TEXT
);
CREATE INDEX audit_at ON audit(at);
CREATE INDEX audit_patient ON audit(patient_id, at);
CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;

-- Exempt from expiry: a study or series, until a time or (NULL) for good.
CREATE TABLE kept (
    uid TEXT PRIMARY KEY,                  -- StudyInstanceUID or SeriesInstanceUID
    level TEXT NOT NULL,                   -- study or series
    until REAL,
    by TEXT NOT NULL,
    at REAL NOT NULL
);

-- Files whose rows are gone but which may still be on disk: deleted first from the
-- index (so no view shows half a series), then from the disk. What a crash leaves
-- here is deleted at the next start, never re-indexed.
CREATE TABLE doomed (path TEXT PRIMARY KEY) WITHOUT ROWID;

-- Which user read which series on which day: the audit has one read record each.
CREATE TABLE reads (
    series_uid TEXT NOT NULL,
    uid INTEGER NOT NULL,
    day TEXT NOT NULL,
    PRIMARY KEY (series_uid, uid, day)
) WITHOUT ROWID;

-- What changed in the tree, for the mounts (mount/changes.py), kept by triggers.
"""
    + CHANGES
    + CHANGE_TRIGGERS
)


def create(db: sqlite_utils.Database) -> None:
    """Make a new, empty index at the current version (inside the caller's transaction)."""
    db.executescript(CURRENT)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
