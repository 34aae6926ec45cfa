"""The virtual trees of the mount, as pure queries over the index.

A node is a small hashable tuple naming one directory or file in one view,
for example ("P-study", 42) for a study directory under by-patient/. This
module maps a directory node to its entries, a (node, name) pair to the child
node, and a node to its attributes; it knows nothing of FUSE, inodes or errno.

Every lister takes an optional `wanted`: the name a lookup asks for. With it,
the lister returns only the entries that can carry that name, those that share
its base (the name before any disambiguating suffix), through an indexed column,
so a lookup never lists a whole directory of a large store.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from typing import NamedTuple

from ..dicom import names
from . import views

Node = tuple[object, ...]
Entry = tuple[str, Node]
ROOT: Node = ("root",)
PAGE: Node = ("page",)  # index.html
PAGE_NAME = "index.html"
TOP: dict[str, Node] = {
    "by-modality": ("M",),
    "by-patient": ("P",),
    "by-date": ("D",),
    "by-received": ("R",),
    "by-uid": ("U",),
}


@dataclasses.dataclass(frozen=True, slots=True)
class FileInfo:
    instance: int
    path: str  # relative to the store
    size: int
    mtime_ns: int
    received_at: float
    last_access: float | None


class Attributes(NamedTuple):  # a tuple: readdir makes one per entry
    """What stat shows. A directory's times summarise what it holds."""

    is_dir: bool
    size: int
    received: float | None  # a file's receipt; a directory's newest receipt inside
    accessed: float | None  # the last read, or None if never read


def is_file(node: Node) -> bool:
    return node == PAGE or str(node[0]).endswith("-file")


def list_dir(conn: sqlite3.Connection, node: Node) -> list[Entry]:
    """The entries of a directory node, sorted by name. Empty if it no longer exists."""
    lister = _LISTERS.get(str(node[0]))
    if lister is None:
        return []
    return sorted(lister(conn, node, None), key=lambda entry: entry[0])


def list_with_attributes(
    conn: sqlite3.Connection, node: Node
) -> list[tuple[str, Node, Attributes]]:
    """list_dir with each entry's attributes, in one pass (what readdir needs)."""
    if str(node[0]).endswith("-series"):
        return _series_files_with_attributes(conn, node)
    listing = []
    for name, child in list_dir(conn, node):
        found = attributes(conn, child)
        if found is not None:
            listing.append((name, child, found))
    return listing


def _series_files_with_attributes(
    conn: sqlite3.Connection, node: Node
) -> list[tuple[str, Node, Attributes]]:
    """The files of a series with their attributes, from one query: the listing that
    `find` and `cp -r` ask for most, so it is worth its own code."""
    tag = f"{str(node[0])[0]}-file"
    rows = conn.execute(
        """SELECT id, file_name, sop_uid, size, received_at, last_access FROM instances
           WHERE series = ?""",
        (node[-1],),
    ).fetchall()
    if tag == "U-file":
        file_names = names.uid_names([uid for _, _, uid, *_ in rows], ".dcm")
    else:
        file_names = names.unique_names([(name, uid) for _, name, uid, *_ in rows])
    entries: list[tuple[str, Node, Attributes]] = [
        (name, (tag, row[0]), Attributes(False, row[3], row[4], row[5]))
        for name, row in zip(file_names, rows, strict=True)
    ]
    entries.sort(key=lambda entry: entry[0])
    return entries


def lookup(conn: sqlite3.Connection, node: Node, name: str) -> Node | None:
    """The child called name, or None."""
    tag = str(node[0])
    if tag == "root":
        return PAGE if name == PAGE_NAME else TOP.get(name)
    lister = _LISTERS.get(tag)
    if lister is None:
        return None
    for entry_name, child in lister(conn, node, name):
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


