"""index.html at the root of the mount: every study on one page, to find one and `cd` to it.

The live successor of the lab's hourly DICOM_files_as_of_*.html listing: the page
is generated from the index each time it is opened. It fits a laptop's screen, one
row per study, newest received first, with the study's directory in one view and a
button that copies the `cd` to it. index.html shows by-patient/; a hidden page beside
it shows each other view (views.page_name), and the page's own links switch between
them. A search box filters the rows as `dicomfs find` matches (case and accents
aside), a click on a column sorts by it, and both stay in the URL's fragment, so a
link can be sent to a colleague. A click on a study shows its series below it
(series_page.py). The script (page.js) only filters, sorts, copies and shows series:
without it the page is the same complete table, for Find in page (Ctrl-F).

The page is one file that asks nothing of any other host: its style (page.css) and
script are inline, allowed by their hashes in its Content-Security-Policy, and
nothing else may run. Every value is HTML-escaped, since any of them (a PatientName,
too) may carry markup.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import time
from importlib import resources
from pathlib import Path

from ..life import expiry
from ..store import views
from ..store.catalog import iso_date
from ..store.index import Index, StudySummary

_STYLE = resources.files(__package__).joinpath("page.css").read_text("utf-8")
_SCRIPT_TEMPLATE = resources.files(__package__).joinpath("page.js").read_text("utf-8")


def source_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


# (title, numeric: sorted by data-v and aligned right)
_COLUMNS = (
    ("Patient", False), ("ID", False), ("Date", False), ("Description", False),
    ("Accession", False), ("Mod.", False), ("Station", False), ("Sender", False),
    ("Received", True), ("Series", True), ("Images", True), ("Size", True),
    ("Expires", True), ("Directory", False),
)  # fmt: skip
_RECEIVED = 8  # the column of the default order, newest first
ROWS_PER_BODY = 100  # rows in one tbody (see page.css)
_KEPT_SORTS = 9e15  # after every date: kept studies sort last when soonest comes first
_DATE, _SERIES = 2, 9  # the columns of the study's date and its series count
_SEARCHED = 8  # the columns a search looks in: patient to sender
SERIES_ROW_HEIGHT = 60  # pixels a series takes on its page (series_page.py)
_SCRIPT = (
    _SCRIPT_TEMPLATE.replace("@ROW_HEIGHT@", str(SERIES_ROW_HEIGHT))
    .replace("@SERIES@", str(_SERIES))
    .replace("@SEARCHED@", str(_SEARCHED))
    .replace("@DATE@", str(_DATE))
)

# Only this style and this script, and the series pages and thumbnails of the mount
# itself (file:): nothing from any other host, no other script (a value that slipped
# through escaping would not run).
_POLICY = (
    f"default-src 'none'; style-src '{source_hash(_STYLE)}'; "
    f"script-src '{source_hash(_SCRIPT)}'; frame-src 'self' file:; img-src 'self' file:; "
    "base-uri 'none'; form-action 'none'"
)

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})
_MARKUP = re.compile("[&<>\"']").search


def escape(text: str) -> str:
    """html.escape, at a tenth of its cost for the values that need none (nearly all)."""
    return text.translate(_ESCAPES) if _MARKUP(text) else text


def render(
    index: Index, mountpoint: Path, view: str = views.PAGE_VIEW, *, retention: float | None = None
) -> bytes:
    """The page of every study, newest receipt first, with its directories in `view`.
    retention: when series expire (serve's --retention); None: no expiry is shown."""
    now = time.time()
    summaries = sorted(
        index.study_summaries(index.study_ids()), key=lambda s: s.received_at, reverse=True
    )
    paths = views.all_study_paths(index.conn, (view,))
    kept = expiry.kept_study_uids(index.conn, now)
    used = expiry.least_used_by_study(index.conn)
    base = f"{str(mountpoint).rstrip('/')}/{view}"
    when = datetime.datetime.fromtimestamp(now).strftime("%Y-%m-%d %H:%M")
    instances = sum(s.instance_count for s in summaries)
    expires = _Expiry(now, retention, kept, used)
    links = "".join(
        f'<a href="{views.page_name(name)}" data-view="{name}"'
        f"{' aria-current=page' if name == view else ''}>{name}</a>"
        for name in views.VIEW_NAMES
    )
    head = "".join(
        f"<th{' class=n' if numeric and column != _RECEIVED else ''}"
        f"{' data-down' if numeric or column == _DATE else ''}"  # sorted newest first
        f"{' aria-sort=descending' if column == _RECEIVED else ''}>{title}"
        for column, (title, numeric) in enumerate(_COLUMNS)
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>DICOM studies in {escape(str(mountpoint))}</title>",
        f"<style>{_STYLE}</style></head><body><header>",
        f"<h1>DICOM studies in {escape(str(mountpoint))}</h1>",
        f"<div>{len(summaries)} studies, {instances} images, as of {when}. Directories in "
        f"<code>{escape(base)}/</code>; show them in: <nav>{links}</nav></div>",
        '<div class="js-only"><input id="q" type="search" autofocus aria-label="Search" '
        'placeholder="Name, ID, accession, description, station, sender, date"> '
        '<span id="count"></span><output id="copied"></output></div>',
        "<noscript><div>Find a study with your browser's Find in page (Ctrl-F).</div></noscript>",
        f'</header><table id="studies" data-view="{view}" data-base="{escape(base)}">',
        f"<thead><tr>{head}</thead><tbody>",
        *(
            ("</tbody><tbody>" if number and not number % ROWS_PER_BODY else "")
            + _row(s, paths.get(s.id, {}).get(view, []), now, expires, view)
            for number, s in enumerate(summaries)
        ),
        "</tbody></table>",
        f"<script>{_SCRIPT}</script></body></html>",
        "",
    ]
    return "\n".join(parts).encode("utf-8")


class _Expiry:
    """When each study's first series will expire, as the page says it."""

    def __init__(
        self, now: float, retention: float | None, kept: set[str], used: dict[int, float]
    ) -> None:
        self.now, self.retention, self.kept, self.used = now, retention, kept, used

    def cell(self, summary: StudySummary) -> str:
        if summary.study_uid in self.kept:
            return f'<td class="n kept" data-v={_KEPT_SORTS:.0f}>KEPT'
        if self.retention is None or summary.id not in self.used:
            return f"<td class=n data-v={_KEPT_SORTS:.0f}>"
        at = self.used[summary.id] + self.retention
        return f"<td class=n data-v={at:.0f}>{_from_now(at - self.now)}"


def _row(summary: StudySummary, paths: list[str], now: float, expires: _Expiry, view: str) -> str:
    received = summary.received_at
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(received))
    directories = "".join(
        f"<div><code><bdi>{escape(path.removeprefix(view + '/'))}</bdi></code><button "
        'title="Copy the cd to this directory"></button></div>'
        for path in paths
    )
    return (
        f"<tr data-s={summary.id}><td>{escape(summary.patient_name)}"
        f"<td>{escape(summary.patient_id)}"
        f"<td>{iso_date(summary.study_date)}<td>{escape(summary.description)}"
        f"<td>{escape(summary.accession)}<td>{escape(summary.modalities)}"
        f"<td>{escape(summary.stations)}<td>{escape(summary.senders)}"
        f"<td data-v={received:.0f}>{stamp} · {_ago(now - received)}"
        f"<td class=n>{summary.series_count}<td class=n>{summary.instance_count}"
        f"<td class=n data-v={summary.size}>{size_text(summary.size)}"
        f"{expires.cell(summary)}<td class=p>{directories}"
    )


def _ago(seconds: float) -> str:
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h ago"
    days = seconds // 86400
    return f"{days:.0f} day{'s' if days > 1 else ''} ago"


def _from_now(seconds: float) -> str:
    if seconds <= 0:
        return "due"  # at the next sweep
    if seconds < 3600:
        return f"in {max(seconds // 60, 1):.0f} min"
    if seconds < 86400:
        return f"in {seconds // 3600:.0f} h"
    days = round(seconds / 86400)  # a series received now: "in 7 days" at a week's retention
    return f"in {days} day{'s' if days > 1 else ''}"


def size_text(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    value, unit = size / 1000, "KB"
    for larger in ("MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, larger
    return f"{value:.1f} {unit}"
