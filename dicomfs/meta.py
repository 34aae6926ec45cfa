"""DICOM header -> plain record.

Reads headers only (never pixel data), decodes text with the file's
SpecificCharacterSet, and turns absurd or missing values into safe ones.
Pure apart from reading the file it is given; never writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import unicodedata
import warnings
from typing import IO, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

# The attributes the index needs; reading only these makes parsing faster.
# pydicom always adds SpecificCharacterSet so that text decodes correctly.
WANTED_TAGS = [
    "PatientName", "PatientID", "PatientBirthDate",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber",
    "Modality", "StationName", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
    "SOPInstanceUID", "SOPClassUID", "InstanceNumber",
]  # fmt: skip

# Longest value we keep for any text attribute; DICOM's own limits are far lower.
MAX_TEXT = 1024

_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2,6}(\.\d{1,6})?$")


class NotIndexable(Exception):
    """The file cannot be indexed; the message is the reason shown to the user."""


@dataclasses.dataclass(frozen=True, slots=True)
class InstanceMeta:
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    study_uid: str
    series_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    study_date: str
    study_time: str
    study_description: str
    accession: str
    modality: str
    station_name: str
    series_number: int | None
    series_description: str
    instance_number: int | None


def read_meta(source: str | IO[bytes]) -> InstanceMeta:
    """Parse the header of one file; raise NotIndexable with a reason."""
    with warnings.catch_warnings():
        # Wrong character sets and odd values warn; we handle them below.
        warnings.simplefilter("ignore")
        ds = _read_dataset(source)
        return _to_meta(ds)


def _read_dataset(source: str | IO[bytes]) -> Dataset:
    try:
        return pydicom.dcmread(source, stop_before_pixels=True, specific_tags=WANTED_TAGS)
    except InvalidDicomError:
        pass  # no preamble/meta header: may still be a bare dataset, tried below
    except (OSError, EOFError) as exc:
        raise NotIndexable(_describe_os_error(exc)) from exc
    except Exception as exc:
        raise NotIndexable(f"unreadable DICOM: {_short(exc)}") from exc
    # Old files are often a bare dataset without the 128-byte preamble and meta header.
    # Accept one only if it really looks like an instance, so junk stays junk.
    if not isinstance(source, str):
        source.seek(0)
    try:
        ds = pydicom.dcmread(source, stop_before_pixels=True, specific_tags=WANTED_TAGS, force=True)
        looks_like_instance = any(ds.get(k) for k in _INSTANCE_MARKERS)
    except Exception as exc:
        raise NotIndexable("not a DICOM file") from exc
    if not looks_like_instance:
        raise NotIndexable("not a DICOM file")
    return ds


# A bare dataset is taken for DICOM only if it carries one of these.
_INSTANCE_MARKERS = ("SOPInstanceUID", "StudyInstanceUID", "SOPClassUID")


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "truncated file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    return f"cannot read: {_short(exc)}"


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _to_meta(ds: Dataset) -> InstanceMeta:
    sop_uid = _uid(ds, "SOPInstanceUID")
    if not sop_uid:
        file_meta = getattr(ds, "file_meta", None)
        if file_meta is not None and file_meta.get("MediaStorageSOPInstanceUID"):
            raise NotIndexable("truncated or damaged: no SOPInstanceUID after the meta header")
        raise NotIndexable("no SOPInstanceUID")
    study_uid = _uid(ds, "StudyInstanceUID")
    if not study_uid:
        raise NotIndexable("no StudyInstanceUID")
    series_uid = _uid(ds, "SeriesInstanceUID")
    if not series_uid:
        raise NotIndexable("no SeriesInstanceUID")
    file_meta = getattr(ds, "file_meta", None)
    syntax = ""
    if file_meta is not None:
        syntax = _clean(str(file_meta.get("TransferSyntaxUID", "") or ""))
    text = _TextReader(ds)
    return InstanceMeta(
        sop_uid=sop_uid,
        sop_class_uid=_uid(ds, "SOPClassUID"),
        transfer_syntax=syntax,
        study_uid=study_uid,
        series_uid=series_uid,
        patient_name=text("PatientName"),
        patient_id=text("PatientID"),
        patient_birth_date=_date(ds, "PatientBirthDate"),
        study_date=_date(ds, "StudyDate"),
        study_time=_time(ds, "StudyTime"),
        study_description=text("StudyDescription"),
        accession=text("AccessionNumber"),
        modality=_text(ds, "Modality").upper(),
        station_name=text("StationName"),
        series_number=_integer(ds, "SeriesNumber"),
        series_description=text("SeriesDescription"),
        instance_number=_integer(ds, "InstanceNumber"),
    )


def _raw(ds: Dataset, keyword: str) -> Any:
    """The element's value, or None when absent or undecodable."""
    try:
        return ds.get(keyword)
    except Exception:
        return _fallback_decode(ds, keyword)


