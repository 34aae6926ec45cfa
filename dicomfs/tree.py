"""The virtual trees of the mount, as pure queries over the index.

A node is a small hashable tuple naming one directory or file in one view,
for example ("P-study", 42) for a study directory under by-patient/. This
module maps a directory node to its entries and a (node, name) pair to the
child node; it knows nothing of FUSE, inodes or errno.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable

from . import names, views

Node = tuple[object, ...]
ROOT: Node = ("root",)
TOP = {"by-modality": ("M",), "by-patient": ("P",), "by-date": ("D",), "by-uid": ("U",)}


@dataclasses.dataclass(frozen=True, slots=True)
class FileInfo:
    instance: int
    path: str  # relative to the store
    size: int
    mtime_ns: int
    received_at: float
    last_access: float | None


def is_file(node: Node) -> bool:
    return str(node[0]).endswith("-file")


def list_dir(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    """The entries of a directory node, sorted by name. Empty if it no longer exists."""
    lister = _LISTERS.get(str(node[0]))
    if lister is None:
        return []
    return sorted(lister(conn, node), key=lambda entry: entry[0])


def lookup(conn: sqlite3.Connection, node: Node, name: str) -> Node | None:
    """The child called name, or None."""
    if node == ("U",):
        return _uid_lookup(conn, name)
    for entry_name, child in list_dir(conn, node):
        if entry_name == name:
            return child
    return None


def file_info(conn: sqlite3.Connection, node: Node) -> FileInfo | None:
    row = conn.execute(
        """SELECT id, path, size, mtime_ns, received_at, last_access
           FROM instances WHERE id = ?""",
        (node[-1],),
    ).fetchone()
    return FileInfo(*row) if row else None


def _disambiguate(rows: list[tuple[str, str, Node]]) -> list[tuple[str, Node]]:
    """(base, key, node) -> (unique name, node): shared bases get the key's suffix."""
    counts: dict[str, int] = {}
    for base, _, _ in rows:
        counts[base] = counts.get(base, 0) + 1
    return [
        (names.with_suffix(base, key) if counts[base] > 1 else base, node)
        for base, key, node in rows
    ]


# --- root ------------------------------------------------------------------------------


