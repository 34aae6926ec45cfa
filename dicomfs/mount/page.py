"""index.html at the root of the mount: every study on one page, to find one and `cd` to it.

The live successor of the lab's hourly DICOM_files_as_of_*.html listing: the page
is generated from the index each time it is opened. It fits a laptop's screen, one
row per study, newest received first, with the study's directory in one view and a
button that copies the `cd` to it. index.html shows by-patient/; a hidden page beside
it shows each other view (views.page_name), and the page's own links switch between
them. A search box filters the rows as `dicomfs find` matches (case and accents
aside), a click on a column sorts by it, and both stay in the URL's fragment, so a
link can be sent to a colleague. The script only filters, sorts and copies: without
it the page is the same complete table, for Find in page (Ctrl-F).

The page is one file that asks nothing of any other host: its style and script are
inline, allowed by their hashes in its Content-Security-Policy, and nothing else may
run. Every value is HTML-escaped, since any of them (a PatientName, too) may carry
markup.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import time
from pathlib import Path

from ..life import expiry
from ..store import views
from ..store.catalog import iso_date
from ..store.index import Index, StudySummary

_STYLE = """
:root { font: 13px/1.45 system-ui, sans-serif; color: #1d1d1f; }
body { margin: 0 12px 12px; }
header { padding: 8px 0 4px; }
h1 { font-size: 17px; margin: 0 0 4px; }
header div { margin: 2px 0; color: #555; }
nav { display: inline; }
nav a { margin-right: 10px; }
nav a[aria-current] { font-weight: bold; color: inherit; text-decoration: none; }
#q { width: 52ch; font: inherit; padding: 2px 6px; }
.js-only { display: none; }
.js .js-only { display: revert; }
output { color: #0a6b2c; margin-left: 10px; }
table, thead, tbody { display: block; }
/* Rows come in groups of a hundred, one tbody each: Chromium lays out only the
   groups on screen (at 10,000 studies, 0.7 s -> 0.4 s to open; 9 s with none). */
tbody { content-visibility: auto; contain-intrinsic-size: auto 2000px; }
tr {
  display: grid;
  grid-template-columns:
    minmax(11ch, 1.2fr) minmax(8.5ch, .6fr) 10.5ch minmax(9ch, .9fr) minmax(8ch, .4fr)
    5.5ch minmax(8.5ch, .5fr) minmax(8ch, .4fr) 29ch 6.5ch 7.5ch 8ch 9ch minmax(22ch, 2.6fr);
}
th, td {
  min-width: 0; padding: 1px 4px; overflow: hidden; white-space: nowrap;
  text-overflow: ellipsis; border-bottom: 1px solid #e6e6e6; text-align: left;
}
thead { position: sticky; top: 0; background: #f3f3f3; z-index: 1; }
th { font-weight: 600; font-size: 12px; user-select: none; }
th.n { text-align: right; }
.js th { cursor: pointer; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
tbody[hidden], tbody tr[hidden] { display: none; }
.js tbody tr[data-s] { cursor: pointer; }
tr.series { display: block; }
tr.series td { display: block; padding: 2px 0 6px 28px; }
tr.series iframe { width: 100%; border: 1px solid #d0d0d0; display: block; }
tbody tr:hover { background: #eef5ff; }
.n { text-align: right; font-variant-numeric: tabular-nums; }
td.p div { display: flex; gap: 4px; }
td.p code { flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; }
/* A path too long is cut at its start: its end names the study. */
td.p code { direction: rtl; text-align: left; }
td.p bdi { direction: ltr; }
td.p button { display: none; font: 11px monospace; padding: 0 4px; }
.js td.p button { display: inline; }
td.p button::before { content: "cd"; }
.kept { color: #0a6b2c; font-weight: 600; }
"""

_SCRIPT_TEMPLATE = """
"use strict";
const ROW_HEIGHT = @ROW_HEIGHT@;  // a series on its page (SERIES_ROW_HEIGHT)
const SERIES = @SERIES@;  // the column of a study's series count
const table = document.getElementById("studies");
const bodies = Array.from(table.tBodies);
const rows = bodies.flatMap((body) => Array.from(body.rows));
const perBody = bodies[0].rows.length;
let order = rows.slice();  // the rows as sorted now
const search = document.getElementById("q");
const count = document.getElementById("count");
const copied = document.getElementById("copied");
const headers = Array.from(table.tHead.rows[0].cells);
const fold = (text) => text.normalize("NFD").replace(/\\p{M}/gu, "").toLowerCase();
let haystacks = null;

function remembered() {
  try { return localStorage.getItem("dicomfs-view"); } catch (e) { return null; }
}

function haystack(row) {
  const text = Array.from(row.cells, (cell) => cell.textContent).join(" | ");
  return fold(text + " " + text.replace(/(\\d{4})-(\\d\\d)-(\\d\\d)/g, "$1$2$3"));
}

function state() {
  return new URLSearchParams(location.hash.slice(1));
}

function keep(changes) {
  const now = state();
  for (const [key, value] of Object.entries(changes)) {
    if (value) now.set(key, value); else now.delete(key);
  }
  history.replaceState(null, "", "#" + now.toString());
}

function filter() {
  const words = fold(search.value).split(/\\s+/).filter(Boolean);
  haystacks = haystacks || new Map(rows.map((row) => [row, haystack(row)]));
  let shown = 0;
  for (const row of rows) {
    const hidden = !words.every((word) => haystacks.get(row).includes(word));
    if (row.hidden !== hidden) row.hidden = hidden;
    shown += !hidden;
  }
  pack();
  count.textContent = words.length ? shown + " of " + rows.length + " studies" : "";
  keep({q: search.value});
}

function sortBy(column, direction) {
  const key = (row) => {
    const cell = row.cells[column];
    return cell.dataset.v !== undefined ? Number(cell.dataset.v) : fold(cell.textContent);
  };
  const keyed = rows.map((row, i) => [key(row), i]);
  const sign = direction === "ascending" ? 1 : -1;
  keyed.sort((a, b) => (a[0] < b[0] ? -sign : a[0] > b[0] ? sign : a[1] - b[1]));
  order = keyed.map(([, i]) => rows[i]);
  pack();
  headers.forEach((th, i) => {
    if (i === column) th.setAttribute("aria-sort", direction);
    else th.removeAttribute("aria-sort");
  });
}

// The rows shown, in order, then the others, perBody to a group: the groups on screen
// hold rows to show, so Chromium still lays out only those.
function pack() {
  const placed = order.filter((row) => !row.hidden).concat(order.filter((row) => row.hidden));
  bodies.forEach((body, i) => {
    const part = placed.slice(i * perBody, (i + 1) * perBody);
    const withPanels = part.flatMap((row) => (panels.has(row) ? [row, panels.get(row)] : [row]));
    body.replaceChildren(...withPanels);
    body.hidden = !part.length || part[0].hidden;
  });
  for (const [row, panel] of panels) panel.hidden = row.hidden;
}

// A click on a study's row shows its series below it (a page of the mount, in a frame
// as tall as they need), and another click hides them.
const panels = new Map();
function toggle(row) {
  const open = panels.get(row);
  if (open) {
    open.remove();
    panels.delete(row);
    return;
  }
  const panel = document.createElement("tr");
  const cell = document.createElement("td");
  const frame = document.createElement("iframe");
  panel.className = "series";
  frame.title = "The study's series";
  frame.height = String(ROW_HEIGHT * Number(row.cells[SERIES].textContent) + 4);
  frame.src = ".series." + table.dataset.view + "." + row.dataset.s + ".html";
  cell.appendChild(frame);
  panel.appendChild(cell);
  row.after(panel);
  panels.set(row, panel);
}

function shellQuoted(text) {
  return "'" + text.replace(/'/g, "'\\\\''") + "'";
}

function copy(button) {
  const path = table.dataset.base + "/" + button.previousElementSibling.textContent;
  const command = "cd " + shellQuoted(path);
  copied.dataset.command = command;
  const shown = () => { copied.textContent = "Copied: " + command; };
  const byHand = () => {
    const area = document.createElement("textarea");
    area.value = command;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    shown();
  };
  if (navigator.clipboard) navigator.clipboard.writeText(command).then(shown, byHand);
  else byHand();
}

function wire() {
  for (const other of document.querySelectorAll("nav a")) {
    other.addEventListener("click", (event) => {
      try {
        localStorage.setItem("dicomfs-view", other.dataset.view);
      } catch (e) { /* a browser without storage: the choice is not kept */ }
      event.preventDefault();
      location.href = other.href + location.hash;
    });
  }
  headers.forEach((th, column) => {
    th.addEventListener("click", () => {
      const direction =
        th.getAttribute("aria-sort") === "descending" ? "ascending" : "descending";
      sortBy(column, direction);
      keep({sort: column + "," + direction});
    });
  });
  table.addEventListener("click", (event) => {
    const row = event.target.closest("tbody tr");
    if (event.target.tagName === "BUTTON") copy(event.target);
    else if (row && row.dataset.s && !String(getSelection())) toggle(row);
  });
  table.addEventListener("mouseover", (event) => {
    const cell = event.target.closest("code, td");
    if (cell && !cell.title && cell.scrollWidth > cell.clientWidth) cell.title = cell.textContent;
  });
  search.addEventListener("input", filter);
  const start = state();
  const [column, direction] = (start.get("sort") || "").split(",");
  if (headers[Number(column)] && (direction === "ascending" || direction === "descending")) {
    sortBy(Number(column), direction);
  }
  if (start.get("q")) {
    search.value = start.get("q");
    filter();
  }
  document.documentElement.classList.add("js");  // shows the search box and the buttons
}

// The view the user chose last, if this page is not it; else this page comes alive.
const wanted = remembered();
const link = wanted && document.querySelector('nav a[data-view="' + CSS.escape(wanted) + '"]');
if (link && wanted !== table.dataset.view) location.replace(link.href + location.hash);
else wire();
"""


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
ROWS_PER_BODY = 100  # rows in one tbody (see _STYLE)
_KEPT_SORTS = 9e15  # after every date: kept studies sort last when soonest comes first
_SERIES = 9  # the column of a study's series count
SERIES_ROW_HEIGHT = 60  # pixels a series takes on its page (series_page.py)
_SCRIPT = _SCRIPT_TEMPLATE.replace("@ROW_HEIGHT@", str(SERIES_ROW_HEIGHT)).replace(
    "@SERIES@", str(_SERIES)
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
    used = dict(
        index.conn.execute(
            """SELECT study, min(max(coalesce(last_access, 0), coalesce(last_received, 0)))
               FROM series GROUP BY study"""
        )
    )
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
