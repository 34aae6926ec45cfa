"""by-modality/MR0000.MOD/BWOW1.STA/20040609.DAY/<StudyUID>.UID/000001.SER/<file>:
the lab's own layout. A study shows under each modality and station of its series."""

from __future__ import annotations

import collections

from ..index.engine import Connection, Dialect, dialect_of
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
    named,
    named_among_all,
    present,
    rows,
)

_SERIES_TIMES = "SELECT max(last_received), max(last_access) FROM series"
_JOINED = """FROM series se JOIN studies st ON st.id = se.study
             WHERE se.modality_dir = ? AND se.station_dir = ?"""


def _joined_by_name(dialect: Dialect) -> str:
    """_JOINED for a lookup of one study's name: from the studies of that name first
    (SQLite, without statistics, would scan the station's series first)."""
    return f"""FROM studies st {dialect.ordered_join} series se ON st.id = se.study
               WHERE se.modality_dir = ? AND se.station_dir = ?"""


def _modalities(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    found = rows(
        conn,
        "SELECT modality_dir, max(last_received), max(last_access) FROM series WHERE TRUE",
        (),
        "modality_dir",
        base(wanted),
        "GROUP BY modality_dir",
    )
    return present([(mod, (mod,), directory(r, a)) for mod, r, a in found])


def _stations(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    found = rows(
        conn,
        """SELECT station_dir, max(last_received), max(last_access) FROM series
           WHERE modality_dir = ?""",
        key,
        "station_dir",
        base(wanted),
        "GROUP BY station_dir",
    )
    return present([(sta, (*key, sta), directory(r, a)) for sta, r, a in found])


def _days(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    found = rows(
        conn,
        f"SELECT st.day_dir, max(se.last_received), max(se.last_access) {_JOINED}",
        key,
        "st.day_dir",
        base(wanted),
        "GROUP BY st.day_dir",
    )
    return present([(day, (*key, day), directory(r, a)) for day, r, a in found])


# A name shared by other entries of the store, and who shares it (named_among_all):
# for one directory's listing and for every directory's at once alike.
_SHARING = "(SELECT count(*) FROM studies peer WHERE peer.uid_dir = st.uid_dir)"
_SHARERS = "SELECT study_uid FROM studies WHERE uid_dir = ?"


def _studies(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    mod, sta, _ = key
    found = rows(
        conn,
        f"""SELECT st.uid_dir, st.study_uid,
                   {_SHARING},
                   st.id, max(se.last_received), max(se.last_access)
            {_JOINED if wanted is None else _joined_by_name(dialect_of(conn))}
            AND st.day_dir = ?""",
        key,
        "st.uid_dir",
        base(wanted),
        "GROUP BY st.id",
    )
    # Named as the study is everywhere: <uid>.UID, suffixed only if another study of
    # the store has the same safe form.
    return present(
        named_among_all(
            conn,
            [
                (n, uid, peers, (mod, sta, sid), directory(r, a))
                for n, uid, peers, sid, r, a in found
            ],
            _SHARERS,
        )
    )


def _all_studies(conn: Connection) -> dict[Key, list[Listed]]:
    """Every day's studies under every modality and station, as _studies lists one's."""
    found: dict[Key, list[tuple[str, str, int, Key, Attributes]]] = collections.defaultdict(list)
    for mod, sta, day, n, uid, peers, sid, r, a in conn.execute(
        f"""SELECT se.modality_dir, se.station_dir, st.day_dir, st.uid_dir, st.study_uid,
                  {_SHARING},
                  st.id, max(se.last_received), max(se.last_access)
           FROM series se JOIN studies st ON st.id = se.study
           GROUP BY se.modality_dir, se.station_dir, st.id"""
    ):
        found[(mod, sta, day)].append((n, uid, peers, (mod, sta, sid), directory(r, a)))
    return {key: present(named_among_all(conn, day, _SHARERS)) for key, day in found.items()}


def _series(conn: Connection, key: Key, wanted: str | None) -> list[Listed]:
    mod, sta, study = key
    found = rows(
        conn,
        """SELECT id, number_dir, series_uid, last_received, last_access FROM series
           WHERE study = ? AND modality_dir = ? AND station_dir = ?""",
        (study, mod, sta),
        "number_dir",
        base(wanted),
    )
    return present(named([(n, uid, (sid,), directory(r, a)) for sid, n, uid, r, a in found]))


def _uid_dir(conn: Connection, key: Key) -> str:
    (uid_dir,) = conn.execute("SELECT uid_dir FROM studies WHERE id = ?", key[-1:]).fetchone()
    return str(uid_dir)


def _study_chains(conn: Connection, study: int) -> list[list[Key]]:
    places = conn.execute(
        """SELECT DISTINCT se.modality_dir, se.station_dir, st.day_dir
           FROM series se JOIN studies st ON st.id = se.study WHERE st.id = ?
           ORDER BY se.modality_dir, se.station_dir""",
        (study,),
    )
    return [[(mod,), (mod, sta), (mod, sta, day), (mod, sta, study)] for mod, sta, day in places]


VIEW = View(
    "by-modality",
    (
        Level(Kind.TOP, _modalities, lambda key: (ALL_TIMES, ())),
        Level(
            Kind.GROUP,
            _stations,
            lambda key: (f"{_SERIES_TIMES} WHERE modality_dir = ?", key),
            name_of=lambda key: str(key[-1]),
        ),
        Level(
            Kind.GROUP,
            _days,
            lambda key: (f"{_SERIES_TIMES} WHERE modality_dir = ? AND station_dir = ?", key),
            name_of=lambda key: str(key[-1]),
        ),
        Level(
            Kind.GROUP,
            _studies,
            lambda key: (
                f"SELECT max(se.last_received), max(se.last_access) {_JOINED} AND st.day_dir = ?",
                key,
            ),
            name_of=lambda key: str(key[-1]),
            lists_all=_all_studies,
        ),
        Level(
            Kind.STUDY,
            _series,
            lambda key: (
                f"{_SERIES_TIMES} WHERE modality_dir = ? AND station_dir = ? AND study = ?",
                key,
            ),
            base_of=_uid_dir,
        ),
        SERIES,
        FILES,
    ),
    _study_chains,
)
