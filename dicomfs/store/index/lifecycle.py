"""The index's side of a series' life: last accesses, keeps, and what is due to expire.

life/access.py and life/expiry.py decide when and why; the rows are written and
read here.
"""

from __future__ import annotations

import functools
from typing import Any

from .engine import Connection, Dialect, dialect_of


def _kept_now(now: str) -> str:
    """A keep holds until its time, or for good (NULL): the one test of "kept now" at
    the placeholder `now`, in SQL for the queries (in Python: holds)."""
    return f"(k.until IS NULL OR k.until > {now})"


def holds(until: float | None, now: float) -> bool:
    """Does a keep until `until` still hold at `now`? (_kept_now, in Python.)"""
    return until is None or until > now


# --- last access -----------------------------------------------------------------------


@functools.cache
def _widen(dialect: Dialect, table: str, returning: str) -> str:
    """Make ?1 the row ?2's last access if it is newer."""
    newest = dialect.greatest("coalesce(last_access, 0)", "?1")
    return f"UPDATE {table} SET last_access = {newest} WHERE id = ?2 {returning}"


def widen_access(conn: Connection, instance: int, when: float) -> int | None:
    """Make `when` the instance's last access if it is newer; its series, or None if the
    instance is gone."""
    widen = _widen(dialect_of(conn), "instances", "RETURNING series")
    row = conn.execute(widen, (when, instance)).fetchone()
    return None if row is None else int(row[0])


def widen_series_access(conn: Connection, series: int, when: float) -> None:
    """The same for a series and its study, which summarise their instances' accesses."""
    dialect = dialect_of(conn)
    (study,) = conn.execute(_widen(dialect, "series", "RETURNING study"), (when, series)).fetchone()
    conn.execute(_widen(dialect, "studies", ""), (when, study))


def first_read_of_day(conn: Connection, series_uid: str, uid: int, day: str) -> bool:
    """Note that user `uid` read the series on `day`; True if it had not that day."""
    return (
        conn.execute(
            "INSERT INTO reads (series_uid, uid, day) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (series_uid, uid, day),
        ).rowcount
        > 0
    )


# --- expiry ---------------------------------------------------------------------------


def _used(dialect: Dialect) -> str:
    """When a series was last used, received or read: its retention counts from then."""
    return dialect.greatest("coalesce(se.last_access, 0)", "coalesce(se.last_received, 0)")


@functools.cache
def _due(dialect: Dialect) -> str:
    """The series untouched since ?1 and not kept at ?2."""
    return f"""
        SELECT se.id, se.series_uid, st.study_uid, p.patient_name, p.patient_id,
               st.study_date, se.modality, se.description,
               (SELECT count(*) FROM instances WHERE series = se.id),
               (SELECT coalesce(sum(size), 0) FROM instances WHERE series = se.id),
               {_used(dialect)} AS used,
               se.series_number
        FROM series se JOIN studies st ON st.id = se.study JOIN patients p ON p.id = st.patient
        WHERE {_used(dialect)} < ?1
          AND NOT EXISTS (SELECT 1 FROM kept k WHERE k.uid IN (se.series_uid, st.study_uid)
                          AND {_kept_now("?2")})
    """


def least_used_by_study(conn: Connection) -> dict[int, float]:
    """Study row id -> when the least recently used of its series was last used: the
    first of its series to expire does so one retention after it."""
    used = _used(dialect_of(conn))
    return dict(conn.execute(f"SELECT se.study, min({used}) FROM series se GROUP BY se.study"))


def due_series(conn: Connection, cutoff: float, now: float) -> list[tuple[Any, ...]]:
    """The series untouched since `cutoff` and not kept at `now`, least recently used
    first: (id, series UID, study UID, patient name and ID, study date, modality,
    description, instances, bytes, last used, series number)."""
    return conn.execute(f"{_due(dialect_of(conn))} ORDER BY used", (cutoff, now)).fetchall()


def is_due(conn: Connection, series: int, cutoff: float, now: float) -> bool:
    found = conn.execute(
        f"{_due(dialect_of(conn))} AND se.id = ?3", (cutoff, now, series)
    ).fetchone()
    return found is not None


# --- keeps ----------------------------------------------------------------------------

KeepRow = tuple[str, str, float | None, str, float]  # uid, level, until, by, at


def put_keep(
    conn: Connection, uid: str, level: str, until: float | None, by: str, at: float
) -> KeepRow | None:
    """Keep a study or series; return the keep this one replaces, if any."""
    before = conn.execute(
        "SELECT uid, level, until, by, at FROM kept WHERE uid = ?", (uid,)
    ).fetchone()
    conn.execute(
        """INSERT INTO kept (uid, level, until, by, at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (uid) DO UPDATE SET level = excluded.level, until = excluded.until,
               by = excluded.by, at = excluded.at""",
        (uid, level, until, by, at),
    )
    return tuple(before) if before else None


def drop_keep(conn: Connection, uid: str) -> bool:
    return conn.execute("DELETE FROM kept WHERE uid = ?", (uid,)).rowcount > 0


def has_keep(conn: Connection, uid: str) -> bool:
    """Is there a keep of this UID, lapsed or not?"""
    return conn.execute("SELECT 1 FROM kept WHERE uid = ?", (uid,)).fetchone() is not None


def keeps(conn: Connection) -> list[tuple[Any, ...]]:
    """Every keep, oldest first, with its patient's name and ID where it is stored:
    (uid, level, until, by, at, patient name, patient ID)."""
    return conn.execute(
        """SELECT k.uid, k.level, k.until, k.by, k.at,
                  coalesce(p1.patient_name, p2.patient_name), coalesce(p1.patient_id, p2.patient_id)
           FROM kept k
           LEFT JOIN studies st ON k.level = 'study' AND st.study_uid = k.uid
           LEFT JOIN patients p1 ON p1.id = st.patient
           LEFT JOIN series se ON k.level = 'series' AND se.series_uid = k.uid
           LEFT JOIN studies st2 ON st2.id = se.study
           LEFT JOIN patients p2 ON p2.id = st2.patient
           ORDER BY k.at"""
    ).fetchall()


def kept_study_uids(conn: Connection, now: float) -> set[str]:
    """Studies kept whole or in part at `now`."""
    rows = conn.execute(
        f"""SELECT k.uid FROM kept k WHERE k.level = 'study' AND {_kept_now("?1")}
            UNION SELECT st.study_uid FROM kept k JOIN series se ON se.series_uid = k.uid
            JOIN studies st ON st.id = se.study
            WHERE k.level = 'series' AND {_kept_now("?1")}""",
        (now,),
    )
    return {row[0] for row in rows}


# --- naming what to keep ----------------------------------------------------------------


def uid_level(conn: Connection, uid: str) -> str | None:
    """'study' or 'series' for a stored study's or series' UID, else None."""
    for level, table, column in (("study", "studies", "study_uid"),
                                 ("series", "series", "series_uid")):  # fmt: skip
        if conn.execute(f"SELECT 1 FROM {table} WHERE {column} = ?", (uid,)).fetchone():
            return level
    return None


def uid_of(conn: Connection, level: str, row: int) -> str:
    """The UID of the study or series with this row id."""
    table, column = {"study": ("studies", "study_uid"), "series": ("series", "series_uid")}[level]
    (uid,) = conn.execute(f"SELECT {column} FROM {table} WHERE id = ?", (row,)).fetchone()
    return str(uid)
