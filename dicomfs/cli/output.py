"""What the commands print: progress bars, summaries and result lines."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from ..sizes import count, size
from ..store import views
from ..store.catalog import iso, iso_date
from ..store.indexer import Report

# What a terminal acts on instead of showing: C0 controls, DEL, C1 controls, the
# Unicode line and paragraph separators, and the bidi controls that reorder text.
_NOT_C0 = "\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNPRINTABLE = re.compile(f"[\x00-\x1f{_NOT_C0}]")
_UNPRINTABLE_IN_JSON = re.compile(f"[{_NOT_C0}]")  # json.dumps escapes C0 itself


def printable(value: object) -> str:
    """Any value as text a terminal shows as it is: 'a\\x1b]0;x' for 'a<ESC>]0;x'.

    Values from DICOM, the network or the disk may hold escape sequences that retitle
    or rewrite a terminal, or a newline that forges a line; each such character becomes
    a visible escape (\\x1b, \\u202e). A backslash stays as it is, readable.
    """
    return _UNPRINTABLE.sub(_escape, str(value))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def to_json(data: object) -> str:
    """JSON for scripts that is also safe on a terminal: every character printable()
    escapes is a \\u escape, which a JSON reader decodes to the same string."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return _UNPRINTABLE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class ProgressBar:
    """A progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, label: str, *, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def start(self, total: int, step: str | None = None) -> None:
        """A bar for the next step (parsing, then perhaps copying), ending the last's."""
        self.__exit__()
        if self.enabled and total:
            self._bar = click.progressbar(
                length=total,
                label=step or self.label,
                file=sys.stderr,
                show_pos=True,
                show_eta=True,
                width=30,
            )
            self._bar.__enter__()

    def advance(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done)


MAX_SKIPPED_SHOWN = 50


def print_index_report(report: Report, store: Path) -> None:
    """One summary line, then each skipped file with its reason."""
    click.echo(
        printable(
            f"{report.indexed} indexed, {report.unchanged} unchanged, "
            f"{report.removed} removed, {len(report.skipped)} skipped ({store})"
        )
    )
    for path, reason in report.skipped[:MAX_SKIPPED_SHOWN]:
        click.echo(printable(f"  skipped {path}: {reason}"))
    hidden = len(report.skipped) - MAX_SKIPPED_SHOWN
    if hidden > 0:
        hidden_ones = report.skipped[MAX_SKIPPED_SHOWN:]
        reasons = Counter(reason.split(" of ")[0] for _, reason in hidden_ones)
        summary = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        click.echo(printable(f"  ... and {hidden} more skipped ({summary}); --json lists them all"))


def print_copy_report(copied: Any, store: Path) -> None:
    """index --to (to_postgres.Copied): the rows of each table, that the copy was
    checked, one summary line, and what to do next."""
    for table, rows in copied.rows.items():
        click.echo(printable(f"  {table:<14} {count(rows, 'row')} copied"))
    click.echo("checked: every table's rows are the SQLite index's, value for value")
    click.echo(
        printable(
            f"{len(copied.rows)} tables, {count(copied.total, 'row')} copied in "
            f"{copied.seconds:.1f} s from {store} to {copied.where}"
        )
    )
    url, hidden = copied.where.replace(":***@", "@"), ":***@" in copied.where
    click.echo(
        printable(
            f'next: on every machine, put index = "{url}" in the configuration file (the '
            "service's: /etc/dicomfs/dicomfs.toml)"
            + (", and the password in the service user's ~/.pgpass" if hidden else "")
            + ", then start serve and the mounts again; the SQLite index is left as it "
            "was, and no command uses it any more"
        )
    )


def _date(value: str) -> str:
    return iso_date(value) or "----------"


def study_line(row: dict[str, Any]) -> str:
    """One line per study: who, when, what, how much, and where to `cd`."""
    fields = [
        row["study_date"] or "----------",
        row["patient_name"] or "(no name)",
        row["patient_id"] or "(no id)",
        row["modalities"] or "-",
        row["stations"] or "-",
        f"{row['series']} series",
        count(row["instances"], "instance"),
    ]
    paths = [p for view in views.VIEW_NAMES for p in row["paths"][view]]
    return printable("  ".join(fields + paths))


