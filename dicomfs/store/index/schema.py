"""The index's schema as it is now: every table, index and trigger, in one place.

A new index is made from CURRENT; an older one reaches the same schema through
migrations.py (tests/test_schema.py checks that both agree). Change both together:
a new migration appended there, and its result written here.
"""

from __future__ import annotations

import sqlite_utils

from .migrations import CHANGE_TRIGGERS, CHANGES, COUNTING_TRIGGERS, MIGRATIONS, SERIES_COUNTS

SCHEMA_VERSION = len(MIGRATIONS)

CURRENT = (
    """
-- One row per (PatientID, PatientName) pair: DICOM has no better patient key.
CREATE TABLE patients (
    id INTEGER PRIMARY KEY,
    patient_key TEXT NOT NULL UNIQUE,      -- PatientID + NUL + PatientName
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,            -- decoded with the file's charset
    birth_date TEXT NOT NULL,
    name_folded TEXT NOT NULL,             -- lower-case, accents removed, for search
    dir_name TEXT NOT NULL                 -- by-patient name before disambiguation
);
CREATE INDEX patients_patient_id ON patients(patient_id);
CREATE INDEX patients_dir_name ON patients(dir_name);
CREATE INDEX patients_patient_id_nocase ON patients(patient_id COLLATE NOCASE);

CREATE TABLE studies (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL UNIQUE,
    patient INTEGER NOT NULL REFERENCES patients(id),
    study_date TEXT NOT NULL,              -- YYYYMMDD or ''
    study_time TEXT NOT NULL,
    description TEXT NOT NULL,
    accession TEXT NOT NULL,
    dir_name TEXT NOT NULL,                -- by-patient: 20040609_Brain
    day_dir TEXT NOT NULL,                 -- by-modality: 20040609.DAY
    uid_dir TEXT NOT NULL,                 -- by-modality: <uid>.UID
    first_received REAL,                   -- these three summarise its series
    last_received REAL,                    -- (derived.py): directory times,
    last_access REAL                       -- by-received
);
CREATE INDEX studies_patient ON studies(patient, dir_name);
CREATE INDEX studies_date ON studies(study_date);
CREATE INDEX studies_accession ON studies(accession);
CREATE INDEX studies_uid_dir ON studies(uid_dir);
CREATE INDEX studies_first_received ON studies(first_received);
CREATE INDEX studies_accession_nocase ON studies(accession COLLATE NOCASE);

CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    series_uid TEXT NOT NULL UNIQUE,
    study INTEGER NOT NULL REFERENCES studies(id),
    modality TEXT NOT NULL,
    station_name TEXT NOT NULL,
    series_number INTEGER,
    description TEXT NOT NULL,
    dir_name TEXT NOT NULL,                -- by-patient: 000002_T1_axial
    modality_dir TEXT NOT NULL,            -- by-modality: MR0000.MOD
    station_dir TEXT NOT NULL,             -- by-modality: BWOW1.STA
    number_dir TEXT NOT NULL,              -- by-modality: 000002.SER
    last_received REAL,                    -- these two summarise its instances
    last_access REAL                       -- (derived.py): directory times, expiry
);
CREATE INDEX series_study ON series(study, dir_name);
CREATE INDEX series_by_modality ON series(modality_dir, station_dir, study);
CREATE INDEX series_last_access ON series(last_access);
CREATE INDEX series_last_received ON series(last_received);

CREATE TABLE instances (
    id INTEGER PRIMARY KEY,
    sop_uid TEXT NOT NULL UNIQUE,
    series INTEGER NOT NULL REFERENCES series(id),
    sop_class_uid TEXT NOT NULL,
    instance_number INTEGER,
    transfer_syntax TEXT NOT NULL,
    file_name TEXT NOT NULL,               -- in the views: 000007.dcm
    path TEXT NOT NULL UNIQUE,             -- relative to the store
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    received_at REAL NOT NULL,             -- unix time it entered the store
    last_access REAL,                      -- unix time of the last read, NULL if never
    sender_aet TEXT,                       -- calling AE title (receiver)
    sender_address TEXT,                   -- peer IP address (receiver)
    called_aet TEXT,                       -- our AE title as called (receiver)
    sender_user TEXT                       -- DICOM user identity (receiver)
);
CREATE INDEX instances_series ON instances(series, file_name);
CREATE INDEX instances_received_at ON instances(received_at);

-- What each series holds, by sender, counted by the triggers below: a study's summary.
"""
    + SERIES_COUNTS
    + COUNTING_TRIGGERS
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