def attributes(conn: sqlite3.Connection, node: Node) -> Attributes | None:
    """The node's attributes, or None if it no longer exists.

    index.html's size is not known here: it is the adapter's, which generates it."""
    tag = str(node[0])
    if node == PAGE:
        return Attributes(False, 0, None, None)
    if is_file(node):
        info = file_info(conn, node)
        if info is None:
            return None
        return Attributes(False, info.size, info.received_at, info.last_access)
    sql, args = _TIMES[tag](node)
    row = conn.execute(sql, args).fetchone()
    if row is None or (row[0] is None and tag not in _ALWAYS_THERE):
        return None
    return Attributes(True, 0, row[0], row[1])


def _base(wanted: str | None) -> str | None:
    """The wanted name without its suffix, if any."""
    return None if wanted is None else names.split_suffix(wanted)[0]


def _rows(
    conn: sqlite3.Connection, sql: str, args: tuple[object, ...], column: str, value: str | None
) -> list[tuple[object, ...]]:
    """Run sql (which ends in a WHERE clause), narrowed to column = value when given."""
    if value is not None:
        sql += f" AND {column} = ?"
        args = (*args, value)
    return conn.execute(sql, args).fetchall()


def _disambiguate(rows: list[tuple[str, str, Node]]) -> list[Entry]:
    """(base, key, node) -> (unique name, node), by names.unique_names."""
    unique = names.unique_names([(base, key) for base, key, _ in rows])
    return [(name, node) for name, (_, _, node) in zip(unique, rows, strict=True)]


# --- root ------------------------------------------------------------------------------


