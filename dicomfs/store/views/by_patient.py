"""by-patient/<patient>/<study>/<series>/<file>: DOE_JOHN_12345/20040609_Brain/000002_T1/."""

from __future__ import annotations

import collections

from ..index.engine import Connection
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
    present,
    rows,
    study_dir_name,
    study_series,
    study_times,
)


def _patients(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    found = rows(
        conn,
        """SELECT p.id, p.dir_name, p.patient_id, p.patient_name, max(st.last_received),
                  max(st.last_access)
           FROM patients p JOIN studies st ON st.patient = p.id WHERE TRUE""",
        (),
        "p.dir_name",
        base(wanted),
        "GROUP BY p.id",
    )
    return present(
        named(
            [
                (dir_name, key_of(patient_id, name), (pid,), directory(r, a))
                for pid, dir_name, patient_id, name, r, a in found
            ]
        )
    )


def _studies(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    found = rows(
        conn,
        "SELECT id, dir_name, study_uid, last_received, last_access FROM studies WHERE patient = ?",
        key,
        "dir_name",
        base(wanted),
    )
    return present(named([(n, uid, (sid,), directory(r, a)) for sid, n, uid, r, a in found]))


def _all_studies(conn: Connection) -> dict[Key, list[Listed]]:
    """Every patient's studies, as _studies lists each patient's."""
    found: dict[Key, list[tuple[str, str, Key, Attributes]]] = collections.defaultdict(list)
    for sid, patient, n, uid, r, a in conn.execute(
        "SELECT id, patient, dir_name, study_uid, last_received, last_access FROM studies"
    ):
        found[(patient,)].append((n, uid, (sid,), directory(r, a)))
    return {key: present(named(studies)) for key, studies in found.items()}


def patient_dir_name(conn: Connection, key: Key) -> str:
    (dir_name,) = conn.execute("SELECT dir_name FROM patients WHERE id = ?", key).fetchone()
    return str(dir_name)


def _study_chains(conn: Connection, study: int) -> list[list[Key]]:
    (patient,) = conn.execute("SELECT patient FROM studies WHERE id = ?", (study,)).fetchone()
    return [[(patient,), (study,)]]


VIEW = View(
    "by-patient",
    (
        Level(Kind.TOP, _patients, lambda key: (ALL_TIMES, ())),
        Level(
            Kind.GROUP,
            _studies,
            lambda key: (f"{ALL_TIMES} WHERE patient = ?", key),
            base_of=patient_dir_name,
            lists_all=_all_studies,
        ),
        Level(Kind.STUDY, study_series, study_times, base_of=study_dir_name),
        SERIES,
        FILES,
    ),
    _study_chains,
)
