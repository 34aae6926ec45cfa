"""`dicomfs find`: what a search term can mean, and which studies match.

A term may be a date or date range, the beginning of a patient ID or accession
number, the start of a StudyInstanceUID, or (the beginnings of words of) a patient
name or a study or series description; a study matches a term when it matches any
of these. Several terms must all match.
"""

from __future__ import annotations

import calendar
import re

from .index import Index

# A day, month or year, as DICOM writes it (20061201, 200612, 2006) or as find prints
# it (2006-12-01, 2006-12).
_DAY = r"\d{4}(?:\d{2}(?:\d{2})?)?|\d{4}-\d{2}(?:-\d{2})?"
_DATE = re.compile(rf"^(?:{_DAY})$")
_RANGE = re.compile(rf"^({_DAY})?\.\.({_DAY})?$")  # 2006-12-01..2006-12-31
_COMPACT_RANGE = re.compile(r"^(\d{4}(?:\d{2}(?:\d{2})?)?)?-(\d{4}(?:\d{2}(?:\d{2})?)?)?$")
_UID_PREFIX = re.compile(r"^\d+(\.\d*)+$")


class NotADate(ValueError):
    """A term written as a date (or range) that is none: 2004-13, 2004-02-30, or a
    range that ends before it starts; the message says which."""


def date_bounds(term: str) -> tuple[str, str] | None:
    """'20040609' or '2004-06-09' -> one day; '2004', '200406' or '2004-06' -> that year
    or month; '2004-06-01..2004-06-30', '20040601-20040630' and either with one end
    left open -> ranges. As (first, last) YYYYMMDD; None if not written as a date;
    NotADate if written as one but none."""
    if _DATE.match(term):
        _check_day(term)
        return _first_day(term), _last_day(term)
    match = _RANGE.match(term) or _COMPACT_RANGE.match(term)
    if match and (match.group(1) or match.group(2)):
        for end in filter(None, match.groups()):
            _check_day(end, term)
        first = _first_day(match.group(1)) if match.group(1) else "00000000"
        last = _last_day(match.group(2)) if match.group(2) else "99999999"
        if first > last:
            raise NotADate(f"{term} is not a date range: it ends before it starts")
        return first, last
    return None


def _check_day(partial: str, term: str | None = None) -> None:
    """A year, month or day that exists: no month 13, no 30 February."""
    digits = partial.replace("-", "")
    year, month, day = digits[:4], digits[4:6], digits[6:]
    if int(year) == 0:
        problem = "there is no year 0"
    elif month and not 1 <= int(month) <= 12:
        problem = f"there is no month {month}"
    elif day and not 1 <= int(day) <= calendar.monthrange(int(year), int(month))[1]:
        problem = f"{year}-{month} has no day {day}"
    else:
        return
    where = f" in {term}" if term else ""
    raise NotADate(f"{partial}{where} is not a date: {problem}")


def _first_day(partial: str) -> str:
    return partial.replace("-", "").ljust(8, "0")


def _last_day(partial: str) -> str:
    return partial.replace("-", "").ljust(8, "9")


def matching_studies(index: Index, terms: list[str]) -> set[int]:
    result: set[int] | None = None
    for term in terms:
        found = studies_for_term(index, term.strip())
        result = found if result is None else result & found
    return result or set()


def studies_for_term(index: Index, term: str) -> set[int]:
    """The studies a term matches, in any of its meanings. A term written as a date
    that is none (2004-13) is an error, unless it matches as something else (the
    beginning of a patient ID, say)."""
    if not term:
        return set()
    found = index.studies_with_patient_id_prefix(term)
    found |= index.studies_with_accession_prefix(term)
    if _UID_PREFIX.match(term):
        found |= index.studies_with_uid_prefix(term)
    found |= index.studies_matching_name(term)
    found |= index.studies_matching_description(term)
    try:
        bounds = date_bounds(term)
    except NotADate:
        if not found:
            raise
        bounds = None
    if bounds:
        found |= index.studies_between(*bounds)
    return found
