"""Each study as `dicomfs find` and index.html show it: its summary, in ISO dates,
with its directory in every view of the mount."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import views
from .index import Index

# From this many studies on, every study's paths are found at once (views.all_study_paths):
# below, each study's own take less.
ALL_AT_ONCE = 200


def study_rows(index: Index, study_ids: Iterable[int], mountpoint: Path) -> list[dict[str, Any]]:
    rows = []
    wanted = list(study_ids)
    namer = views.Namer(index.conn)
    every = views.all_study_paths(index.conn) if len(wanted) >= ALL_AT_ONCE else None
    mounted = str(mountpoint).rstrip("/")  # joined as text: pathlib costs more than the query
    for summary in index.study_summaries(wanted):
        paths = (every or {}).get(summary.id) or namer.study_paths(summary.id)
        rows.append(
            {
                "patient_name": summary.patient_name,
                "patient_id": summary.patient_id,
                "study_date": iso_date(summary.study_date),
                "study_time": iso_time(summary.study_time),
                "description": summary.description,
                "accession": summary.accession,
                "modalities": summary.modalities,
                "stations": summary.stations,
                "series": summary.series_count,
                "instances": summary.instance_count,
                "bytes": summary.size,
                "received_at": iso(summary.received_at),
                "senders": summary.senders,
                "study_uid": summary.study_uid,
                "paths": {view: [f"{mounted}/{p}" for p in found] for view, found in paths.items()},
            }
        )
    return rows


def iso(timestamp: float) -> str:
    if not timestamp:
        return ""
    when = datetime.datetime.fromtimestamp(timestamp).astimezone()
    return when.isoformat(timespec="seconds")


def iso_date(value: str) -> str:
    """A DICOM date as ISO 8601: '20040609' -> '2004-06-09'; '' when there is none."""
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 else ""


def iso_time(value: str) -> str:
    """A DICOM time as ISO 8601: '143000.5' -> '14:30:00.5', '0930' -> '09:30:00'."""
    digits, dot, fraction = value.partition(".")
    if not digits.isdigit() or len(digits) not in (2, 4, 6):
        return ""
    hours, minutes, seconds = digits[:2], digits[2:4] or "00", digits[4:6] or "00"
    return f"{hours}:{minutes}:{seconds}{dot}{fraction}"