def _fallback_decode(ds: Dataset, keyword: str) -> str | None:
    # A value pydicom cannot convert (wrong charset, bad VR): decode its bytes leniently.
    try:
        elem = ds.get_item(keyword)
    except Exception:
        return None
    value = getattr(elem, "value", None)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return None


def _clean(text: str) -> str:
    """Strip padding and control characters; cap the length."""
    text = text.replace("\x00", "").strip()
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return text[:MAX_TEXT]


# Character sets under which UTF-8 bytes are often written by mistake.
_LATIN_SETS = frozenset({"", "ISO_IR 100", "ISO_IR 6", "ISO 2022 IR 6", "ISO 2022 IR 100"})


class _TextReader:
    """Reads text attributes, repairing the commonest charset mistake on the way."""

    def __init__(self, ds: Dataset) -> None:
        declared = _text(ds, "SpecificCharacterSet")
        self.ds = ds
        self.may_be_utf8 = declared in _LATIN_SETS

    def __call__(self, keyword: str) -> str:
        value = _text(self.ds, keyword, clean=False)
        if self.may_be_utf8 and not value.isascii():
            # UTF-8 bytes declared as Latin-1 (or not declared): decode them as UTF-8.
            with contextlib.suppress(UnicodeError):
                value = value.encode("latin-1").decode("utf-8")
        return _clean(value)


def _text(ds: Dataset, keyword: str, *, clean: bool = True) -> str:
    value = _raw(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        value = "\\".join(str(v) for v in value)
    elif isinstance(value, bytes):
        value = value.decode("latin-1")
    try:
        return _clean(str(value)) if clean else str(value)
    except Exception:
        return ""


def _uid(ds: Dataset, keyword: str) -> str:
    return _text(ds, keyword)[:128]


def _date(ds: Dataset, keyword: str) -> str:
    """YYYYMMDD, or empty when missing or not a date."""
    value = _text(ds, keyword).replace(".", "").replace("-", "")
    return value if _DATE.match(value) else ""


def _time(ds: Dataset, keyword: str) -> str:
    value = _text(ds, keyword).replace(":", "")
    return value if _TIME.match(value) else ""


def _integer(ds: Dataset, keyword: str) -> int | None:
    value = _text(ds, keyword)
    with contextlib.suppress(ValueError):
        number = int(float(value))
        if -(2**31) <= number < 2**31:
            return number
    return None


def fold(text: str) -> str:
    """Case- and accent-insensitive form for search: 'Müller^Jürgen' -> 'muller jurgen'."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept: list[str] = []
    for ch in decomposed:
        # Drop accents of alphabetic scripts; keep the marks that make up Japanese
        # kana (dakuten) and Korean syllables, which NFC puts back together.
        if unicodedata.combining(ch) and (not kept or ord(kept[-1]) < 0x3000):
            continue
        kept.append(ch)
    plain = unicodedata.normalize("NFC", "".join(kept)).casefold()
    words = re.split(r"[\W_]+", plain)
    return " ".join(w for w in words if w)
