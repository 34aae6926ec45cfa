"""The SQLite index over the store: the connection, its transactions, and the
writes and queries of instances, series, studies and patients.

The files on disk are the truth; this is a cache of their headers that `dicomfs
index` keeps in step with them. Its schema is schema.py's; the views' queries are
store/views'; those of expiry, access and audit are lifecycle.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import sqlite_utils

from ...dicom import names
from ...dicom.meta import InstanceMeta, fold
from .. import modes
from . import derived, schema
from .migrations import MIGRATIONS
from .schema import SCHEMA_VERSION

INDEX_DIR = ".dicomfs"
INDEX_FILE = "index.sqlite"


class IndexUnusable(Exception):
    """The index cannot be used (newer schema, corrupt file)."""


class FileState(NamedTuple):  # a tuple: reconcile makes one per file of the store
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


SUMMARIES_AT_ONCE = 200  # from this many studies on, summarise every study in one query


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
        """shared: usable from several threads, one at a time (the caller locks).
        A commit survives a crash of the process at once, and power loss once the WAL
        is flushed: at the next checkpoint, or by the writer (writer.py) before it
        tells its caller the work is done."""
        self.store = store
        self.path = store / INDEX_DIR / INDEX_FILE
        if readonly:
            if not self.path.exists():
                raise IndexUnusable(
                    f"no index in {store} yet: run 'dicomfs index --store {store}' first"
                )
            if _stored_version(self.path) < SCHEMA_VERSION:
                raise IndexUnusable(
                    f"the index in {store} was made by an older dicomfs: any command that "
                    f"writes it upgrades it (dicomfs index --store {store})"
                )
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            conn.execute("PRAGMA query_only = ON")  # never a write, even by mistake
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=not shared)
            modes.tighten(store, self._own_files())
        conn.execute("PRAGMA busy_timeout = 30000")
        self.db = sqlite_utils.Database(conn)
        self.conn = conn
        # series UID -> (row id, every patient/study/series value it was written with):
        # files of one series repeat them, so most instances skip three look-ups. Kept
        # while no other connection commits (data_version): another process may have
        # deleted the series meanwhile (dicomfs expire).
        self._series_cache: dict[str, tuple[int, tuple[object, ...]]] = {}
        self._cached_at_version: int | None = None
        if not readonly:
            _use_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        elif self.version() > SCHEMA_VERSION:
            raise IndexUnusable(self._too_new())

    @staticmethod
    def upgrade(store: Path) -> None:
        """Bring an index an older dicomfs made to the current schema, if it is one."""
        path = store / INDEX_DIR / INDEX_FILE
        if path.exists() and _stored_version(path) < SCHEMA_VERSION:
            Index(store).close()

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
        if self.version() == SCHEMA_VERSION:
            return
        # A migration may make a table anew: with foreign keys on, dropping the old one
        # would delete every row that refers to it.
        self.conn.execute("PRAGMA foreign_keys = OFF")
        try:
            while self.version() < SCHEMA_VERSION:
                with self.transaction():
                    # Read again under the lock: another process may have migrated meanwhile.
                    number = self.version()
                    if number == 0 and not self.db.table_names():
                        schema.create(self.db)  # a new index: made as it is now, at once
                    elif number < SCHEMA_VERSION:
                        MIGRATIONS[number](self.db)
                        if self.conn.execute("PRAGMA foreign_key_check").fetchone():
                            raise IndexUnusable(f"{self.path}: a row lost what it refers to")
                        self.conn.execute(f"PRAGMA user_version = {number + 1}")
        finally:
            self.conn.execute("PRAGMA foreign_keys = ON")

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

    def file_states(self, low: str = "", high: str | None = None) -> dict[str, tuple[int, int]]:
        """Every indexed path (in [low, high) if given) with its (size, mtime), for the
        unchanged-file check: plain tuples, equal to a FileState, and cheaper by the
        million."""
        rows = self._in_range("SELECT path, size, mtime_ns FROM instances", low, high)
        return {path: (size, mtime) for path, size, mtime in rows}

    def skipped_states(
        self, low: str = "", high: str | None = None
    ) -> dict[str, tuple[FileState, str]]:
        rows = self._in_range("SELECT path, size, mtime_ns, reason FROM skipped", low, high)
        return {path: (FileState(size, mtime), reason) for path, size, mtime, reason in rows}

    def _in_range(self, select: str, low: str, high: str | None) -> sqlite3.Cursor:
        # "+path": a scan of the table reads a share of it faster than the path index
        # leads to it, row by row.
        if high is None:
            return self.conn.execute(f"{select} WHERE +path >= ?", (low,))
        return self.conn.execute(f"{select} WHERE +path >= ? AND +path < ?", (low, high))

    def instance_by_sop(self, sop_uid: str) -> tuple[int, str, int] | None:
        """(id, path, mtime_ns) of the instance with this SOPInstanceUID."""
        row = self.conn.execute(
            "SELECT id, path, mtime_ns FROM instances WHERE sop_uid = ?", (sop_uid,)
        ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def indexes_path(self, path: str) -> bool:
        """Whether a row names this file."""
        return (
            self.conn.execute("SELECT 1 FROM instances WHERE path = ?", (path,)).fetchone()
            is not None
        )

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
    ) -> str | None:
        """Insert or update the row of one instance (keyed by SOPInstanceUID); the path
        it had until now, if it was indexed already."""
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
        before = self.conn.execute(
            "SELECT series, path FROM instances WHERE sop_uid = ?", (meta.sop_uid,)
        ).fetchone()
        if before is not None and before[0] != series_id:
            orphans.append(before[0])
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
        return str(before[1]) if before is not None else None

    def _note_receipt(self, series_id: int, received_at: float) -> None:
        """Widen the series' and study's receipt times to include this instance. Each
        column is written only if it moves: a page written for nothing is a page more
        in the WAL for every instance received (first_received has an index)."""
        study = self.conn.execute(
            """UPDATE series SET last_received = max(coalesce(last_received, ?1), ?1)
               WHERE id = ?2 RETURNING study""",
            (received_at, series_id),
        ).fetchone()[0]
        self.conn.execute(
            """UPDATE studies SET last_received = max(coalesce(last_received, ?1), ?1)
               WHERE id = ?2""",
            (received_at, study),
        )
        self.conn.execute(
            """UPDATE studies SET first_received = ?1
               WHERE id = ?2 AND (first_received IS NULL OR first_received > ?1)""",
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
        derived.summarise_times(self.conn, survivors)

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
            derived.set_words(self.conn, "study_words", "study", study, meta.study_description)
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
                derived.set_words(self.conn, "study_words", "study", row[0], meta.study_description)
            if old_patient != patient:
                self._drop_empty_patient(old_patient)
        return int(row[0])

    def _series_id(self, meta: InstanceMeta) -> int:
        (version,) = self.conn.execute("PRAGMA data_version").fetchone()
        if version != self._cached_at_version:
            self._series_cache.clear()
            self._cached_at_version = version
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
            derived.set_words(self.conn, "series_words", "series", series, meta.series_description)
            return series
        if tuple(row[1:]) != values:
            self.conn.execute(
                """UPDATE series SET study = ?, modality = ?, station_name = ?,
                       series_number = ?, description = ?, dir_name = ?, modality_dir = ?,
                       station_dir = ?, number_dir = ? WHERE id = ?""",
                (*values, row[0]),
            )
            if row[5] != meta.series_description:
                derived.set_words(
                    self.conn, "series_words", "series", row[0], meta.series_description
                )
            if row[1] != study:  # the series moved: both studies' times change
                self._drop_empty_study(row[1])
                derived.summarise_study_times(self.conn, row[1])
                derived.summarise_times(self.conn, [(row[0],)])
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
        wanted = list(study_ids)
        if len(wanted) >= SUMMARIES_AT_ONCE:
            return self._all_study_summaries(set(wanted))
        summaries = []
        for study_id in wanted:
            row = self.conn.execute(
                """
                SELECT st.id, st.study_uid, p.patient_name, p.patient_id, st.study_date,
                       st.study_time, st.description, st.accession,
                       group_concat(DISTINCT se.modality),
                       group_concat(DISTINCT se.station_name),
                       count(se.id), coalesce(held.instances, 0), coalesce(held.bytes, 0),
                       coalesce(st.first_received, 0), held.senders
                FROM studies st JOIN patients p ON p.id = st.patient
                JOIN series se ON se.study = st.id,
                (SELECT sum(sc.instances) AS instances, sum(sc.bytes) AS bytes,
                        group_concat(DISTINCT nullif(sc.sender_aet, '')) AS senders
                 FROM series s2 JOIN series_counts sc ON sc.series = s2.id
                 WHERE s2.study = ?1) AS held
                WHERE st.id = ?1
                """,
                (study_id,),
            ).fetchone()
            if row and row[0] is not None:
                values: list[Any] = [v if v is not None else "" for v in row]
                summaries.append(StudySummary(*values))
        summaries.sort(key=lambda s: (s.study_date, s.study_time, s.patient_name, s.study_uid))
        return summaries

    def _all_study_summaries(self, wanted: set[int]) -> list[StudySummary]:
        """study_summaries of many studies: every study's in one grouped query."""
        summaries = []
        rows = self.conn.execute(
            """
            SELECT st.id, st.study_uid, p.patient_name, p.patient_id, st.study_date,
                   st.study_time, st.description, st.accession,
                   group_concat(DISTINCT se.modality),
                   group_concat(DISTINCT se.station_name),
                   count(DISTINCT se.id), coalesce(sum(sc.instances), 0),
                   coalesce(sum(sc.bytes), 0), coalesce(st.first_received, 0),
                   group_concat(DISTINCT nullif(sc.sender_aet, ''))
            FROM studies st JOIN patients p ON p.id = st.patient
            JOIN series se ON se.study = st.id
            LEFT JOIN series_counts sc ON sc.series = se.id
            GROUP BY st.id
            """
        )
        for row in rows:
            if row[0] in wanted:
                values: list[Any] = [v if v is not None else "" for v in row]
                summaries.append(StudySummary(*values))
        summaries.sort(key=lambda s: (s.study_date, s.study_time, s.patient_name, s.study_uid))
        return summaries

    def study_ids(self) -> list[int]:
        return [row[0] for row in self.conn.execute("SELECT id FROM studies")]

    def stored_sop_uids(self, sop_uids: list[str]) -> set[str]:
        """Which of these instances the index has."""
        found: set[str] = set()
        for start in range(0, len(sop_uids), 500):
            chunk = sop_uids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT sop_uid FROM instances WHERE sop_uid IN ({marks})", chunk
            )
            found.update(row[0] for row in rows)
        return found

    def totals(self) -> dict[str, int]:
        """The series, instances and bytes in the store (series_counts keeps them)."""
        series, instances, size = self.conn.execute(
            "SELECT count(DISTINCT series), coalesce(sum(instances), 0), "
            "coalesce(sum(bytes), 0) FROM series_counts"
        ).fetchone()
        return {"series": series, "instances": instances, "bytes": size}

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
