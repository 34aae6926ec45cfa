"""How an index made by an older dicomfs becomes current: migration N takes the
schema from version N to N+1. Append, never edit; schema.py shows the result."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import sqlite_utils

from .derived import set_words, summarise_times


def _schema_v1(db: sqlite_utils.Database) -> None:
    db.executescript(
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

        -- Words of folded patient names, so a name search is an index range scan.
        CREATE TABLE patient_words (
            word TEXT NOT NULL,
            patient INTEGER NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
            PRIMARY KEY (word, patient)
        ) WITHOUT ROWID;
        CREATE INDEX patient_words_patient ON patient_words(patient);

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
            uid_dir TEXT NOT NULL                  -- by-modality: <uid>.UID
        );
        CREATE INDEX studies_patient ON studies(patient, dir_name);
        CREATE INDEX studies_date ON studies(study_date);
        CREATE INDEX studies_accession ON studies(accession);
        CREATE INDEX studies_uid_dir ON studies(uid_dir);

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
            number_dir TEXT NOT NULL               -- by-modality: 000002.SER
        );
        CREATE INDEX series_study ON series(study, dir_name);
        CREATE INDEX series_by_modality ON series(modality_dir, station_dir, study);

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

        -- Files that could not be indexed, remembered so an unchanged one is not reparsed.
        CREATE TABLE skipped (
            path TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            reason TEXT NOT NULL
        );
        """
    )


def _schema_v2(db: sqlite_utils.Database) -> None:
    """Receipt and access times summarised per series and study, for directory times
    and the by-received view without scanning every instance."""
    db.executescript(
        """
        ALTER TABLE series ADD COLUMN last_received REAL;
        ALTER TABLE series ADD COLUMN last_access REAL;
        ALTER TABLE studies ADD COLUMN first_received REAL;
        ALTER TABLE studies ADD COLUMN last_received REAL;
        ALTER TABLE studies ADD COLUMN last_access REAL;
        CREATE INDEX studies_first_received ON studies(first_received);
        """
    )
    summarise_times(db.conn, db.conn.execute("SELECT id FROM series").fetchall())


def _schema_v3(db: sqlite_utils.Database) -> None:
    """The audit trail: who sent, read or deleted what, and when. Append-only."""
    db.executescript(
        """
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,                      -- unix time
            event TEXT NOT NULL,                   -- received, rejected, read, deleted
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
        """
    )


def _schema_v4(db: sqlite_utils.Database) -> None:
    """Expiry: studies and series kept from it, deletions in progress, reads audited."""
    db.executescript(
        """
        -- Exempt from expiry: a study or series, until a time or (NULL) for good.
        CREATE TABLE kept (
            uid TEXT PRIMARY KEY,                  -- StudyInstanceUID or SeriesInstanceUID
            level TEXT NOT NULL,                   -- study or series
            until REAL,
            by TEXT NOT NULL,
            at REAL NOT NULL
        );

        -- Files whose rows are gone but which may still be on disk: deleted first
        -- from the index (so no view shows half a series), then from the disk.
        -- What a crash leaves here is deleted at the next start, never re-indexed.
        CREATE TABLE doomed (path TEXT PRIMARY KEY) WITHOUT ROWID;

        -- Which user read which series on which day: the audit has one read record each.
        CREATE TABLE reads (
            series_uid TEXT NOT NULL,
            uid INTEGER NOT NULL,
            day TEXT NOT NULL,
            PRIMARY KEY (series_uid, uid, day)
        ) WITHOUT ROWID;

        CREATE INDEX series_last_access ON series(last_access);
        CREATE INDEX series_last_received ON series(last_received);
        """
    )


def _schema_v5(db: sqlite_utils.Database) -> None:
    """Search what users type: words of study and series descriptions, and patient IDs
    and accession numbers by prefix whatever their case, each an index range scan."""
    db.executescript(
        """
        -- Words of folded descriptions (see derived.set_words), kept in step with their rows.
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

        CREATE INDEX patients_patient_id_nocase ON patients(patient_id COLLATE NOCASE);
        CREATE INDEX studies_accession_nocase ON studies(accession COLLATE NOCASE);
        """
    )
    conn = db.conn
    for study_id, description in conn.execute("SELECT id, description FROM studies").fetchall():
        set_words(conn, "study_words", "study", study_id, description)
    for series_id, description in conn.execute("SELECT id, description FROM series").fetchall():
        set_words(conn, "series_words", "series", series_id, description)


