"""C-FIND, C-MOVE and C-GET over the index: which patients, studies, series or
instances match an identifier's keys (PS3.4 C.2.2.2), the values of the keys it asks
for, and the instances a retrieval sends.

A key with a value is matched: single value, `*` and `?` wildcards, a range of dates
or times (`20040101-20041231`, `-20041231`, `20040101-`), a list of UIDs
(`1.2.3\\1.2.4`); a key without one matches everything and is only returned. A
PatientName is matched case- and accent-insensitively, on its folded form, as
`dicomfs find` matches it; other text exactly, as the standard says. Every condition
is an SQL condition the query plan can serve from an index where one fits (a UID, a
patient ID, a date, a study's series, a series' instances); what no index serves is a
scan of the patients or studies, which a lab has thousands of, not millions.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

from ...dicom.meta import fold
from .engine import Connection, Dialect, dialect_of

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_TABLES = {  # each level's rows, joined to the levels above
    "PATIENT": "patients p",
    "STUDY": "studies st JOIN patients p ON p.id = st.patient",
    "SERIES": "series se JOIN studies st ON st.id = se.study JOIN patients p ON p.id = st.patient",
    "IMAGE": "instances i JOIN series se ON se.id = i.series "
    "JOIN studies st ON st.id = se.study JOIN patients p ON p.id = st.patient",
}


@dataclasses.dataclass(frozen=True)
class _Key:
    level: str  # the highest level whose rows hold it
    column: str  # the SQL of its value
    kind: str  # how a value matches it: text, name, uid, date, time, number, modalities


_KEYS = {
    "PatientID": _Key("PATIENT", "p.patient_id", "text"),
    "PatientName": _Key("PATIENT", "p.patient_name", "name"),
    "PatientBirthDate": _Key("PATIENT", "p.birth_date", "date"),
    "StudyInstanceUID": _Key("STUDY", "st.study_uid", "uid"),
    "StudyDate": _Key("STUDY", "st.study_date", "date"),
    "StudyTime": _Key("STUDY", "st.study_time", "time"),
    "AccessionNumber": _Key("STUDY", "st.accession", "text"),
    "StudyDescription": _Key("STUDY", "st.description", "text"),
    "ModalitiesInStudy": _Key("STUDY", "", "modalities"),  # its column: _column
    "SeriesInstanceUID": _Key("SERIES", "se.series_uid", "uid"),
    "Modality": _Key("SERIES", "se.modality", "text"),
    "SeriesNumber": _Key("SERIES", "se.series_number", "number"),
    "SeriesDescription": _Key("SERIES", "se.description", "text"),
    "StationName": _Key("SERIES", "se.station_name", "text"),
    "SOPInstanceUID": _Key("IMAGE", "i.sop_uid", "uid"),
    "SOPClassUID": _Key("IMAGE", "i.sop_class_uid", "uid"),
    "InstanceNumber": _Key("IMAGE", "i.instance_number", "number"),
}
_INSTANCES_OF = {  # how many instances the level's row holds (series_counts)
    "PATIENT": "SELECT sum(c.instances) FROM studies s2 JOIN series s3 ON s3.study = s2.id "
    "JOIN series_counts c ON c.series = s3.id WHERE s2.patient = p.id",
    "STUDY": "SELECT sum(c.instances) FROM series s3 JOIN series_counts c ON c.series = s3.id "
    "WHERE s3.study = st.id",
    "SERIES": "SELECT sum(c.instances) FROM series_counts c WHERE c.series = se.id",
}
_COUNTS = {  # return keys that count what a row holds: the SQL of their value
    "NumberOfPatientRelatedStudies": "(SELECT count(*) FROM studies WHERE patient = p.id)",
    "NumberOfPatientRelatedSeries": "(SELECT count(*) FROM studies s2 JOIN series s3 "
    "ON s3.study = s2.id WHERE s2.patient = p.id)",
    "NumberOfPatientRelatedInstances": f"({_INSTANCES_OF['PATIENT']})",
    "NumberOfStudyRelatedSeries": "(SELECT count(*) FROM series WHERE study = st.id)",
    "NumberOfStudyRelatedInstances": f"({_INSTANCES_OF['STUDY']})",
    "NumberOfSeriesRelatedInstances": f"({_INSTANCES_OF['SERIES']})",
}
_COUNT_LEVEL = {
    "NumberOfPatientRelatedStudies": "PATIENT", "NumberOfPatientRelatedSeries": "PATIENT",
    "NumberOfPatientRelatedInstances": "PATIENT", "NumberOfStudyRelatedSeries": "STUDY",
    "NumberOfStudyRelatedInstances": "STUDY", "NumberOfSeriesRelatedInstances": "SERIES",
}  # fmt: skip
_RANGE = re.compile(r"^(\d*)-(\d*)$")


UNIQUE_KEYS = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
               "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class Retrievable:
    """One instance a retrieval sends, with what its audit record names."""

    instance: int  # row id
    path: str  # relative to the store
    sop_class: str
    sop_uid: str
    transfer_syntax: str
    size: int
    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str


class BadQuery(ValueError):
    """The identifier cannot be a query of this level (the message says why)."""


def answerable(keyword: str) -> bool:
    """Whether the index holds a value for this key (others are returned empty)."""
    return keyword in _KEYS or keyword in _COUNTS


def find(conn: Connection, level: str, keys: dict[str, str]) -> Iterator[dict[str, str]]:
    """The rows of `level` that match every key with a value; each as {keyword: value}
    for every key asked for that the index can answer at that level (the others are
    left out: the caller returns them empty)."""
    statement, arguments = sql(level, keys, dialect_of(conn))
    shown = _shown(level, keys)
    for row in conn.execute(statement, arguments):
        yield {keyword: _text(value) for keyword, value in zip(shown, row, strict=True)}


def sql(level: str, keys: dict[str, str], dialect: Dialect) -> tuple[str, list[object]]:
    """The statement (and its arguments) that finds `level`'s rows matching keys."""
    if level not in LEVELS:
        raise BadQuery(f"no query level {level!r}: one of {', '.join(LEVELS)}")
    shown = _shown(level, keys)
    columns = [_column(_KEYS[k], dialect) if k in _KEYS else _COUNTS[k] for k in shown] or ["1"]
    where, arguments = _where(level, keys, dialect)
    return f"SELECT {', '.join(columns)} FROM {_TABLES[level]}{where}", arguments


