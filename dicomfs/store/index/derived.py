"""Values the index derives from its rows, kept in step by every write (and filled
in by the migration that brought them): time summaries, description words."""

from __future__ import annotations

from collections.abc import Iterable

from ...dicom.meta import fold
from .engine import Connection


def summarise_times(conn: Connection, series_rows: Iterable[tuple[int]]) -> None:
    """Recompute the time summaries of these series and of their studies."""
    studies = set()
    for (series_id,) in series_rows:
        row = conn.execute(
            """UPDATE series SET
                   last_received = (SELECT max(received_at) FROM instances WHERE series = ?1),
                   last_access = (SELECT max(last_access) FROM instances WHERE series = ?1)
               WHERE id = ?1 RETURNING study""",
            (series_id,),
        ).fetchone()
        if row:
            studies.add(row[0])
    for study_id in studies:
        summarise_study_times(conn, study_id)


def summarise_study_times(conn: Connection, study_id: int) -> None:
    conn.execute(
        """UPDATE studies SET
               first_received = (SELECT min(i.received_at) FROM series se
                                 JOIN instances i ON i.series = se.id WHERE se.study = ?1),
               last_received = (SELECT max(last_received) FROM series WHERE study = ?1),
               last_access = (SELECT max(last_access) FROM series WHERE study = ?1)
           WHERE id = ?1""",
        (study_id,),
    )


def set_words(conn: Connection, table: str, column: str, row_id: int, description: str) -> None:
    """The words of a study's or series' description, folded as names are, replacing
    those it had (its rows' deletion takes them along: ON DELETE CASCADE)."""
    conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (row_id,))
    conn.executemany(
        f"INSERT INTO {table} (word, {column}) VALUES (?, ?) ON CONFLICT DO NOTHING",
        ((word, row_id) for word in set(fold(description).split())),
    )
