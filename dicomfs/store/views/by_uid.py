"""by-uid/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm.

A plain UID is its own name; any other shows as its safe form with a suffix from
its hash (names.uid_names). Either way a name's base is the safe form of its UID."""

from __future__ import annotations

from typing import Any

from ...dicom import names
from ..index.engine import Connection
from .levels import (
    ALL_TIMES,
    FILES,
    Attributes,
    Key,
    Kind,
    Level,
    Listed,
    View,
    base,
    directory,
    present,
    rows,
    series_times,
    study_times,
)


def _studies(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    # uid_dir holds the safe form, so a lookup seeks through its index.
    uid_dir = None if wanted is None else f"{base(wanted)}.UID"
    found = rows(
        conn,
        "SELECT study_uid, id, last_received, last_access FROM studies WHERE TRUE",
        (),
        "uid_dir",
        uid_dir,
    )
    return present(_named(found, ""))


def _series(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    sql = "SELECT series_uid, id, last_received, last_access FROM series WHERE study = ?"
    return present(_named(_uid_rows(conn, sql, key, "series_uid", wanted, ""), ""))


def _files(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    sql = """SELECT sop_uid, id, received_at, last_access, size FROM instances
             WHERE series = ?"""
    found = _uid_rows(conn, sql, key, "sop_uid", wanted, ".dcm")
    uids = names.uid_names([str(uid) for uid, *_ in found], ".dcm")
    return [
        (name, (iid,), Attributes(False, size, r, a))
        for name, (_, iid, r, a, size) in zip(uids, found, strict=True)
    ]


def _uid_rows(
    conn: Connection, sql: str, args: Key, column: str, wanted: str | None, ext: str
) -> list[tuple[Any, ...]]:
    """The rows of sql (UID first) that can carry the wanted name. A name without a
    suffix is a plain UID, sought through the column's index; one with a suffix is
    an odd UID, found by its safe form among the rows of its parent (one study's
    series or one series' files: a bounded list)."""
    if wanted is None:
        return conn.execute(sql, args).fetchall()
    wanted_base, digest = names.split_suffix(wanted)
    if digest is None:
        return rows(conn, sql, args, column, wanted.removesuffix(ext))
    return [
        row
        for row in conn.execute(sql, args)
        if f"{names.safe_component(str(row[0]))}{ext}" == wanted_base
    ]


def _named(found: list[tuple[Any, ...]], ext: str) -> list[Listed]:
    uids = names.uid_names([str(uid) for uid, *_ in found], ext)
    return [
        (name, (rid,), directory(r, a)) for name, (_, rid, r, a) in zip(uids, found, strict=True)
    ]


def _safe_form(conn: Connection, key: Key) -> str:
    (uid_dir,) = conn.execute("SELECT uid_dir FROM studies WHERE id = ?", key).fetchone()
    return str(uid_dir).removesuffix(".UID")


VIEW = View(
    "by-uid",
    (
        Level(Kind.TOP, _studies, lambda key: (ALL_TIMES, ())),
        Level(Kind.STUDY, _series, study_times, base_of=_safe_form),
        Level(Kind.SERIES, _files, series_times),
        FILES,
    ),
    lambda conn, study: [[(study,)]],
)
