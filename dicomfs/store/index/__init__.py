"""The SQLite index over the store: schema, migrations and typed queries.

Knows nothing of FUSE or views. The files on disk are the truth; this is a
cache of their headers that `dicomfs index` keeps in step with them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from ...dicom import names
from ...dicom.meta import InstanceMeta, fold
from .. import modes

INDEX_DIR = ".dicomfs"
INDEX_FILE = "index.sqlite"


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
    _summarise_times(db.conn, db.conn.execute("SELECT id FROM series").fetchall())


def _summarise_times(conn: sqlite3.Connection, series_rows: Iterable[tuple[int]]) -> None:
    """Recompute the time summaries of these series and of their studies."""
    studies = set()
    for (series_id,) in series_rows:
        row = conn.execute(
            """UPDATE series SET
                   last_received = (SELECT max(received_at) FROM instances WHERE series = ?1),
                   last_access = (SELECT max(last_access) FROM instances WHERE series = ?1)
               WHERE id = ?1 RETURNING study""",
            (series_id,),
        ).fetchone()
        if row:
            studies.add(row[0])
    for study_id in studies:
        _summarise_study_times(conn, study_id)


def _summarise_study_times(conn: sqlite3.Connection, study_id: int) -> None:
    conn.execute(
        """UPDATE studies SET
               first_received = (SELECT min(i.received_at) FROM series se
                                 JOIN instances i ON i.series = se.id WHERE se.study = ?1),
               last_received = (SELECT max(last_received) FROM series WHERE study = ?1),
               last_access = (SELECT max(last_access) FROM series WHERE study = ?1)
           WHERE id = ?1""",
        (study_id,),
    )


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
        -- Words of folded descriptions (see _set_words), kept in step with their rows.
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
        _set_words(conn, "study_words", "study", study_id, description)
    for series_id, description in conn.execute("SELECT id, description FROM series").fetchall():
        _set_words(conn, "series_words", "series", series_id, description)


def _set_words(
    conn: sqlite3.Connection, table: str, column: str, row_id: int, description: str
) -> None:
    """The words of a study's or series' description, folded as names are, replacing
    those it had (its rows' deletion takes them along: ON DELETE CASCADE)."""
    conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (row_id,))
    conn.executemany(
        f"INSERT OR IGNORE INTO {table} (word, {column}) VALUES (?, ?)",
        ((word, row_id) for word in set(fold(description).split())),
    )


# Each migration takes the schema from version N to N+1; append, never edit.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _schema_v1, _schema_v2, _schema_v3, _schema_v4, _schema_v5,
]  # fmt: skip
SCHEMA_VERSION = len(MIGRATIONS)


class IndexUnusable(Exception):
    """The index cannot be used (newer schema, corrupt file)."""


@dataclasses.dataclass(frozen=True, slots=True)
class FileState:
    """What the index knows of one path: enough to skip it when unchanged."""

    size: int
    mtime_ns: int


@dataclasses.dataclass(frozen=True, slots=True)
class Sender:
    aet: str | None = None
    address: str | None = None
    called_aet: str | None = None
    user: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SeriesIdentity:
    """Whose series it is, as the audit trail names it (the fields of audit.Record)."""

    series_uid: str
    study_uid: str
    patient_id: str
    patient_name: str


@dataclasses.dataclass(frozen=True, slots=True)
class StudySummary:
    id: int
    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_time: str
    description: str
    accession: str
    modalities: str
    stations: str
    series_count: int
    instance_count: int
    size: int
    received_at: float
    senders: str