# Each migration takes the schema from version N to N+1; append, never edit.
def _schema_v6(db: sqlite_utils.Database) -> None:
    """What each series holds, by sender (instances, bytes), counted by triggers on
    instances, so that find and index.html never count instances."""
    db.executescript(
        SERIES_COUNTS
        + """
        INSERT INTO series_counts (series, sender_aet, instances, bytes)
            SELECT series, coalesce(sender_aet, ''), count(*), sum(size)
            FROM instances GROUP BY 1, 2;
        """
        + COUNTING_TRIGGERS
    )


# Shared with schema.py: the same text for a new index and a migrated one.
SERIES_COUNTS = """
CREATE TABLE series_counts (
    series INTEGER NOT NULL REFERENCES series(id) ON DELETE CASCADE,
    sender_aet TEXT NOT NULL,              -- '' for instances not received over DICOM
    instances INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (series, sender_aet)
) WITHOUT ROWID;
"""


@dataclasses.dataclass(frozen=True)
class Trigger:
    """A trigger of the tree, in the SQL both engines speak (postgres_schema.py makes
    PostgreSQL's from the same)."""

    name: str
    event: str  # when it fires, on which table: AFTER INSERT ON instances
    body: str  # its statements, each ended by ";", on the rows NEW and OLD
    when: str = ""  # the condition on NEW and OLD under which it fires, if any

    def sqlite(self) -> str:
        when = f"\n    WHEN {self.when}" if self.when else ""
        return f"CREATE TRIGGER {self.name} {self.event}{when} BEGIN {self.body} END;\n"


_COUNT_IN = """
    INSERT INTO series_counts (series, sender_aet, instances, bytes)
        VALUES (NEW.series, coalesce(NEW.sender_aet, ''), 1, NEW.size)
        ON CONFLICT (series, sender_aet) DO UPDATE SET
            instances = series_counts.instances + 1,
            bytes = series_counts.bytes + excluded.bytes;
"""
_COUNT_OUT = """
    UPDATE series_counts SET instances = instances - 1, bytes = bytes - OLD.size
        WHERE series = OLD.series AND sender_aet = coalesce(OLD.sender_aet, '');
    DELETE FROM series_counts WHERE series = OLD.series AND instances = 0;
"""
COUNTING = (
    Trigger("instances_counted_in", "AFTER INSERT ON instances", _COUNT_IN),
    Trigger("instances_counted_out", "AFTER DELETE ON instances", _COUNT_OUT),
    Trigger("instances_recounted", "AFTER UPDATE OF series, size, sender_aet ON instances",
            _COUNT_OUT + _COUNT_IN),
)  # fmt: skip
COUNTING_TRIGGERS = "".join(trigger.sqlite() for trigger in COUNTING)


def _schema_v7(db: sqlite_utils.Database) -> None:
    """Row ids never given twice, and a journal of what changed in the tree, kept by
    triggers, so that each mount tells the kernel what it caches of it is stale.

    Each table of the tree is made anew with AUTOINCREMENT and its rows copied; the
    caller has foreign keys off, or dropping a table would delete what refers to it."""
    conn = db.conn
    for name, columns in TREE_TABLES.items():
        names = ", ".join(row[1] for row in conn.execute(f"PRAGMA table_info({name})"))
        conn.execute(f"CREATE TABLE {name}_v7 {columns}")
        conn.execute(f"INSERT INTO {name}_v7 ({names}) SELECT {names} FROM {name}")
        conn.execute(f"DROP TABLE {name}")  # its indexes and triggers with it
        conn.execute(f"ALTER TABLE {name}_v7 RENAME TO {name}")
    db.executescript(TREE_INDEXES + COUNTING_TRIGGERS + CHANGES + CHANGE_TRIGGERS)


# Shared with schema.py: the tree of patients, studies, series and instances. The
# mount names its files and directories by their row ids (a file's inode is its
# instance's row id), and a kernel may hold a name after its row is gone: a row id is
# never given twice (AUTOINCREMENT). A patient is one (PatientID, PatientName) pair:
# DICOM has no better patient key.
TREE_TABLES = {
    "patients": """(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_key TEXT NOT NULL UNIQUE,      -- PatientID + NUL + PatientName
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,            -- decoded with the file's charset
    birth_date TEXT NOT NULL,
    name_folded TEXT NOT NULL,             -- lower-case, accents removed, for search
    dir_name TEXT NOT NULL                 -- by-patient name before disambiguation
)""",
    "studies": """(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
)""",
    "series": """(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
)""",
    "instances": """(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
)""",
}
TREE_INDEXES = """
CREATE INDEX patients_patient_id ON patients(patient_id);
CREATE INDEX patients_dir_name ON patients(dir_name);
CREATE INDEX patients_patient_id_nocase ON patients(patient_id COLLATE NOCASE);
CREATE INDEX studies_patient ON studies(patient, dir_name);
CREATE INDEX studies_date ON studies(study_date);
CREATE INDEX studies_accession ON studies(accession);
CREATE INDEX studies_uid_dir ON studies(uid_dir);
CREATE INDEX studies_first_received ON studies(first_received);
CREATE INDEX studies_accession_nocase ON studies(accession COLLATE NOCASE);
CREATE INDEX series_study ON series(study, dir_name);
CREATE INDEX series_by_modality ON series(modality_dir, station_dir, study);
CREATE INDEX series_last_access ON series(last_access);
CREATE INDEX series_last_received ON series(last_received);
CREATE INDEX instances_series ON instances(series, file_name);
CREATE INDEX instances_received_at ON instances(received_at);
"""


