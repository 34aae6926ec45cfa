"""Where a study appears in each view of the mount.

The base of every name is computed when a file is indexed (names.py) and kept
in the index; a name that several entries of one directory share gets a
suffix made from the entry's own UID, so names depend only on what is indexed,
never on the order it arrived in.
"""

from __future__ import annotations

import datetime
import sqlite3
import time

from ..dicom import names

VIEWS = ("by-modality", "by-patient", "by-date", "by-received", "by-uid")


def unique_name(
    conn: sqlite3.Connection, sql: str, args: tuple[object, ...], base: str, key: str
) -> str:
    """The name of key's entry among the entries that share its base: the keys sql finds."""
    keys = [str(found) for (found,) in conn.execute(sql, args)]
    return names.unique_names([(base, found) for found in keys])[keys.index(key)]


def patient_name(conn: sqlite3.Connection, patient: int) -> str:
    dir_name, key = conn.execute(
        "SELECT dir_name, patient_key FROM patients WHERE id = ?", (patient,)
    ).fetchone()
    return unique_name(
        conn, "SELECT patient_key FROM patients WHERE dir_name = ?", (dir_name,), dir_name, key
    )


def study_name(conn: sqlite3.Connection, study: int) -> str:
    dir_name, patient, uid = conn.execute(
        "SELECT dir_name, patient, study_uid FROM studies WHERE id = ?", (study,)
    ).fetchone()
    return unique_name(
        conn,
        "SELECT study_uid FROM studies WHERE patient = ? AND dir_name = ?",
        (patient, dir_name),
        dir_name,
        uid,
    )


# The studies whose names in by-modality and by-uid start from the same safe form.
_SAME_UID_DIR = "SELECT study_uid FROM studies WHERE uid_dir = ?"


def uid_name(conn: sqlite3.Connection, study: int) -> str:
    """The study's <uid>.UID directory under by-modality/."""
    uid_dir, uid = conn.execute(
        "SELECT uid_dir, study_uid FROM studies WHERE id = ?", (study,)
    ).fetchone()
    return unique_name(conn, _SAME_UID_DIR, (uid_dir,), uid_dir, uid)


def by_uid_name(conn: sqlite3.Connection, study: int) -> str:
    """The study's directory under by-uid/: its UID, or its safe form with a suffix."""
    uid_dir, uid = conn.execute(
        "SELECT uid_dir, study_uid FROM studies WHERE id = ?", (study,)
    ).fetchone()
    uids = [str(found) for (found,) in conn.execute(_SAME_UID_DIR, (uid_dir,))]
    return names.uid_names(uids)[uids.index(uid)]


def date_dirs(study_date: str) -> str:
    """by-date's three levels: '20040609' -> '2004/06/09'."""
    date = study_date or "00000000"
    return f"{date[:4]}/{date[4:6]}/{date[6:]}"


def day_bounds(day: str) -> tuple[float, float]:
    """Unix times of the local midnights that start and end a YYYY-MM-DD day."""
    start = datetime.datetime.strptime(day, "%Y-%m-%d")
    return start.timestamp(), (start + datetime.timedelta(days=1)).timestamp()


def received_on(conn: sqlite3.Connection, day: str) -> list[tuple[int, str, str]]:
    """(study, by-received name before disambiguation, StudyInstanceUID) for one day."""
    try:
        start, end = day_bounds(day)
    except ValueError:
        return []
    rows = conn.execute(
        """SELECT st.id, st.first_received, p.dir_name, st.dir_name, st.study_uid
           FROM studies st JOIN patients p ON p.id = st.patient
           WHERE st.first_received >= ? AND st.first_received < ?""",
        (start, end),
    )
    return [
        (sid, _received_base(first, patient_dir, study_dir), uid)
        for sid, first, patient_dir, study_dir, uid in rows
    ]


def _received_base(first_received: float, patient_dir: str, study_dir: str) -> str:
    """14.30.12_DOE_JOHN_12345_20040609_Brain: when it came, whose, which exam."""
    clock = time.strftime("%H.%M.%S", time.localtime(first_received))
    return names.truncate_utf8(f"{clock}_{patient_dir}_{study_dir}", names.BASE_MAX)


def received_name(conn: sqlite3.Connection, study: int) -> str:
    """The study's path below by-received/: 2026-11-25/14.30.12_DOE_JOHN_12345_20040609."""
    (first,) = conn.execute("SELECT first_received FROM studies WHERE id = ?", (study,)).fetchone()
    day = time.strftime("%Y-%m-%d", time.localtime(first or 0))
    rows = received_on(conn, day)
    unique = names.unique_names([(name, uid) for _, name, uid in rows])
    studies = [sid for sid, _, _ in rows]
    return f"{day}/{unique[studies.index(study)]}"


def study_paths(conn: sqlite3.Connection, study: int) -> dict[str, list[str]]:
    """The study's directory in each view, relative to the mount point."""
    patient, study_date, day_dir = conn.execute(
        "SELECT patient, study_date, day_dir FROM studies WHERE id = ?", (study,)
    ).fetchone()
    by_patient = f"{patient_name(conn, patient)}/{study_name(conn, study)}"
    uid_part = uid_name(conn, study)
    modality_paths = [
        f"by-modality/{mod}/{sta}/{day_dir}/{uid_part}"
        for mod, sta in conn.execute(
            """SELECT DISTINCT modality_dir, station_dir FROM series WHERE study = ?
               ORDER BY modality_dir, station_dir""",
            (study,),
        )
    ]
    return {
        "by-modality": modality_paths,
        "by-patient": [f"by-patient/{by_patient}"],
        "by-date": [f"by-date/{date_dirs(study_date)}/{by_patient}"],
        "by-received": [f"by-received/{received_name(conn, study)}"],
        "by-uid": [f"by-uid/{by_uid_name(conn, study)}"],
    }
