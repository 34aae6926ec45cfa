"""by-date/YYYY/MM/DD/<patient>/<study>/<series>/<file>: the day of the exam.

Studies without a StudyDate show under 0000/00/00. The date levels are small
(distinct years, months, days) and list whole, whatever name is wanted."""

from __future__ import annotations

import collections
from collections.abc import Callable

from ..index.engine import Connection
from .by_patient import patient_dir_name
from .levels import (
    ALL_TIMES,
    FILES,
    SERIES,
    Attributes,
    Key,
    Kind,
    Level,
    Listed,
    View,
    base,
    directory,
    key_of,
    named,
    named_among_all,
    present,
    rows,
    study_dir_name,
    study_series,
    study_times,
)

UNKNOWN_YEAR = "0000"


def _date_range(prefix: str) -> tuple[str, str]:
    """The StudyDates that start with a year, year-month or date prefix."""
    if prefix.strip("0") == "":
        return "", ""  # the unknown date: studies without StudyDate
    return prefix.ljust(8, "0"), prefix.ljust(8, "9")


def _date(key: Key) -> str:
    """A by-date day's StudyDate: '' for 00000000, the unknown date."""
    day = str(key[0])
    return "" if day.strip("0") == "" else day


def _years(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    found = conn.execute(
        """SELECT substr(study_date, 1, 4), max(last_received), max(last_access)
            FROM studies GROUP BY 1"""
    )
    return present(
        [(y or UNKNOWN_YEAR, (y or UNKNOWN_YEAR,), directory(r, a)) for y, r, a in found]
    )


def _date_part(start: int) -> Callable[[Connection, Key, str | None], list[Listed]]:
    """The lister of the two digits of StudyDate at `start` (month, day), among the
    studies under the key's prefix."""

    def listing(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
        prefix = str(key[0])
        found = conn.execute(
            f"""SELECT substr(study_date, {start}, 2), max(last_received), max(last_access)
                FROM studies WHERE study_date BETWEEN ? AND ? GROUP BY 1""",
            _date_range(prefix),
        )
        return present(
            [(part or "00", (f"{prefix}{part or '00'}",), directory(r, a)) for part, r, a in found]
        )

    return listing


# A name shared by other entries of the store, and who shares it (named_among_all):
# for one directory's listing and for every directory's at once alike.
_SHARING = "(SELECT count(*) FROM patients peer WHERE peer.dir_name = p.dir_name)"
_SHARERS = "SELECT patient_id, patient_name FROM patients WHERE dir_name = ?"


def _patients(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    date = _date(key)
    found = rows(
        conn,
        f"""SELECT p.dir_name, p.patient_id, p.patient_name,
                  {_SHARING},
                  p.id, max(st.last_received), max(st.last_access)
           FROM studies st JOIN patients p ON p.id = st.patient WHERE st.study_date = ?""",
        (date,),
        "p.dir_name",
        base(wanted),
        "GROUP BY p.id",
    )
    # Named as under by-patient/, where every patient of the store is listed together.
    return present(
        named_among_all(
            conn,
            [
                (n, key_of(patient_id, name), peers, (date, pid), directory(r, a))
                for n, patient_id, name, peers, pid, r, a in found
            ],
            _SHARERS,
        )
    )


def _all_patients(conn: Connection) -> dict[Key, list[Listed]]:
    """Every day's patients, as _patients lists one day's."""
    found: dict[Key, list[tuple[str, str, int, Key, Attributes]]] = collections.defaultdict(list)
    for date, n, patient_id, name, peers, pid, r, a in conn.execute(
        f"""SELECT st.study_date, p.dir_name, p.patient_id, p.patient_name,
                  {_SHARING},
                  p.id, max(st.last_received), max(st.last_access)
           FROM studies st JOIN patients p ON p.id = st.patient
           GROUP BY st.study_date, p.id"""
    ):
        pkey = key_of(patient_id, name)
        found[(date or "00000000",)].append((n, pkey, peers, (date, pid), directory(r, a)))
    return {key: present(named_among_all(conn, day, _SHARERS)) for key, day in found.items()}


def _studies(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    found = rows(
        conn,
        """SELECT id, dir_name, study_uid, last_received, last_access FROM studies
           WHERE study_date = ? AND patient = ?""",
        key,
        "dir_name",
        base(wanted),
    )
    return present(named([(n, uid, (sid,), directory(r, a)) for sid, n, uid, r, a in found]))


def _all_studies(conn: Connection) -> dict[Key, list[Listed]]:
    """Every patient's studies of every day, as _studies lists one's."""
    found: dict[Key, list[tuple[str, str, Key, Attributes]]] = collections.defaultdict(list)
    for sid, date, patient, n, uid, r, a in conn.execute(
        """SELECT id, study_date, patient, dir_name, study_uid, last_received, last_access
           FROM studies"""
    ):
        found[(date, patient)].append((n, uid, (sid,), directory(r, a)))
    return {key: present(named(studies)) for key, studies in found.items()}


def _prefix_times(key: Key) -> tuple[str, Key]:
    return f"{ALL_TIMES} WHERE study_date BETWEEN ? AND ?", _date_range(str(key[0]))


def _study_chains(conn: Connection, study: int) -> list[list[Key]]:
    patient, study_date = conn.execute(
        "SELECT patient, study_date FROM studies WHERE id = ?", (study,)
    ).fetchone()
    day = study_date or "00000000"
    return [[(day[:4],), (day[:6],), (day,), (study_date, patient), (study,)]]


VIEW = View(
    "by-date",
    (
        Level(Kind.TOP, _years, lambda key: (ALL_TIMES, ())),
        Level(Kind.GROUP, _date_part(5), _prefix_times, name_of=lambda key: str(key[0])),
        Level(Kind.GROUP, _date_part(7), _prefix_times, name_of=lambda key: str(key[0])[4:6]),
        Level(
            Kind.GROUP,
            _patients,
            _prefix_times,
            name_of=lambda key: str(key[0])[6:8],
            lists_all=_all_patients,
        ),
        Level(
            Kind.GROUP,
            _studies,
            lambda key: (f"{ALL_TIMES} WHERE study_date = ? AND patient = ?", key),
            base_of=lambda conn, key: patient_dir_name(conn, key[1:]),
            lists_all=_all_studies,
        ),
        Level(Kind.STUDY, study_series, study_times, base_of=study_dir_name),
        SERIES,
        FILES,
    ),
    _study_chains,
)