# Shared with schema.py. Rows are written by the triggers below, whoever writes the
# index, and read by every mount (mount/changes.py). The journal keeps its newest
# CHANGES_KEPT rows at least: a mount that falls further behind starts afresh.
CHANGES_KEPT = 65536
# A read is told to the mounts when it is the first, or an hour after the last one
# they were told of, as relatime does for a disk's atime: a series copied again and
# again keeps the kernel's cache, and its atime lags its last read by an hour at most.
ATIME_STEP = 3600
CHANGES = """
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY,               -- the order of the changes
    study INTEGER,                         -- the study changed (NULL if unknown)
    series INTEGER,                        -- its series changed; NULL: the study itself
    instance INTEGER,                      -- this instance changed or went; NULL: one came
    times_only INTEGER NOT NULL DEFAULT 0  -- only its access time changed
);
"""
_STUDY_OF = "(SELECT study FROM series WHERE id = {}.series)"
_NEW_FILE = "INSERT INTO changes (study, series) VALUES ({study}, NEW.series);".format(
    study=_STUDY_OF.format("NEW")
)
_CHANGED_FILE = """
    INSERT INTO changes (study, series, instance) VALUES ({study}, {row}.series, {row}.id);
"""
_STUDY_CHANGED = "INSERT INTO changes (study) VALUES ({}.study);"
_SERIES_CHANGED = "INSERT INTO changes (study, series) VALUES ({row}.study, {row}.id);"
_SERIES_NAMED = ("study", "dir_name", "modality_dir", "station_dir", "number_dir")
_STUDY_NAMED = ("patient", "dir_name", "day_dir", "uid_dir", "first_received")
_FILE_SHOWN = ("series", "file_name", "path", "size", "mtime_ns", "received_at")


def _differs(columns: tuple[str, ...]) -> str:
    return " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in columns)


_FILE_OUT = _CHANGED_FILE.format(study=_STUDY_OF.format("OLD"), row="OLD")
_FILE_IN = _CHANGED_FILE.format(study=_STUDY_OF.format("NEW"), row="NEW")
_FILE_READ = f"""
    INSERT INTO changes (study, series, instance, times_only)
        VALUES ({_STUDY_OF.format("NEW")}, NEW.series, NEW.id, 1);
"""
CHANGING = (
    Trigger("changes_file_in", "AFTER INSERT ON instances", _NEW_FILE),
    Trigger("changes_file_out", "AFTER DELETE ON instances", _FILE_OUT),
    Trigger("changes_file_changed", f"AFTER UPDATE OF {', '.join(_FILE_SHOWN)} ON instances",
            _FILE_OUT + _FILE_IN, _differs(_FILE_SHOWN)),
    Trigger("changes_file_read", "AFTER UPDATE OF last_access ON instances", _FILE_READ,
            f"OLD.last_access IS NULL OR NEW.last_access >= OLD.last_access + {ATIME_STEP}"),
    Trigger("changes_series_in", "AFTER INSERT ON series",
            _STUDY_CHANGED.format("NEW") + _SERIES_CHANGED.format(row="NEW")),
    Trigger("changes_series_out", "AFTER DELETE ON series",
            _STUDY_CHANGED.format("OLD") + _SERIES_CHANGED.format(row="OLD")),
    Trigger("changes_series_renamed", f"AFTER UPDATE OF {', '.join(_SERIES_NAMED)} ON series",
            _STUDY_CHANGED.format("OLD") + _STUDY_CHANGED.format("NEW")
            + _SERIES_CHANGED.format(row="OLD"), _differs(_SERIES_NAMED)),
    Trigger("changes_study_in", "AFTER INSERT ON studies",
            "INSERT INTO changes (study) VALUES (NEW.id);"),
    Trigger("changes_study_out", "AFTER DELETE ON studies",
            "INSERT INTO changes (study) VALUES (OLD.id);"),
    Trigger("changes_study_renamed", f"AFTER UPDATE OF {', '.join(_STUDY_NAMED)} ON studies",
            "INSERT INTO changes (study) VALUES (NEW.id);", _differs(_STUDY_NAMED)),
    Trigger("changes_pruned", "AFTER INSERT ON changes",
            f"DELETE FROM changes WHERE seq <= NEW.seq - {CHANGES_KEPT};", "NEW.seq % 1024 = 0"),
)  # fmt: skip
CHANGE_TRIGGERS = "".join(trigger.sqlite() for trigger in CHANGING)


