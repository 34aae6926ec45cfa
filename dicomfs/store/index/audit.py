"""The audit trail: one append-only table of receptions, pulls, rejections, reads,
queries, retrievals and deletions: who sent, fetched, asked for, read or deleted
which patient's images, and when.

Rows are never updated or deleted (triggers in the schema refuse it); this module
writes them and answers `dicomfs audit`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

from .engine import Connection

FIELDS = (
    "at", "event", "calling_aet", "address", "called_aet", "user", "patient_id",
    "patient_name", "study_uid", "series_uid", "instances", "bytes", "outcome", "detail",
)  # fmt: skip
# The columns in SQL: "user" is a word of PostgreSQL's own, quoted in both engines.
_COLUMNS = ", ".join(f'"{field}"' for field in FIELDS)


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    event: str  # received, pulled, rejected, read, deleted, queried, retrieved
    outcome: str = "ok"
    at: float = dataclasses.field(default_factory=time.time)
    calling_aet: str | None = None
    address: str | None = None
    called_aet: str | None = None
    user: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    instances: int | None = None
    bytes: int | None = None
    detail: str | None = None


def append(conn: Connection, records: Iterable[Record]) -> None:
    """Add records; the caller's transaction makes them durable."""
    conn.executemany(
        f"INSERT INTO audit ({_COLUMNS}) VALUES ({', '.join('?' * len(FIELDS))})",
        (tuple(getattr(record, field) for field in FIELDS) for record in records),
    )


def search(
    conn: Connection,
    *,
    patient_id: str | None = None,
    since: float | None = None,
    until: float | None = None,
    event: str | None = None,
) -> list[dict[str, Any]]:
    """Records in time order, narrowed by whichever filters are given."""
    clauses, args = [], []
    for clause, value in (
        ("patient_id = ?", patient_id),
        ("at >= ?", since),
        ("at < ?", until),
        ("event = ?", event),
    ):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM audit {where} ORDER BY at, id", args)
    return [dict(zip(FIELDS, row, strict=True)) for row in rows]


def as_line(record: Record) -> str:
    """A record on one line, its fields named: for the log, when the index cannot
    take it."""
    values = (f"{field}={getattr(record, field)!r}" for field in FIELDS)
    return " ".join(value for value in values if not value.endswith("=None"))