def _root(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    return list(TOP.items())


# --- by-patient/<patient>/<study>/<series>/<file> ------------------------------------


def _patients(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    rows = conn.execute("SELECT id, dir_name, patient_key FROM patients")
    return _disambiguate([(name, key, ("P-patient", pid)) for pid, name, key in rows])


def _patient_studies(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    tag = "P-study" if node[0] == "P-patient" else "D-study"
    rows = conn.execute(
        "SELECT id, dir_name, study_uid FROM studies WHERE patient = ?" + _date_filter(node),
        (node[-1], *node[1:-1]),
    )
    return _disambiguate([(name, uid, (tag, sid)) for sid, name, uid in rows])


def _date_filter(node: Node) -> str:
    # Under by-date/, a patient directory holds only the studies of that day.
    return " AND study_date = ?" if node[0] == "D-patient" else ""


def _study_series(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    tag = {"P-study": "P-series", "D-study": "D-series", "U-study": "U-series"}[str(node[0])]
    column = "series_uid" if tag == "U-series" else "dir_name"
    rows = conn.execute(f"SELECT id, {column}, series_uid FROM series WHERE study = ?", (node[1],))
    if tag == "U-series":
        return [(names.safe_component(uid), (tag, sid)) for sid, uid, _ in rows]
    return _disambiguate([(name, uid, (tag, sid)) for sid, name, uid in rows])


def _series_files(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    tag = f"{str(node[0])[0]}-file"
    if tag == "U-file":
        rows = conn.execute("SELECT id, sop_uid FROM instances WHERE series = ?", (node[-1],))
        return [(f"{names.safe_component(uid)}.dcm", (tag, iid)) for iid, uid in rows]
    rows = conn.execute(
        "SELECT id, file_name, sop_uid FROM instances WHERE series = ?", (node[-1],)
    )
    return _disambiguate([(name, uid, (tag, iid)) for iid, name, uid in rows])


# --- by-modality/MR0000.MOD/BWOW1.STA/20040609.DAY/<uid>.UID/000001.SER/<file> -------


def _modalities(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    rows = conn.execute("SELECT DISTINCT modality_dir FROM series")
    return [(mod, ("M-mod", mod)) for (mod,) in rows]


def _stations(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    rows = conn.execute(
        "SELECT DISTINCT station_dir FROM series WHERE modality_dir = ?", (node[1],)
    )
    return [(sta, ("M-sta", node[1], sta)) for (sta,) in rows]


def _days(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    rows = conn.execute(
        """SELECT DISTINCT st.day_dir FROM series se JOIN studies st ON st.id = se.study
           WHERE se.modality_dir = ? AND se.station_dir = ?""",
        (node[1], node[2]),
    )
    return [(day, ("M-day", node[1], node[2], day)) for (day,) in rows]


def _day_studies(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    _, mod, sta, day = node
    rows = conn.execute(
        """SELECT DISTINCT st.id, st.study_uid FROM series se JOIN studies st ON st.id = se.study
           WHERE se.modality_dir = ? AND se.station_dir = ? AND st.day_dir = ?""",
        (mod, sta, day),
    )
    return [(views.uid_name(conn, sid), ("M-study", mod, sta, sid)) for sid, _ in rows]


def _modality_series(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    _, mod, sta, study = node
    rows = conn.execute(
        """SELECT id, number_dir, series_uid FROM series
           WHERE study = ? AND modality_dir = ? AND station_dir = ?""",
        (study, mod, sta),
    )
    return _disambiguate([(name, uid, ("M-series", sid)) for sid, name, uid in rows])


# --- by-date/YYYY/MM/DD/<patient>/<study>/<series>/<file> ----------------------------


def _years(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    rows = conn.execute("SELECT DISTINCT substr(study_date, 1, 4) FROM studies")
    return [(year or "0000", ("D-year", year or "0000")) for (year,) in rows]


def _months(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    return _next_date_part(conn, node, 5, "D-month")


def _days_of_month(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    return _next_date_part(conn, node, 7, "D-day")


def _next_date_part(
    conn: sqlite3.Connection, node: Node, start: int, tag: str
) -> list[tuple[str, Node]]:
    """The two digits of StudyDate at `start` among studies under the node's prefix."""
    lo, hi = _date_range(str(node[1]))
    rows = conn.execute(
        f"""SELECT DISTINCT substr(study_date, {start}, 2) FROM studies
            WHERE study_date BETWEEN ? AND ?""",
        (lo, hi),
    )
    return [(part or "00", (tag, f"{node[1]}{part or '00'}")) for (part,) in rows]


def _date_range(prefix: str) -> tuple[str, str]:
    if prefix.strip("0") == "":
        return "", ""  # the unknown date: studies without StudyDate
    return prefix.ljust(8, "0"), prefix.ljust(8, "9")


def _day_patients(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    date = "" if str(node[1]).strip("0") == "" else str(node[1])
    rows = conn.execute(
        "SELECT DISTINCT patient FROM studies WHERE study_date = ?", (date,)
    ).fetchall()
    return [(views.patient_name(conn, pid), ("D-patient", date, pid)) for (pid,) in rows]


# --- by-uid/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm -------------


def _uid_studies(conn: sqlite3.Connection, node: Node) -> list[tuple[str, Node]]:
    rows = conn.execute("SELECT id, study_uid FROM studies")
    return [(names.safe_component(uid), ("U-study", sid)) for sid, uid in rows]


def _uid_lookup(conn: sqlite3.Connection, name: str) -> Node | None:
    """A study by UID even when it is not listed (looked up, not scanned)."""
    row = conn.execute("SELECT id FROM studies WHERE study_uid = ?", (name,)).fetchone()
    if row:
        return ("U-study", row[0])
    for entry_name, child in _uid_studies_named(conn, name):
        if entry_name == name:
            return child
    return None


def _uid_studies_named(conn: sqlite3.Connection, name: str) -> list[tuple[str, Node]]:
    # Odd UIDs are shown sanitised; their uid_dir holds the same sanitised form.
    rows = conn.execute("SELECT id, study_uid FROM studies WHERE uid_dir = ?", (f"{name}.UID",))
    return [(names.safe_component(uid), ("U-study", sid)) for sid, uid in rows]


Lister = Callable[[sqlite3.Connection, Node], list[tuple[str, Node]]]
_LISTERS: dict[str, Lister] = {
    "root": _root,
    "P": _patients,
    "P-patient": _patient_studies,
    "P-study": _study_series,
    "P-series": _series_files,
    "M": _modalities,
    "M-mod": _stations,
    "M-sta": _days,
    "M-day": _day_studies,
    "M-study": _modality_series,
    "M-series": _series_files,
    "D": _years,
    "D-year": _months,
    "D-month": _days_of_month,
    "D-day": _day_patients,
    "D-patient": _patient_studies,
    "D-study": _study_series,
    "D-series": _series_files,
    "U": _uid_studies,
    "U-study": _study_series,
    "U-series": _series_files,
}
