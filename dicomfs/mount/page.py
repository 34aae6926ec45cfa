"""index.html at the root of the mount: every study on one page, for Find-in-page.

The live successor of the lab's hourly DICOM_files_as_of_*.html listing: the
page is generated from the index each time it is opened. Every value is
HTML-escaped, since any of them (a PatientName, too) may carry markup.
"""

from __future__ import annotations

import datetime
import time
from html import escape
from pathlib import Path
from typing import Any

from ..life import expiry
from ..store import views
from ..store.catalog import study_rows
from ..store.index import Index

_STYLE = """
body { font-family: sans-serif; margin: 1em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; vertical-align: top; text-align: left; }
th { background: #eee; position: sticky; top: 0; }
td.paths { font-family: monospace; font-size: 90%; }
"""

_COLUMNS = (
    ("Patient name", "patient_name"),
    ("Patient ID", "patient_id"),
    ("Study date", "study_date"),
    ("Description", "description"),
    ("Accession", "accession"),
    ("Modality", "modalities"),
    ("Station", "stations"),
    ("Sender", "senders"),
    ("Received", "received_at"),
    ("Series", "series"),
    ("Images", "instances"),
    ("Kept", "kept"),
)


def render(index: Index, mountpoint: Path) -> bytes:
    """The page, newest receipt first, with each study's directories in every view."""
    study_ids = index.study_ids()
    rows = sorted(
        study_rows(index, study_ids, mountpoint), key=lambda r: r["received_at"], reverse=True
    )
    kept = expiry.kept_study_uids(index.conn, time.time())
    for row in rows:
        row["kept"] = "KEPT" if row["study_uid"] in kept else ""
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    instances = sum(row["instances"] for row in rows)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>DICOM studies in {escape(str(mountpoint))} as of {escape(now)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>DICOM studies in {escape(str(mountpoint))}</h1>",
        f"<p>{len(rows)} studies, {instances} images, as of {escape(now)}. "
        "Use your browser's Find in page (Ctrl-F) for a patient name or ID, then "
        "<code>cd</code> to one of the study's directories.</p>",
        "<table><thead><tr>",
        *(f"<th>{escape(title)}</th>" for title, _ in _COLUMNS),
        "<th>Directories</th></tr></thead><tbody>",
        *(_row(row) for row in rows),
        "</tbody></table></body></html>",
        "",
    ]
    return "\n".join(parts).encode("utf-8")


def _row(row: dict[str, Any]) -> str:
    cells = "".join(f"<td>{escape(str(row[key]))}</td>" for _, key in _COLUMNS)
    paths = "<br>".join(escape(path) for view in views.VIEW_NAMES for path in row["paths"][view])
    return f'<tr>{cells}<td class="paths">{paths}</td></tr>'