def audit_line(record: dict[str, Any]) -> str:
    """One line per audit record: when, what, who, from where, which patient, study and
    series."""
    who = record["calling_aet"] or record["user"] or "-"
    if record["address"]:
        who += f"@{record['address']}"
    if record["user"] and record["calling_aet"]:
        who += f" user={record['user']}"
    fields = [iso(record["at"]), record["event"], who]
    if record["patient_id"] or record["patient_name"]:
        fields.append(_patient(record["patient_name"], record["patient_id"]))
    if record["study_uid"]:
        fields.append(f"study {record['study_uid']}")
    if record["series_uid"]:
        fields.append(f"series {record['series_uid']}")
    if record["instances"] is not None:
        fields.append(count(record["instances"], "instance"))
    if record["bytes"] is not None:
        fields.append(size(record["bytes"]))
    fields.append(record["outcome"])
    if record["detail"]:
        fields.append(record["detail"])
    return printable("  ".join(fields))


def _patient(name: str | None, patient_id: str | None) -> str:
    """'patient DOE^JOHN (12345)'; 'patient 12345' when the name is not known (a pull
    by patient ID)."""
    if not name:
        return f"patient {patient_id}"
    return f"patient {name} ({patient_id or 'no id'})"


def expiry_line(series: Any) -> str:
    """One line per expiring series: whose, what, how big, untouched since when."""
    line = "  ".join(
        [
            _date(series.study_date),
            series.patient_name or "(no name)",
            series.patient_id or "(no id)",
            series.modality or "-",
            series.description or "(no description)",
            count(series.instances, "instance"),
            size(series.bytes),
            f"untouched since {iso(series.last_used)}",
            series.series_uid,
        ]
    )
    return printable(line)


def in_patient_order(due: Iterable[Any]) -> list[Any]:
    """Series due for expiry (expiry.DueSeries) by patient, study and series number, so
    that a patient's series are listed together and in order."""
    return sorted(due, key=lambda s: (s.patient_name, s.patient_id, s.study_date, s.study_uid,
                                      s.series_number is None, s.series_number or 0,
                                      s.series_uid))  # fmt: skip


def keep_span(item: Any) -> str:
    """How long a keep (expiry.Keep) lasts, and who made it when:
    'for good, kept by alice 2026-11-25T14:30:00+01:00'."""
    if item.until is None:
        span = "for good"
    elif item.lapsed:
        span = f"LAPSED at {iso(item.until)}: it expires as usual"
    else:
        span = f"until {iso(item.until)}"
    return f"{span}, kept by {item.by} {iso(item.at)}"


def kept_line(item: Any) -> str:
    """One line per keep (expiry.Keep): what, whose, how long."""
    if item.patient_name is None and item.patient_id is None:
        who = "(no longer in the store)"
    else:
        who = f"{item.patient_name or '(no name)'} ({item.patient_id or 'no id'})"
    return printable(f"{item.level} {item.uid}  {who}  {keep_span(item)}")


def due_record(series: Any) -> dict[str, Any]:
    """A series due for expiry (expiry.DueSeries) for JSON, its times in ISO 8601."""
    record = dataclasses.asdict(series)
    record["study_date"] = iso_date(series.study_date)
    record["last_used"] = iso(series.last_used)
    return record


class PullProgressLine:
    """A pull's progress (puller.PullProgress): instances found, fetched, remaining and
    the rate, on one line of a terminal."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.tty = sys.stderr.isatty()
        self._shown = False

    def __call__(self, progress: Any) -> None:
        line = printable(
            f"{self.peer}: {progress.found} found, {progress.had} here before, "
            f"{progress.fetched} fetched, {progress.remaining} remaining, "
            f"{progress.rate:.0f}/s"
        )
        if self.tty:
            click.echo(f"\r{line}\x1b[K", nl=False, err=True)
            self._shown = True
        else:
            click.echo(line, err=True)

    def done(self) -> None:
        if self._shown:
            click.echo("", err=True)
