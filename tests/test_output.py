"""What reaches a terminal: values from DICOM, the network or the disk, made printable."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from dicomfs.cli.main import PrintableFormatter
from dicomfs.cli.output import count, printable, size, to_json
from dicomfs.store.catalog import iso_date, iso_time

HOSTILE = "x\x1b]0;owned\x07\nFORGED LINE"


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        ("\x1b", "\\x1b"),  # ESC: starts every terminal escape sequence
        ("\x07", "\\x07"),  # BEL: ends an OSC title sequence
        ("\n", "\\x0a"),  # a forged line
        ("\r", "\\x0d"),  # overwrites the line shown
        ("\x00", "\\x00"),
        ("\t", "\\x09"),
        ("\x7f", "\\x7f"),  # DEL
        ("\x9b", "\\x9b"),  # C1 CSI: an escape sequence in one character
        ("\x85", "\\x85"),  # C1 next line
        ("\u2028", "\\u2028"),  # line separator
        ("\u202e", "\\u202e"),  # right-to-left override: shows text reversed
        ("\u2066", "\\u2066"),  # left-to-right isolate
        ("\u2069", "\\u2069"),  # pop directional isolate
    ],
)
def test_printable_shows_each_control_as_a_visible_escape(char: str, shown: str) -> None:
    assert printable(f"a{char}b") == f"a{shown}b"


def test_printable_keeps_text_and_backslashes_as_they_are() -> None:
    for text in ("Müller^Jürgen", "やまだ^たろう", "Ελληνικά", "C:\\scans\\1", "<script>", ""):
        assert printable(text) == text
    assert printable(12) == "12"


def test_a_hostile_value_stays_on_one_line_without_escape_characters() -> None:
    shown = printable(HOSTILE)
    assert shown == "x\\x1b]0;owned\\x07\\x0aFORGED LINE"
    assert len(shown.splitlines()) == 1
    assert shown.isprintable()


def test_json_decodes_to_the_same_values_and_shows_no_control() -> None:
    data = [{"user": HOSTILE, "name": "Müller\u202e\x9b", "n": 1}]
    text = to_json(data)
    assert json.loads(text) == data
    assert all(line.isprintable() for line in text.splitlines())
    assert "Müller" in text  # readable, not \\u-escaped


def test_log_lines_escape_the_message_and_quote_the_traceback() -> None:
    formatter = PrintableFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError(f"boom {HOSTILE}")  # a traceback may quote a peer's bytes too
    except ValueError:
        record = logging.LogRecord(
            "dicomfs.receiver", logging.WARNING, __file__, 1, "refused %s: %s",
            ("BAY3T", HOSTILE), sys.exc_info(),
        )  # fmt: skip
    first, *traceback = formatter.format(record).splitlines()
    assert first == "WARNING refused BAY3T: x\\x1b]0;owned\\x07\\x0aFORGED LINE"
    assert traceback[0] == "  | Traceback (most recent call last):"
    assert traceback[-2:] == ["  | ValueError: boom x\\x1b]0;owned\\x07", "  | FORGED LINE"]
    assert all(line.startswith("  | ") for line in traceback)  # none passes for a log line


@pytest.mark.parametrize(
    ("dicom", "iso"),
    [("143000", "14:30:00"), ("143000.25", "14:30:00.25"), ("0930", "09:30:00"), ("07", "07:00:00"),
     ("", ""), ("143", ""), ("ab", "")],
)  # fmt: skip
def test_dicom_times_in_iso_8601(dicom: str, iso: str) -> None:
    assert iso_time(dicom) == iso


def test_dicom_dates_in_iso_8601() -> None:
    assert iso_date("20040609") == "2004-06-09"
    assert iso_date("") == ""


def test_counts_are_singular_for_one() -> None:
    assert [count(n, "instance") for n in (0, 1, 2)] == ["0 instances", "1 instance", "2 instances"]
    assert [size(n) for n in (1, 2, 1536)] == ["1 byte", "2 bytes", "1.5 KB"]