def retrievable(conn: Connection, level: str, keys: dict[str, str]) -> list[Retrievable]:
    """The instances a C-MOVE or C-GET of these keys sends, study by study and series
    by series, each series in its files' order. The level's unique key must have a
    value: a retrieval names what it wants, it never means "everything"."""
    if level not in LEVELS:
        raise BadQuery(f"no retrieve level {level!r}: one of {', '.join(LEVELS)}")
    unique = UNIQUE_KEYS[level]
    if not keys.get(unique, "").strip():
        raise BadQuery(f"a {level} retrieval needs its {unique}")
    # Only the unique keys of the levels down to this one name what is retrieved,
    # each a single value or a list of UIDs (PS3.4 C.4.2.2.1): never a pattern.
    depth = LEVELS.index(level)
    named = {UNIQUE_KEYS[above]: keys.get(UNIQUE_KEYS[above], "") for above in LEVELS[: depth + 1]}
    for keyword, value in named.items():
        if "*" in value or "?" in value:
            raise BadQuery(f"no wildcards in a retrieval's {keyword}")
    where, arguments = _where(level, named, dialect_of(conn))
    statement = (
        "SELECT i.id, i.path, i.sop_class_uid, i.sop_uid, i.transfer_syntax, i.size, "
        "p.patient_id, p.patient_name, st.study_uid, se.series_uid "
        f"FROM {_TABLES['IMAGE']}{where} ORDER BY st.id, se.id, i.file_name"
    )
    return [Retrievable(*row) for row in conn.execute(statement, arguments)]


