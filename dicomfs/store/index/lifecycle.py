"""The index's side of a series' life: last accesses, keeps, and what is due to expire.

life/access.py and life/expiry.py decide when and why; the rows are written and
read here.
"""

from __future__ import annotations

import sqlite3
from typing import Any

# A keep holds until its time, or for good (NULL): the one test of "kept now", in SQL
# for the queries and in Python for the listing that marks lapsed keeps.
_KEPT_NOW = "(k.until IS NULL OR k.until > :now)"


def holds(until: float | None, now: float) -> bool:
    """Does a keep until `until` still hold at `now`? (_KEPT_NOW, in Python.)"""
    return until is None or until > now


# --- last access -----------------------------------------------------------------------


def widen_access(conn: sqlite3.Connection, instance: int, when: float) -> int | None:
    """Make `when` the instance's last access if it is newer; its series, or None if the
    instance is gone."""
    row = conn.execute(
        """UPDATE instances SET last_access = max(coalesce(last_access, 0), ?)
           WHERE id = ? RETURNING series""",
        (when, instance),
    ).fetchone()
    return None if row is None else int(row[0])


def widen_series_access(conn: sqlite3.Connection, series: int, when: float) -> None:
    """The same for a series and its study, which summarise their instances' accesses."""
    (study,) = conn.execute(
        """UPDATE series SET last_access = max(coalesce(last_access, 0), ?)
           WHERE id = ? RETURNING study""",
        (when, series),
    ).fetchone()
    conn.execute(
        "UPDATE studies SET last_access = max(coalesce(last_access, 0), ?) WHERE id = ?",
        (when, study),
    )


def first_read_of_day(conn: sqlite3.Connection, series_uid: str, uid: int, day: str) -> bool:
    """Note that user `uid` read the series on `day`; True if it had not that day."""
    return (
        conn.execute(
            "INSERT OR IGNORE INTO reads (series_uid, uid, day) VALUES (?, ?, ?)",
            (series_uid, uid, day),
        ).rowcount
        > 0
    )


# --- expiry ---------------------------------------------------------------------------

# When a series was last used, received or read: its retention counts from then.
_USED = "max(coalesce(se.last_access, 0), coalesce(se.last_received, 0))"

_DUE = f"""
    SELECT se.id, se.series_uid, st.study_uid, p.patient_name, p.patient_id, st.study_date,
           se.modality, se.description,
           (SELECT count(*) FROM instances WHERE series = se.id),
           (SELECT coalesce(sum(size), 0) FROM instances WHERE series = se.id),
           {_USED} AS used,
           se.series_number
    FROM series se JOIN studies st ON st.id = se.study JOIN patients p ON p.id = st.patient
    WHERE {_USED} < :cutoff
      AND NOT EXISTS (SELECT 1 FROM kept k WHERE k.uid IN (se.series_uid, st.study_uid)
                      AND {_KEPT_NOW})
"""


def least_used_by_study(conn: sqlite3.Connection) -> dict[int, float]:
    """Study row id -> when the least recently used of its series was last used: the
    first of its series to expire does so one retention after it."""
    return dict(conn.execute(f"SELECT se.study, min({_USED}) FROM series se GROUP BY se.study"))


def due_series(conn: sqlite3.Connection, cutoff: float, now: float) -> list[tuple[Any, ...]]:
    """The series untouched since `cutoff` and not kept at `now`, least recently used
    first: (id, series UID, study UID, patient name and ID, study date, modality,
    description, instances, bytes, last used, series number)."""
    return conn.execute(f"{_DUE} ORDER BY used", {"cutoff": cutoff, "now": now}).fetchall()


def is_due(conn: sqlite3.Connection, series: int, cutoff: float, now: float) -> bool:
    found = conn.execute(
        f"{_DUE} AND se.id = :series", {"cutoff": cutoff, "now": now, "series": series}
    ).fetchone()
    return found is not None


# --- keeps ----------------------------------------------------------------------------

KeepRow = tuple[str, str, float | None, str, float]  # uid, level, until, by, at


def put_keep(
    conn: sqlite3.Connection, uid: str, level: str, until: float | None, by: str, at: float
) -> KeepRow | None:
    """Keep a study or series; return the keep this one replaces, if any."""
    before = conn.execute(
        "SELECT uid, level, until, by, at FROM kept WHERE uid = ?", (uid,)
    ).fetchone()
    conn.execute(
        "INSERT OR REPLACE INTO kept (uid, level, until, by, at) VALUES (?, ?, ?, ?, ?)",
        (uid, level, until, by, at),
    )
    return tuple(before) if before else None


def drop_keep(conn: sqlite3.Connection, uid: str) -> bool:
    return conn.execute("DELETE FROM kept WHERE uid = ?", (uid,)).rowcount > 0


def has_keep(conn: sqlite3.Connection, uid: str) -> bool:
    """Is there a keep of this UID, lapsed or not?"""
    return conn.execute("SELECT 1 FROM kept WHERE uid = ?", (uid,)).fetchone() is not None


def keeps(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
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


def kept_study_uids(conn: sqlite3.Connection, now: float) -> set[str]:
    """Studies kept whole or in part at `now`."""
    rows = conn.execute(
        f"""SELECT k.uid FROM kept k WHERE k.level = 'study' AND {_KEPT_NOW}
            UNION SELECT st.study_uid FROM kept k JOIN series se ON se.series_uid = k.uid
            JOIN studies st ON st.id = se.study
            WHERE k.level = 'series' AND {_KEPT_NOW}""",
        {"now": now},
    )
    return {row[0] for row in rows}


# --- naming what to keep ----------------------------------------------------------------


def uid_level(conn: sqlite3.Connection, uid: str) -> str | None:
    """'study' or 'series' for a stored study's or series' UID, else None."""
    for level, table, column in (("study", "studies", "study_uid"),
                                 ("series", "series", "series_uid")):  # fmt: skip
        if conn.execute(f"SELECT 1 FROM {table} WHERE {column} = ?", (uid,)).fetchone():
            return level
    return None


def uid_of(conn: sqlite3.Connection, level: str, row: int) -> str:
    """The UID of the study or series with this row id."""
    table, column = {"study": ("studies", "study_uid"), "series": ("series", "series_uid")}[level]
    (uid,) = conn.execute(f"SELECT {column} FROM {table} WHERE id = ?", (row,)).fetchone()
    return str(uid)