def _root(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    return [*TOP.items(), (PAGE_NAME, PAGE)]


# --- by-patient/<patient>/<study>/<series>/<file> ------------------------------------


def _patients(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    rows = _rows(
        conn,
        "SELECT id, dir_name, patient_key FROM patients WHERE 1",
        (),
        "dir_name",
        _base(wanted),
    )
    return _disambiguate([(str(name), str(key), ("P-patient", pid)) for pid, name, key in rows])


def _patient_studies(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    args: tuple[object, ...]
    if node[0] == "P-patient":
        tag, sql, args = "P-study", "WHERE patient = ?", (node[1],)
    else:  # under by-date/, a patient directory holds only the studies of that day
        tag, sql, args = "D-study", "WHERE study_date = ? AND patient = ?", (node[1], node[2])
    rows = _rows(
        conn, f"SELECT id, dir_name, study_uid FROM studies {sql}", args, "dir_name", _base(wanted)
    )
    return _disambiguate([(str(name), str(uid), (tag, sid)) for sid, name, uid in rows])


def _study_series(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    tag = f"{str(node[0])[0]}-series"
    rows = _rows(
        conn, "SELECT id, dir_name, series_uid FROM series WHERE study = ?", (node[1],),
        "dir_name", _base(wanted),
    )  # fmt: skip
    return _disambiguate([(str(name), str(uid), (tag, sid)) for sid, name, uid in rows])


def _series_files(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    tag = f"{str(node[0])[0]}-file"
    rows = _rows(
        conn, "SELECT id, file_name, sop_uid FROM instances WHERE series = ?", (node[-1],),
        "file_name", _base(wanted),
    )  # fmt: skip
    return _disambiguate([(str(name), str(uid), (tag, iid)) for iid, name, uid in rows])


# --- by-modality/MR0000.MOD/BWOW1.STA/20040609.DAY/<uid>.UID/000001.SER/<file> -------


def _modalities(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    rows = _rows(
        conn, "SELECT DISTINCT modality_dir FROM series WHERE 1", (), "modality_dir", _base(wanted)
    )
    return [(str(mod), ("M-mod", mod)) for (mod,) in rows]


def _stations(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    rows = _rows(
        conn, "SELECT DISTINCT station_dir FROM series WHERE modality_dir = ?", (node[1],),
        "station_dir", _base(wanted),
    )  # fmt: skip
    return [(str(sta), ("M-sta", node[1], sta)) for (sta,) in rows]


def _days(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    rows = _rows(
        conn,
        """SELECT DISTINCT st.day_dir FROM series se JOIN studies st ON st.id = se.study
           WHERE se.modality_dir = ? AND se.station_dir = ?""",
        (node[1], node[2]),
        "st.day_dir",
        _base(wanted),
    )
    return [(str(day), ("M-day", node[1], node[2], day)) for (day,) in rows]


def _day_studies(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    _, mod, sta, day = node
    rows = _rows(
        conn,
        """SELECT DISTINCT st.id FROM series se JOIN studies st ON st.id = se.study
           WHERE se.modality_dir = ? AND se.station_dir = ? AND st.day_dir = ?""",
        (mod, sta, day),
        "st.uid_dir",
        _base(wanted),
    )
    return [(views.uid_name(conn, int(str(sid))), ("M-study", mod, sta, sid)) for (sid,) in rows]


def _modality_series(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    _, mod, sta, study = node
    rows = _rows(
        conn,
        """SELECT id, number_dir, series_uid FROM series
           WHERE study = ? AND modality_dir = ? AND station_dir = ?""",
        (study, mod, sta),
        "number_dir",
        _base(wanted),
    )
    return _disambiguate([(str(name), str(uid), ("M-series", sid)) for sid, name, uid in rows])


# --- by-date/YYYY/MM/DD/<patient>/<study>/<series>/<file> ----------------------------
# The date levels are small (distinct years, months, days) and ignore `wanted`.


def _years(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    rows = conn.execute("SELECT DISTINCT substr(study_date, 1, 4) FROM studies")
    return [(year or "0000", ("D-year", year or "0000")) for (year,) in rows]


def _months(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    return _next_date_part(conn, node, 5, "D-month")


def _days_of_month(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    return _next_date_part(conn, node, 7, "D-day")


def _next_date_part(conn: sqlite3.Connection, node: Node, start: int, tag: str) -> list[Entry]:
    """The two digits of StudyDate at `start` among studies under the node's prefix."""
    rows = conn.execute(
        f"""SELECT DISTINCT substr(study_date, {start}, 2) FROM studies
            WHERE study_date BETWEEN ? AND ?""",
        _date_range(str(node[1])),
    )
    return [(part or "00", (tag, f"{node[1]}{part or '00'}")) for (part,) in rows]


def _date_range(prefix: str) -> tuple[str, str]:
    if prefix.strip("0") == "":
        return "", ""  # the unknown date: studies without StudyDate
    return prefix.ljust(8, "0"), prefix.ljust(8, "9")


def _day_patients(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    date = "" if str(node[1]).strip("0") == "" else str(node[1])
    rows = _rows(
        conn,
        """SELECT DISTINCT p.id FROM studies st JOIN patients p ON p.id = st.patient
           WHERE st.study_date = ?""",
        (date,),
        "p.dir_name",
        _base(wanted),
    )
    return [(views.patient_name(conn, int(str(pid))), ("D-patient", date, pid)) for (pid,) in rows]


# --- by-received/2026-11-25/14.30.12_<patient>/<series>/<file> -----------------------
# "The time I sent it": each study under the local day and time its first instance
# arrived.


def _received_days(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    rows = conn.execute(
        """SELECT DISTINCT date(first_received, 'unixepoch', 'localtime') FROM studies
           WHERE first_received IS NOT NULL"""
    )
    return [(str(day), ("R-day", day)) for (day,) in rows]


def _received_studies(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    rows = views.received_on(conn, str(node[1]))
    return _disambiguate([(name, uid, ("R-study", sid)) for sid, name, uid in rows])


# --- by-uid/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm -------------
# A plain UID is its own name; any other shows as its safe form with a suffix from its
# hash (names.uid_names). Either way a name's base is the safe form of its UID.


def _uid_studies(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    # uid_dir holds the safe form, so a lookup seeks through its index.
    uid_dir = None if wanted is None else f"{_base(wanted)}.UID"
    rows = _rows(conn, "SELECT id, study_uid FROM studies WHERE 1", (), "uid_dir", uid_dir)
    return _uid_entries(rows, "", "U-study")


def _uid_series(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    sql = "SELECT id, series_uid FROM series WHERE study = ?"
    rows = _uid_rows(conn, sql, (node[1],), "series_uid", wanted, "")
    return _uid_entries(rows, "", "U-series")


def _uid_files(conn: sqlite3.Connection, node: Node, wanted: str | None) -> list[Entry]:
    sql = "SELECT id, sop_uid FROM instances WHERE series = ?"
    rows = _uid_rows(conn, sql, (node[-1],), "sop_uid", wanted, ".dcm")
    return _uid_entries(rows, ".dcm", "U-file")


def _uid_rows(
    conn: sqlite3.Connection,
    sql: str,
    args: tuple[object, ...],
    column: str,
    wanted: str | None,
    ext: str,
) -> list[tuple[object, ...]]:
    """The (id, UID) rows of sql that can carry the wanted name. A name without a
    suffix is a plain UID, sought through the column's index; one with a suffix is
    an odd UID, found by its safe form among the rows of its parent (one study's
    series or one series' files: a bounded list)."""
    if wanted is None:
        return conn.execute(sql, args).fetchall()
    base, digest = names.split_suffix(wanted)
    if digest is None:
        return _rows(conn, sql, args, column, wanted.removesuffix(ext))
    return [
        row
        for row in conn.execute(sql, args)
        if f"{names.safe_component(str(row[1]))}{ext}" == base
    ]


def _uid_entries(rows: list[tuple[object, ...]], ext: str, tag: str) -> list[Entry]:
    found = names.uid_names([str(uid) for _, uid in rows], ext)
    return [(name, (tag, row_id)) for name, (row_id, _) in zip(found, rows, strict=True)]


Lister = Callable[[sqlite3.Connection, Node, str | None], list[Entry]]
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
    "R": _received_days,
    "R-day": _received_studies,
    "R-study": _study_series,
    "R-series": _series_files,
    "U": _uid_studies,
    "U-study": _uid_series,
    "U-series": _uid_files,
}


# --- directory times: (newest receipt, newest access) of what a directory holds -------

Query = tuple[str, tuple[object, ...]]
_ALL = "SELECT max(last_received), max(last_access) FROM studies"
_ALWAYS_THERE = frozenset({"root", *(str(node[0]) for node in TOP.values())})


def _study_times(node: Node) -> Query:
    return "SELECT last_received, last_access FROM studies WHERE id = ?", (node[-1],)


def _series_times(node: Node) -> Query:
    return "SELECT last_received, last_access FROM series WHERE id = ?", (node[-1],)


def _date_times(node: Node) -> Query:
    return f"{_ALL} WHERE study_date BETWEEN ? AND ?", _date_range(str(node[1]))


def _received_day_times(node: Node) -> Query:
    try:
        bounds: tuple[float, float] = views.day_bounds(str(node[1]))
    except ValueError:
        bounds = (0.0, 0.0)
    return f"{_ALL} WHERE first_received >= ? AND first_received < ?", bounds


_TIMES: dict[str, Callable[[Node], Query]] = {
    **{tag: lambda node: (_ALL, ()) for tag in _ALWAYS_THERE},
    "P-patient": lambda node: (f"{_ALL} WHERE patient = ?", (node[1],)),
    "D-patient": lambda node: (f"{_ALL} WHERE study_date = ? AND patient = ?", node[1:]),
    "M-mod": lambda node: (
        "SELECT max(last_received), max(last_access) FROM series WHERE modality_dir = ?",
        node[1:],
    ),
    "M-sta": lambda node: (
        """SELECT max(last_received), max(last_access) FROM series
           WHERE modality_dir = ? AND station_dir = ?""",
        node[1:],
    ),
    "M-day": lambda node: (
        """SELECT max(se.last_received), max(se.last_access)
           FROM series se JOIN studies st ON st.id = se.study
           WHERE se.modality_dir = ? AND se.station_dir = ? AND st.day_dir = ?""",
        node[1:],
    ),
    "M-study": lambda node: (
        """SELECT max(last_received), max(last_access) FROM series
           WHERE modality_dir = ? AND station_dir = ? AND study = ?""",
        node[1:],
    ),
    "D-year": _date_times,
    "D-month": _date_times,
    "D-day": _date_times,
    "R-day": _received_day_times,
    **{f"{view}-study": _study_times for view in "PDRU"},
    **{f"{view}-series": _series_times for view in "PMDRU"},
}