def _column(key: _Key, dialect: Dialect) -> str:
    """The SQL of a key's value: the modalities of a study's series, listed as DICOM
    lists values (with backslashes), or the key's own column."""
    if key.kind == "modalities":
        listed = dialect.distinct_list("modality")
        return f"(SELECT replace({listed}, ',', '\\') FROM series WHERE study = st.id)"
    return key.column


def _where(level: str, keys: dict[str, str], dialect: Dialect) -> tuple[str, list[object]]:
    """The WHERE clause (or "") of the keys with a value at this level or above."""
    depth = LEVELS.index(level)
    conditions: list[str] = []
    arguments: list[object] = []
    for keyword, value in keys.items():
        key = _KEYS.get(keyword)
        if key is None or not value or LEVELS.index(key.level) > depth:
            continue  # universal matching, or not a key of this level
        condition, values = _condition(key, value, dialect)
        conditions.append(condition)
        arguments += values
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), arguments


def _shown(level: str, keys: dict[str, str]) -> list[str]:
    """The keys asked for that the index answers at this level."""
    depth = LEVELS.index(level)
    return [
        keyword
        for keyword in keys
        if (keyword in _KEYS and LEVELS.index(_KEYS[keyword].level) <= depth)
        or (keyword in _COUNTS and _COUNT_LEVEL[keyword] == level)
    ]


def _condition(key: _Key, value: str, dialect: Dialect) -> tuple[str, list[object]]:
    if key.kind == "uid":
        uids = [uid.strip() for uid in value.split("\\") if uid.strip()]
        return f"{key.column} IN ({', '.join('?' * len(uids))})", list(uids)
    if key.kind in ("date", "time"):
        match = _RANGE.match(value.replace(":", "").replace(".", "")) if "-" in value else None
        if match:
            first, last = match.groups()
            if key.kind == "time":  # a time's range compares its digits: 0930 < 093000
                return _between(key.column, first, last + "9" * (6 - len(last)) if last else "")
            return _between(key.column, first, last)
        return f"{key.column} = ?", [value]
    if key.kind == "number":
        try:
            return f"{key.column} = ?", [int(value)]
        except ValueError:
            raise BadQuery(f"{value!r} is not a number") from None
    if key.kind == "name":
        return dialect.matching("p.name_folded"), [dialect.pattern(_folded_pieces(value))]
    if key.kind == "modalities":
        values: list[object] = [v.strip() for v in value.split("\\") if v.strip()]
        marks = ", ".join("?" * len(values))
        return (
            f"EXISTS (SELECT 1 FROM series WHERE study = st.id AND modality IN ({marks}))",
            values,
        )
    if "*" in value or "?" in value:
        return dialect.matching(key.column), [dialect.pattern(_pieces(value))]
    return f"{key.column} = ?", [value]


def _between(column: str, first: str, last: str) -> tuple[str, list[object]]:
    if first and last:
        return f"{column} BETWEEN ? AND ?", [first, last]
    if first:
        return f"{column} >= ?", [first]
    return f"{column} <= ? AND {column} != ''", [last]


def _pieces(value: str) -> list[str]:
    """A value with DICOM's wildcards as its pieces: each "*" or "?", and the literal
    text between them (for Dialect.pattern)."""
    return [part for part in re.split(r"([*?])", value) if part]


def _folded_pieces(value: str) -> list[str]:
    """A PatientName pattern against the folded names: each run between wildcards
    folded as the names were (case, accents, ^ and = between words)."""
    parts = _pieces(value)
    pieces = []
    for at, part in enumerate(parts):
        if part in ("*", "?"):
            pieces.append(part)
            continue
        words = fold(part)
        # fold drops the separators around words: keep one where a wildcard meets it
        if words and part[0] in "^= " and at > 0:
            words = " " + words
        if words and part[-1] in "^= " and at + 1 < len(parts):
            words += " "
        pieces.append(words)
    return pieces


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
