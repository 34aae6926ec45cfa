"""by-received/2026-11-25/14.30.12_<patient>_<study>/<series>/<file>: "the time I sent
it", each study under the local day and time its first instance arrived."""

from __future__ import annotations

import datetime
import time

from ...dicom import names
from ..index.engine import Connection, dialect_of
from .levels import (
    ALL_TIMES,
    FILES,
    SERIES,
    Key,
    Kind,
    Level,
    Listed,
    View,
    base,
    directory,
    named,
    present,
    study_series,
    study_times,
)


def day_bounds(day: str) -> tuple[float, float]:
    """Unix times of the local midnights that start and end a YYYY-MM-DD day."""
    start = datetime.datetime.strptime(day, "%Y-%m-%d")
    return start.timestamp(), (start + datetime.timedelta(days=1)).timestamp()


def _day_of(received: float | None) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(received or 0))


def _days(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    found = conn.execute(
        f"""SELECT {dialect_of(conn).local_day("first_received")}, max(last_received),
                   max(last_access)
            FROM studies WHERE first_received IS NOT NULL GROUP BY 1"""
    )
    return present([(day, (day,), directory(r, a)) for day, r, a in found])


def _studies(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    """A day's studies; for a wanted name, those that arrived in the second its clock
    names, through the index on first_received."""
    try:
        start, end = day_bounds(str(key[0]))
    except ValueError:
        return []
    if wanted is not None:
        windows = _clock_windows(str(key[0]), str(base(wanted)))
        if not windows:
            return []  # no name of this directory starts otherwise
        # One range, through the index on first_received: the second the name's
        # clock gives (an hour wide only where the clock goes back).
        start, end = max(start, windows[0][0]), min(end, windows[-1][1])
    sql = """SELECT st.id, st.first_received, p.dir_name, st.dir_name, st.study_uid,
                    st.last_received, st.last_access
             FROM studies st JOIN patients p ON p.id = st.patient
             WHERE st.first_received >= ? AND st.first_received < ?"""
    args: tuple[object, ...] = (start, end)
    wanted_base = None if wanted is None else str(base(wanted))
    if wanted_base is not None and len(wanted_base.encode("utf-8")) < names.BASE_MAX - 3:
        # Not cut short: the rest of the name is the patient's and the study's, whole.
        sql += " AND p.dir_name || '_' || st.dir_name = ?"
        args += (wanted_base[9:],)
    found = conn.execute(sql, args)
    return present(
        named(
            [
                (_received_base(first, patient_dir, study_dir), uid, (sid,), directory(r, a))
                for sid, first, patient_dir, study_dir, uid, r, a in found
            ]
        )
    )


def _clock_windows(day: str, name: str) -> list[tuple[float, float]]:
    """The unix times at which a study got a name starting 'HH.MM.SS_' on a local day:
    one second, or two an hour apart where the clock goes back (each a little wider,
    so that no such study falls outside). Empty if the name has no clock."""
    clock, underscore = name[:8], name[8:9]
    try:
        moment = time.strptime(f"{day} {clock}", "%Y-%m-%d %H.%M.%S")
    except ValueError:
        return []
    if underscore != "_":
        return []
    starts = {time.mktime((*moment[:8], dst)) for dst in (0, 1)}
    return [(second - 1, second + 2) for second in sorted(starts)]


def _study_base(conn: Connection, key: Key) -> str:
    first, patient_dir, study_dir = conn.execute(
        """SELECT st.first_received, p.dir_name, st.dir_name
           FROM studies st JOIN patients p ON p.id = st.patient WHERE st.id = ?""",
        key,
    ).fetchone()
    return _received_base(first, patient_dir, study_dir)


def _received_base(first_received: float, patient_dir: str, study_dir: str) -> str:
    """14.30.12_DOE_JOHN_12345_20040609_Brain: when it came, whose, which exam."""
    clock = time.strftime("%H.%M.%S", time.localtime(first_received))
    return names.truncate_utf8(f"{clock}_{patient_dir}_{study_dir}", names.BASE_MAX)


def _day_times(key: Key) -> tuple[str, Key]:
    try:
        bounds: tuple[float, float] = day_bounds(str(key[0]))
    except ValueError:
        bounds = (0.0, 0.0)
    return f"{ALL_TIMES} WHERE first_received >= ? AND first_received < ?", bounds


def _study_chains(conn: Connection, study: int) -> list[list[Key]]:
    (first,) = conn.execute("SELECT first_received FROM studies WHERE id = ?", (study,)).fetchone()
    return [[(_day_of(first),), (study,)]]


VIEW = View(
    "by-received",
    (
        Level(Kind.TOP, _days, lambda key: (ALL_TIMES, ())),
        Level(Kind.GROUP, _studies, _day_times, name_of=lambda key: str(key[0])),
        Level(Kind.STUDY, study_series, study_times, base_of=_study_base),
        SERIES,
        FILES,
    ),
    _study_chains,
)