# Indexes no query can use (the times are only read as max() of two columns together,
# or in an expression): each cost every instance received, or every read, a page
# more in the index's WAL.
UNUSED_V8 = ("instances_received_at", "series_last_received", "series_last_access")


def _schema_v8(db: sqlite_utils.Database) -> None:
    """Fewer pages written for each instance received: indexes no query uses go."""
    for name in UNUSED_V8:
        db.execute(f"DROP INDEX IF EXISTS {name}")


# A patient is one (PatientID, PatientName) pair, and the pair itself is its key (made
# one string, with a NUL between them, it could not be stored in PostgreSQL). The
# unique index on the pair also serves the look-ups by PatientID.
PATIENTS_V9 = """(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,            -- decoded with the file's charset
    birth_date TEXT NOT NULL,
    name_folded TEXT NOT NULL,             -- lower-case, accents removed, for search
    dir_name TEXT NOT NULL,                -- by-patient name before disambiguation
    UNIQUE (patient_id, patient_name)
)"""
REPLACED_V9 = ("patients_patient_id",)


def _schema_v9(db: sqlite_utils.Database) -> None:
    """Patients keyed by their ID and name, not by one string made of both. The table
    is made anew, its ids kept, and so is the highest id ever given (AUTOINCREMENT);
    the caller has foreign keys off."""
    conn = db.conn
    (given,) = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'patients'"
    ).fetchone()
    columns = "id, patient_id, patient_name, birth_date, name_folded, dir_name"
    conn.execute(f"CREATE TABLE patients_v9 {PATIENTS_V9}")
    conn.execute(f"INSERT INTO patients_v9 ({columns}) SELECT {columns} FROM patients")
    conn.execute("DROP TABLE patients")  # its indexes with it
    conn.execute("ALTER TABLE patients_v9 RENAME TO patients")
    (now,) = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'patients'"
    ).fetchone()
    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'patients'")
    conn.execute(
        "INSERT INTO sqlite_sequence (name, seq) VALUES ('patients', ?)", (max(given, now),)
    )
    db.executescript(
        "".join(
            line
            for line in TREE_INDEXES.splitlines(keepends=True)
            if line.startswith("CREATE INDEX patients_")
            and not any(line.startswith(f"CREATE INDEX {name} ") for name in REPLACED_V9)
        )
    )


# The receipt times that series and studies summarise (derived.py), widened by each
# instance received; each column written only if it moves, as a page written for
# nothing is one more in the WAL for every instance.
_RECEIVED = """
    UPDATE series SET last_received = NEW.received_at
        WHERE id = NEW.series AND (last_received IS NULL OR last_received < NEW.received_at);
    UPDATE studies SET last_received = NEW.received_at
        WHERE id = (SELECT study FROM series WHERE id = NEW.series)
          AND (last_received IS NULL OR last_received < NEW.received_at);
    UPDATE studies SET first_received = NEW.received_at
        WHERE id = (SELECT study FROM series WHERE id = NEW.series)
          AND (first_received IS NULL OR first_received > NEW.received_at);
"""
RECEIVING = (
    Trigger("instances_received", "AFTER INSERT ON instances", _RECEIVED),
    Trigger("instances_received_again", "AFTER UPDATE OF received_at, series ON instances",
            _RECEIVED),
)  # fmt: skip
RECEIPT_TRIGGERS = "".join(trigger.sqlite() for trigger in RECEIVING)


def _schema_v10(db: sqlite_utils.Database) -> None:
    """The receipt times of series and studies kept by triggers: three statements
    fewer for each instance received, each a round trip to a PostgreSQL server."""
    db.executescript(RECEIPT_TRIGGERS)


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _schema_v1, _schema_v2, _schema_v3, _schema_v4, _schema_v5, _schema_v6, _schema_v7,
    _schema_v8, _schema_v9, _schema_v10,
]  # fmt: skip
