"""The index over the store: its connection (to the SQLite file beside the store, or
to a PostgreSQL database several machines share), its transactions, and the writes
and queries of instances, series, studies and patients.

The files on disk are the truth; this is a cache of their headers that `dicomfs
index` keeps in step with them. Its schema is schema.py's; the views' queries are
store/views'; those of expiry, access and audit are lifecycle.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ...dicom import names
from ...dicom.meta import InstanceMeta, fold
from .. import modes
from . import derived
from .engine import INDEX_DIR as INDEX_DIR
from .engine import Connection, Cursor, Dialect
from .engine import IndexUnusable as IndexUnusable
from .postgres_engine import PostgresEngine
from .sqlite_engine import INDEX_FILE as INDEX_FILE
from .sqlite_engine import SQLiteEngine

# Where the index is, when it is not the SQLite file beside the store: a PostgreSQL
# database's URL (--index sets it for the whole command).
INDEX_VARIABLE = "DICOMFS_INDEX"


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

    def __init__(
        self, store: Path, *, readonly: bool = False, shared: bool = False, url: str | None = None
    ) -> None:
        """shared: usable from several threads, one at a time (the caller locks).
        url: the PostgreSQL database that holds the index (postgresql://...), or ""
        for the SQLite file in the store; by default $DICOMFS_INDEX says which."""
        self.store = store
        url = url if url is not None else os.environ.get(INDEX_VARIABLE) or None
        self.engine: SQLiteEngine | PostgresEngine
        if url:
            self.engine = PostgresEngine(url, store, readonly=readonly)
            if not readonly:  # the spool, the locks and the remotes stay in the store
                _make_own_directory(store)
        else:
            self.engine = SQLiteEngine(store, readonly=readonly, shared=shared)
        self.conn: Connection = self.engine.conn
        self.dialect = self.engine.dialect
        # series UID -> (row id, every patient/study/series value it was written with):
        # files of one series repeat them, so most instances skip three look-ups. Kept
        # while no other connection commits: another process may have deleted the
        # series meanwhile (dicomfs expire).
        self._series_cache: dict[str, tuple[int, tuple[object, ...]]] = {}

    @staticmethod
    def upgrade(store: Path) -> None:
        """Bring an index an older dicomfs made to the current schema, if it is one."""
        if not os.environ.get(INDEX_VARIABLE):
            SQLiteEngine.upgrade(store)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self) -> int:
        return self.engine.version()

    @contextlib.contextmanager
    def transaction(self, *, flushed_later: bool = False) -> Iterator[Any]:
        """A write transaction, one at a time across every process and machine that
        writes this index; rolled back on error. flushed_later: its commit need not be
        on disk when it returns, as the writer flushes it (writer.py)."""
        self.engine.begin(flushed_later=flushed_later)
        try:
            yield self.conn
        except BaseException:
            self.engine.rollback()
            self._series_cache.clear()  # it may name rows that were never committed
            raise
        self.engine.commit()

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[Any]:
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

    def _in_range(self, select: str, low: str, high: str | None) -> Cursor:
        path = self.dialect.unindexed("path")
        if high is None:
            return self.conn.execute(f"{select} WHERE {path} >= ?", (low,))
        return self.conn.execute(f"{select} WHERE {path} >= ? AND {path} < ?", (low, high))

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
            """INSERT INTO skipped (path, size, mtime_ns, reason) VALUES (?, ?, ?, ?)
               ON CONFLICT (path) DO UPDATE SET size = excluded.size,
                   mtime_ns = excluded.mtime_ns, reason = excluded.reason""",
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
        # Both are seldom so: one look finds either (each is a round trip to PostgreSQL).
        before, displaced = None, False
        for sop_uid, series, held_at in self.conn.execute(
            "SELECT sop_uid, series, path FROM instances WHERE path = ? OR sop_uid = ?",
            (path, meta.sop_uid),
        ).fetchall():
            if sop_uid == meta.sop_uid:
                before = (series, held_at)
            else:
                displaced = True
        orphans = []
        if displaced:
            orphans = [
                row[0]
                for row in self.conn.execute(
                    "DELETE FROM instances WHERE path = ? AND sop_uid != ? RETURNING series",
                    (path, meta.sop_uid),
                )
            ]
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
                sender_aet = coalesce(excluded.sender_aet, instances.sender_aet),
                sender_address = coalesce(excluded.sender_address, instances.sender_address),
                called_aet = coalesce(excluded.called_aet, instances.called_aet),
                sender_user = coalesce(excluded.sender_user, instances.sender_user)
            """,
            (
                meta.sop_uid, series_id, meta.sop_class_uid, meta.instance_number,
                meta.transfer_syntax, names.instance_file(meta.instance_number), path,
                state.size, state.mtime_ns, now,
                sender.aet, sender.address, sender.called_aet, sender.user,
            ),
        )  # fmt: skip
        if orphans:
            self._prune(orphans)
        return str(before[1]) if before is not None else None

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
            "INSERT INTO doomed (path) VALUES (?) ON CONFLICT DO NOTHING",
            ((path,) for path in paths),
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
        row = self.conn.execute(
            "SELECT id, birth_date FROM patients WHERE patient_id = ? AND patient_name = ?",
            (meta.patient_id, meta.patient_name),
        ).fetchone()
        if row:
            if meta.patient_birth_date and row[1] != meta.patient_birth_date:
                self.conn.execute(
                    "UPDATE patients SET birth_date = ? WHERE id = ?",
                    (meta.patient_birth_date, row[0]),
                )
            return int(row[0])
        folded = fold(meta.patient_name)
        (patient,) = self.conn.execute(
            """INSERT INTO patients (patient_id, patient_name, birth_date, name_folded,
                                     dir_name) VALUES (?, ?, ?, ?, ?) RETURNING id""",
            (
                meta.patient_id,
                meta.patient_name,
                meta.patient_birth_date,
                folded,
                names.patient_dir(meta.patient_name, meta.patient_id),
            ),
        ).fetchone()
        self.conn.executemany(
            "INSERT INTO patient_words (word, patient) VALUES (?, ?) ON CONFLICT DO NOTHING",
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
            (study,) = self.conn.execute(
                """INSERT INTO studies (patient, study_date, study_time, description, accession,
                       dir_name, day_dir, uid_dir, study_uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   RETURNING id""",
                (*values, meta.study_uid),
            ).fetchone()
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
        if self.engine.others_wrote():
            self._series_cache.clear()
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
            (series,) = self.conn.execute(
                """INSERT INTO series (study, modality, station_name, series_number,
                       description, dir_name, modality_dir, station_dir, number_dir, series_uid)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                (*values, meta.series_uid),
            ).fetchone()
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
        nocase = self.dialect.nocase
        rows = self.conn.execute(
            f"""SELECT id FROM patients WHERE {nocase("patient_id")} >= {nocase("?1")}
                AND {nocase("patient_id")} < {nocase("?2")}""",
            (prefix, prefix + "\U0010ffff"),
        )
        return self._studies_of_patients(row[0] for row in rows)

    def studies_with_accession_prefix(self, prefix: str) -> set[int]:
        """Studies whose accession number starts with prefix, whatever the (ASCII) case."""
        nocase = self.dialect.nocase
        rows = self.conn.execute(
            f"""SELECT id FROM studies WHERE {nocase("accession")} >= {nocase("?1")}
                AND {nocase("accession")} < {nocase("?2")}""",
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
            row = self.conn.execute(_one_summary(self.dialect), (study_id,)).fetchone()
            if row and row[0] is not None:
                values: list[Any] = [v if v is not None else "" for v in row]
                summaries.append(StudySummary(*values))
        summaries.sort(key=lambda s: (s.study_date, s.study_time, s.patient_name, s.study_uid))
        return summaries

    def _all_study_summaries(self, wanted: set[int]) -> list[StudySummary]:
        """study_summaries of many studies: every study's in one grouped query."""
        summaries = []
        rows = self.conn.execute(_all_summaries(self.dialect))
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


@functools.cache
def _one_summary(dialect: Dialect) -> str:
    """One study's summary (see StudySummary): its series counted by series_counts."""
    listed = dialect.distinct_list
    return f"""
        SELECT st.id, st.study_uid, p.patient_name, p.patient_id, st.study_date,
               st.study_time, st.description, st.accession,
               {listed("se.modality")}, {listed("se.station_name")},
               count(se.id), coalesce(held.instances, 0), coalesce(held.bytes, 0),
               coalesce(st.first_received, 0), held.senders
        FROM studies st JOIN patients p ON p.id = st.patient
        JOIN series se ON se.study = st.id,
        (SELECT sum(sc.instances) AS instances, sum(sc.bytes) AS bytes,
                {listed("nullif(sc.sender_aet, '')")} AS senders
         FROM series s2 JOIN series_counts sc ON sc.series = s2.id
         WHERE s2.study = ?1) AS held
        WHERE st.id = ?1
        GROUP BY st.id, p.id, held.instances, held.bytes, held.senders
    """


@functools.cache
def _all_summaries(dialect: Dialect) -> str:
    """Every study's summary in one grouped query."""
    listed = dialect.distinct_list
    return f"""
        SELECT st.id, st.study_uid, p.patient_name, p.patient_id, st.study_date,
               st.study_time, st.description, st.accession,
               {listed("se.modality")}, {listed("se.station_name")},
               count(DISTINCT se.id), coalesce(sum(sc.instances), 0),
               coalesce(sum(sc.bytes), 0), coalesce(st.first_received, 0),
               {listed("nullif(sc.sender_aet, '')")}
        FROM studies st JOIN patients p ON p.id = st.patient
        JOIN series se ON se.study = st.id
        LEFT JOIN series_counts sc ON sc.series = se.id
        GROUP BY st.id, p.id
    """


def _make_own_directory(store: Path) -> None:
    """STORE/.dicomfs, private to the service (see modes.py)."""
    own = store / INDEX_DIR
    own.mkdir(parents=True, exist_ok=True)
    modes.tighten(store, [own])


def _parent_values(meta: InstanceMeta) -> tuple[object, ...]:
    """Every value of an instance that lives in its patient, study or series row."""
    return (
        meta.patient_id, meta.patient_name, meta.patient_birth_date, meta.study_uid,
        meta.study_date, meta.study_time, meta.study_description, meta.accession,
        meta.modality, meta.station_name, meta.series_number, meta.series_description,
    )  # fmt: skip