class Index:
    """A connection to one store's index. Not shared between threads unless `shared`."""

    def __init__(self, store: Path, *, readonly: bool = False, shared: bool = False) -> None:
        """shared: usable from several threads, one at a time (the caller locks)."""
        self.store = store
        self.path = store / INDEX_DIR / INDEX_FILE
        if readonly:
            if not self.path.exists():
                raise IndexUnusable(
                    f"no index in {store} yet: run 'dicomfs index --store {store}' first"
                )
            if _stored_version(self.path) < SCHEMA_VERSION:
                Index(store).close()  # an older dicomfs made it: upgrade it once
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=not shared)
            modes.tighten(store, self._own_files())
        conn.execute("PRAGMA busy_timeout = 30000")
        self.db = sqlite_utils.Database(conn)
        self.conn = conn
        # series UID -> (row id, every patient/study/series value it was written with):
        # files of one series repeat them, so most instances skip three look-ups.
        self._series_cache: dict[str, tuple[int, tuple[object, ...]]] = {}
        if not readonly:
            _use_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        elif self.version() > SCHEMA_VERSION:
            raise IndexUnusable(self._too_new())

    def close(self) -> None:
        self.conn.close()

    def _own_files(self) -> list[Path]:
        """The index and its directory: patients' names, for the service's user only."""
        wal, shm = (self.path.with_name(self.path.name + end) for end in ("-wal", "-shm"))
        return [self.path.parent, self.path, wal, shm]

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- schema -------------------------------------------------------------------------

    def version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _too_new(self) -> str:
        return (
            f"the index {self.path} has schema version {self.version()}, newer than this "
            f"dicomfs understands ({SCHEMA_VERSION}): upgrade dicomfs"
        )

    def _migrate(self) -> None:
        if self.version() > SCHEMA_VERSION:
            raise IndexUnusable(self._too_new())
        while self.version() < SCHEMA_VERSION:
            with self.transaction():
                # Read again under the lock: another process may have migrated meanwhile.
                number = self.version()
                if number < SCHEMA_VERSION:
                    MIGRATIONS[number](self.db)
                    self.conn.execute(f"PRAGMA user_version = {number + 1}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            self._series_cache.clear()  # it may name rows that were never committed
            raise
        self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[sqlite3.Connection]:
        """Inside a transaction: undo only this block's changes if it fails."""
        self.conn.execute("SAVEPOINT block")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK TO block")
            self.conn.execute("RELEASE block")
            self._series_cache.clear()
            raise
        self.conn.execute("RELEASE block")

    # --- reconcile support --------------------------------------------------------------

    def file_states(self) -> dict[str, FileState]:
        """Every indexed path with its (size, mtime), for the unchanged-file check."""
        rows = self.conn.execute("SELECT path, size, mtime_ns FROM instances")
        return {path: FileState(size, mtime) for path, size, mtime in rows}

    def skipped_states(self) -> dict[str, tuple[FileState, str]]:
        rows = self.conn.execute("SELECT path, size, mtime_ns, reason FROM skipped")
        return {path: (FileState(size, mtime), reason) for path, size, mtime, reason in rows}

    def instance_by_sop(self, sop_uid: str) -> tuple[int, str, int] | None:
        """(id, path, mtime_ns) of the instance with this SOPInstanceUID."""
        row = self.conn.execute(
            "SELECT id, path, mtime_ns FROM instances WHERE sop_uid = ?", (sop_uid,)
        ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def record_skipped(self, path: str, state: FileState, reason: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO skipped (path, size, mtime_ns, reason) VALUES (?, ?, ?, ?)",
            (path, state.size, state.mtime_ns, reason),
        )

    def forget_skipped(self, paths: Iterable[str]) -> None:
        self.conn.executemany("DELETE FROM skipped WHERE path = ?", ((p,) for p in paths))

    def put_instance(
        self,
        meta: InstanceMeta,
        path: str,
        state: FileState,
        *,
        received_at: float | None = None,
        sender: Sender | None = None,
    ) -> None:
        """Insert or update the row of one instance (keyed by SOPInstanceUID)."""
        series_id = self._series_id(meta)
        sender = sender or Sender()
        now = time.time() if received_at is None else received_at
        # The file at this path may have held another instance before it was replaced,
        # and this instance may have belonged to another series: both may leave orphans.
        orphans = [
            row[0]
            for row in self.conn.execute(
                "DELETE FROM instances WHERE path = ? AND sop_uid != ? RETURNING series",
                (path, meta.sop_uid),
            )
        ]
        orphans += [
            row[0]
            for row in self.conn.execute(
                "SELECT series FROM instances WHERE sop_uid = ? AND series != ?",
                (meta.sop_uid, series_id),
            )
        ]
        self.conn.execute(
            """
            INSERT INTO instances (sop_uid, series, sop_class_uid, instance_number,
                transfer_syntax, file_name, path, size, mtime_ns, received_at,
                sender_aet, sender_address, called_aet, sender_user)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (sop_uid) DO UPDATE SET
                series = excluded.series, sop_class_uid = excluded.sop_class_uid,
                instance_number = excluded.instance_number,
                transfer_syntax = excluded.transfer_syntax, file_name = excluded.file_name,
                path = excluded.path, size = excluded.size, mtime_ns = excluded.mtime_ns,
                received_at = excluded.received_at,
                sender_aet = coalesce(excluded.sender_aet, sender_aet),
                sender_address = coalesce(excluded.sender_address, sender_address),
                called_aet = coalesce(excluded.called_aet, called_aet),
                sender_user = coalesce(excluded.sender_user, sender_user)
            """,
            (
                meta.sop_uid, series_id, meta.sop_class_uid, meta.instance_number,
                meta.transfer_syntax, names.instance_file(meta.instance_number), path,
                state.size, state.mtime_ns, now,
                sender.aet, sender.address, sender.called_aet, sender.user,
            ),
        )  # fmt: skip
        self._note_receipt(series_id, now)
        if orphans:
            self._prune(orphans)

    def _note_receipt(self, series_id: int, received_at: float) -> None:
        """Widen the series' and study's receipt times to include this instance."""
        study = self.conn.execute(
            """UPDATE series SET last_received = max(coalesce(last_received, ?1), ?1)
               WHERE id = ?2 RETURNING study""",
            (received_at, series_id),
        ).fetchone()[0]
        self.conn.execute(
            """UPDATE studies SET first_received = min(coalesce(first_received, ?1), ?1),
                                  last_received = max(coalesce(last_received, ?1), ?1)
               WHERE id = ?2""",
            (received_at, study),
        )

    def remove_paths(self, paths: Iterable[str]) -> int:
        """Drop the rows of files that are gone, then parents left empty."""
        removed = 0
        series_ids: set[int] = set()
        for path in paths:
            row = self.conn.execute(
                "DELETE FROM instances WHERE path = ? RETURNING series", (path,)
            ).fetchone()
            if row:
                removed += 1
                series_ids.add(row[0])
        self._prune(series_ids)
        return removed

    def series_identity(
        self, *, series_id: int | None = None, instance_id: int | None = None
    ) -> SeriesIdentity | None:
        """Whose series this is (or the series of this instance); None if it is gone."""
        if instance_id is not None:
            row = self.conn.execute(
                "SELECT series FROM instances WHERE id = ?", (instance_id,)
            ).fetchone()
            series_id = row[0] if row else None
        row = self.conn.execute(
            """SELECT se.series_uid, st.study_uid, p.patient_id, p.patient_name
               FROM series se JOIN studies st ON st.id = se.study
               JOIN patients p ON p.id = st.patient WHERE se.id = ?""",
            (series_id,),
        ).fetchone()
        return SeriesIdentity(*row) if row else None

    def doom_series(self, series_id: int) -> list[tuple[str, int]]:
        """Delete a series' rows and its emptied parents; its files become doomed, to be
        deleted from the disk next (see `doomed`). Returns (path, size) of each file."""
        rows = self.conn.execute(
            "DELETE FROM instances WHERE series = ? RETURNING path, size", (series_id,)
        ).fetchall()
        self._doom(path for path, _ in rows)
        self._prune([series_id])
        return [(path, size) for path, size in rows]

    def doom_instance(self, instance_id: int) -> tuple[str, int] | None:
        row = self.conn.execute(
            "DELETE FROM instances WHERE id = ? RETURNING path, size, series", (instance_id,)
        ).fetchone()
        if row is None:
            return None
        self._doom([row[0]])
        self._prune([row[2]])
        return row[0], row[1]

    def _doom(self, paths: Iterable[str]) -> None:
        self.conn.executemany(
            "INSERT OR IGNORE INTO doomed (path) VALUES (?)", ((path,) for path in paths)
        )

    def doomed(self) -> list[str]:
        """Files deleted from the index but perhaps not yet from the disk."""
        return [row[0] for row in self.conn.execute("SELECT path FROM doomed")]

    def forget_doomed(self, paths: Iterable[str]) -> None:
        self.conn.executemany("DELETE FROM doomed WHERE path = ?", ((path,) for path in paths))

    def _prune(self, series_ids: Iterable[int]) -> None:
        """Delete the given series if they hold no instance, then their emptied parents;
        the survivors' time summaries are recomputed without the instances that left."""
        self._series_cache.clear()
        survivors = []
        for series_id in set(series_ids):
            row = self.conn.execute(
                """DELETE FROM series WHERE id = ?
                   AND NOT EXISTS (SELECT 1 FROM instances WHERE series = ?) RETURNING study""",
                (series_id, series_id),
            ).fetchone()
            if row:
                self._drop_empty_study(row[0])
            else:
                survivors.append((series_id,))
        _summarise_times(self.conn, survivors)

    def _drop_empty_study(self, study_id: int) -> None:
        row = self.conn.execute(
            """DELETE FROM studies WHERE id = ?
               AND NOT EXISTS (SELECT 1 FROM series WHERE study = ?) RETURNING patient""",
            (study_id, study_id),
        ).fetchone()
        if row:
            self._drop_empty_patient(row[0])

    def _drop_empty_patient(self, patient_id: int) -> None:
        self.conn.execute(
            """DELETE FROM patients WHERE id = ?
               AND NOT EXISTS (SELECT 1 FROM studies WHERE patient = ?)""",
            (patient_id, patient_id),
        )

    # --- the parent rows, created on first sight and refreshed by the newest file ------

    def _patient_id(self, meta: InstanceMeta) -> int:
        key = f"{meta.patient_id}\x00{meta.patient_name}"
        row = self.conn.execute(
            "SELECT id, birth_date FROM patients WHERE patient_key = ?", (key,)
        ).fetchone()
        if row:
            if meta.patient_birth_date and row[1] != meta.patient_birth_date:
                self.conn.execute(
                    "UPDATE patients SET birth_date = ? WHERE id = ?",
                    (meta.patient_birth_date, row[0]),
                )
            return int(row[0])
        folded = fold(meta.patient_name)
        cursor = self.conn.execute(
            """INSERT INTO patients (patient_key, patient_id, patient_name, birth_date,
                                     name_folded, dir_name) VALUES (?, ?, ?, ?, ?, ?)""",
            (
                key,
                meta.patient_id,
                meta.patient_name,
                meta.patient_birth_date,
                folded,
                names.patient_dir(meta.patient_name, meta.patient_id),
            ),
        )
        patient = int(cursor.lastrowid or 0)
        self.conn.executemany(
            "INSERT OR IGNORE INTO patient_words (word, patient) VALUES (?, ?)",
            ((word, patient) for word in set(folded.split())),
        )
        return patient

    def _study_id(self, meta: InstanceMeta) -> int:
        patient = self._patient_id(meta)
        values = (
            patient, meta.study_date, meta.study_time, meta.study_description, meta.accession,
            names.study_dir(meta.study_date, meta.study_description),
            names.day_dir(meta.study_date), names.uid_dir(meta.study_uid),
        )  # fmt: skip
        row = self.conn.execute(
            """SELECT id, patient, study_date, study_time, description, accession, dir_name,
                      day_dir, uid_dir FROM studies WHERE study_uid = ?""",
            (meta.study_uid,),
        ).fetchone()
        if row is None:
            cursor = self.conn.execute(
                """INSERT INTO studies (patient, study_date, study_time, description, accession,
                       dir_name, day_dir, uid_dir, study_uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (*values, meta.study_uid),
            )
            study = int(cursor.lastrowid or 0)
            _set_words(self.conn, "study_words", "study", study, meta.study_description)
            return study
        if tuple(row[1:]) != values:
            old_patient = row[1]
            self.conn.execute(
                """UPDATE studies SET patient = ?, study_date = ?, study_time = ?,
                       description = ?, accession = ?, dir_name = ?, day_dir = ?, uid_dir = ?
                   WHERE id = ?""",
                (*values, row[0]),
            )
            if row[4] != meta.study_description:
                _set_words(self.conn, "study_words", "study", row[0], meta.study_description)
            if old_patient != patient:
                self._drop_empty_patient(old_patient)
        return int(row[0])

    def _series_id(self, meta: InstanceMeta) -> int:
        signature = _parent_values(meta)
        cached = self._series_cache.get(meta.series_uid)
        if cached and cached[1] == signature:
            return cached[0]
        series_id = self._write_series(meta)
        self._series_cache[meta.series_uid] = (series_id, signature)
        return series_id

    def _write_series(self, meta: InstanceMeta) -> int:
        study = self._study_id(meta)
        values = (
            study, meta.modality, meta.station_name, meta.series_number,
            meta.series_description,
            names.series_dir(meta.series_number, meta.series_description),
            names.modality_dir(meta.modality), names.station_dir(meta.station_name),
            names.series_number_dir(meta.series_number),
        )  # fmt: skip
        row = self.conn.execute(
            """SELECT id, study, modality, station_name, series_number, description, dir_name,
                      modality_dir, station_dir, number_dir FROM series WHERE series_uid = ?""",
            (meta.series_uid,),
        ).fetchone()
        if row is None:
            cursor = self.conn.execute(
                """INSERT INTO series (study, modality, station_name, series_number,
                       description, dir_name, modality_dir, station_dir, number_dir, series_uid)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (*values, meta.series_uid),
            )
            series = int(cursor.lastrowid or 0)
            _set_words(self.conn, "series_words", "series", series, meta.series_description)
            return series
        if tuple(row[1:]) != values:
            self.conn.execute(
                """UPDATE series SET study = ?, modality = ?, station_name = ?,
                       series_number = ?, description = ?, dir_name = ?, modality_dir = ?,
                       station_dir = ?, number_dir = ? WHERE id = ?""",
                (*values, row[0]),
            )
            if row[5] != meta.series_description:
                _set_words(self.conn, "series_words", "series", row[0], meta.series_description)
            if row[1] != study:  # the series moved: both studies' times change
                self._drop_empty_study(row[1])
                _summarise_study_times(self.conn, row[1])
                _summarise_times(self.conn, [(row[0],)])
        return int(row[0])

    # --- search -------------------------------------------------------------------------

    def studies_matching_name(self, term: str) -> set[int]:
        """Studies of patients whose name has a word starting with each word of term."""
        words = fold(term).split()
        if not words:
            return set()
        patients: set[int] | None = None
        for word in words:
            found = {
                row[0]
                for row in self.conn.execute(
                    "SELECT patient FROM patient_words WHERE word >= ? AND word < ?",
                    (word, word + "\U0010ffff"),
                )
            }
            patients = found if patients is None else patients & found
        return self._studies_of_patients(patients or set())

    def _studies_of_patients(self, patients: Iterable[int]) -> set[int]:
        found: set[int] = set()
        for patient in patients:
            found.update(
                row[0]
                for row in self.conn.execute("SELECT id FROM studies WHERE patient = ?", (patient,))
            )
        return found

    def studies_matching_description(self, term: str) -> set[int]:
        """Studies whose description, or one of whose series' descriptions, has a word
        starting with each word of term (folded: case and accents do not matter)."""
        words = fold(term).split()
        studies: set[int] | None = None
        for word in words:
            found = {
                row[0]
                for row in self.conn.execute(
                    """SELECT study FROM study_words WHERE word >= ?1 AND word < ?2
                       UNION SELECT se.study FROM series_words w JOIN series se ON se.id = w.series
                       WHERE w.word >= ?1 AND w.word < ?2""",
                    (word, word + "\U0010ffff"),
                )
            }
            studies = found if studies is None else studies & found
        return studies or set()

    def studies_with_patient_id_prefix(self, prefix: str) -> set[int]:
        """Studies of patients whose ID starts with prefix, whatever the (ASCII) case."""
        rows = self.conn.execute(
            """SELECT id FROM patients
               WHERE patient_id >= ?1 COLLATE NOCASE AND patient_id < ?2 COLLATE NOCASE""",
            (prefix, prefix + "\U0010ffff"),
        )
        return self._studies_of_patients(row[0] for row in rows)

    def studies_with_accession_prefix(self, prefix: str) -> set[int]:
        """Studies whose accession number starts with prefix, whatever the (ASCII) case."""
        rows = self.conn.execute(
            """SELECT id FROM studies
               WHERE accession >= ?1 COLLATE NOCASE AND accession < ?2 COLLATE NOCASE""",
            (prefix, prefix + "\U0010ffff"),
        )
        return {row[0] for row in rows}

    def studies_with_uid_prefix(self, prefix: str) -> set[int]:
        rows = self.conn.execute(
            "SELECT id FROM studies WHERE study_uid >= ? AND study_uid < ?",
            (prefix, prefix + "\U0010ffff"),
        )
        return {row[0] for row in rows}

    def studies_between(self, first: str, last: str) -> set[int]:
        rows = self.conn.execute(
            "SELECT id FROM studies WHERE study_date >= ? AND study_date <= ?", (first, last)
        )
        return {row[0] for row in rows}

    def study_summaries(self, study_ids: Iterable[int]) -> list[StudySummary]:
        summaries = []
        for study_id in study_ids:
            row = self.conn.execute(
                """
                SELECT st.id, st.study_uid, p.patient_name, p.patient_id, st.study_date,
                       st.study_time, st.description, st.accession,
                       (SELECT group_concat(DISTINCT modality) FROM series WHERE study = st.id),
                       (SELECT group_concat(DISTINCT station_name) FROM series
                        WHERE study = st.id),
                       (SELECT count(*) FROM series WHERE study = st.id),
                       count(i.id), coalesce(sum(i.size), 0), coalesce(min(i.received_at), 0),
                       group_concat(DISTINCT i.sender_aet)
                FROM studies st JOIN patients p ON p.id = st.patient
                JOIN series se ON se.study = st.id
                JOIN instances i ON i.series = se.id
                WHERE st.id = ?
                """,
                (study_id,),
            ).fetchone()
            if row and row[0] is not None:
                values: list[Any] = [v if v is not None else "" for v in row]
                summaries.append(StudySummary(*values))
        summaries.sort(key=lambda s: (s.study_date, s.study_time, s.patient_name, s.study_uid))
        return summaries

    def counts(self) -> dict[str, int]:
        return {
            table: int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in ("patients", "studies", "series", "instances")
        }


def _use_wal(conn: sqlite3.Connection, patience: float = 30.0) -> None:
    """Switch to WAL. Two commands starting on a new store at once race for it, and
    SQLite answers the loser "locked" at once instead of waiting: so wait here."""
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stored_version(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def _parent_values(meta: InstanceMeta) -> tuple[object, ...]:
    """Every value of an instance that lives in its patient, study or series row."""
    return (
        meta.patient_id, meta.patient_name, meta.patient_birth_date, meta.study_uid,
        meta.study_date, meta.study_time, meta.study_description, meta.accession,
        meta.modality, meta.station_name, meta.series_number, meta.series_description,
    )  # fmt: skip
