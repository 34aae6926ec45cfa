"""DICOM header -> plain record.

Reads headers only (never pixel data), decodes text with the file's
SpecificCharacterSet, and turns absurd or missing values into safe ones.
Pure apart from reading the file it is given; never writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import re
import unicodedata
import warnings
from collections.abc import Callable, Mapping
from typing import BinaryIO

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from .header import TooDeep, read_header

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


def read_meta(
    path: str, opener: Callable[[str, int], int] | None = None, *, head: bytes = b""
) -> InstanceMeta:
    """Parse the header of one file; raise NotIndexable with a reason.

    opener: how to open path (see open()); the store's never follows a symlink.
    head: the file's first bytes, if the caller has them at hand (a receiver that
    has just written them): the file is read only if the header goes on past them."""
    with warnings.catch_warnings():
        # Wrong character sets and odd values warn; we handle them below.
        warnings.simplefilter("ignore")
        try:
            header = read_header(head, _WANTED) if head else None
            if header and header.complete:
                return _to_meta(header.values, header.transfer_syntax, header.media_sop_uid)
            with open(path, "rb", opener=opener) as source:
                data = source.read(FIRST_READ)
                header = read_header(data, _WANTED)
                if header and not header.complete and len(data) == FIRST_READ:
                    header = read_header(data + source.read(), _WANTED)  # a long header
                if header:
                    return _to_meta(header.values, header.transfer_syntax, header.media_sop_uid)
                source.seek(0)
                ds = _read_dataset(source)
        except OSError as exc:
            raise NotIndexable(_describe_os_error(exc)) from exc
        except (TooDeep, RecursionError) as exc:
            raise NotIndexable(f"unreadable DICOM: {_short(exc)}") from exc
        return _from_pydicom(ds)


# Enough for the header of nearly every file; the rest is read only when needed.
FIRST_READ = 64 * 1024


def _past_wanted(tag: BaseTag, vr: str | None, length: int) -> bool:
    # Elements come in tag order: stop reading once past the last one we need, which
    # skips private headers, overlays and pixel data.
    return tag > _LAST_WANTED


def _read_dataset(source: BinaryIO) -> Dataset:
    try:
        return read_partial(source, stop_when=_past_wanted)
    except InvalidDicomError:
        pass  # no preamble/meta header: may still be a bare dataset, tried below
    except (OSError, EOFError) as exc:
        raise NotIndexable(_describe_os_error(exc)) from exc
    except Exception as exc:
        raise NotIndexable(f"unreadable DICOM: {_short(exc)}") from exc
    # Old files are often a bare dataset without the 128-byte preamble and meta header.
    # Accept one only if it really looks like an instance, so junk stays junk.
    source.seek(0)
    try:
        ds = read_partial(source, stop_when=_past_wanted, force=True)
        looks_like_instance = any(_value(ds, tag) for tag in _INSTANCE_MARKERS)
    except Exception as exc:
        raise NotIndexable("not a DICOM file") from exc
    if not looks_like_instance:
        raise NotIndexable("not a DICOM file")
    return ds


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "truncated file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "a symbolic link in its path: never followed"
    return f"cannot read: {_short(exc)}"


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _from_pydicom(ds: Dataset) -> InstanceMeta:
    values: dict[int, bytes | str] = {
        int(tag): value for tag in _WANTED if (value := _value(ds, tag)) is not None
    }
    file_meta = getattr(ds, "file_meta", None) or {}
    syntax = str(file_meta.get("TransferSyntaxUID", "") or "")
    media_sop = str(file_meta.get("MediaStorageSOPInstanceUID", "") or "")
    return _to_meta(values, syntax, media_sop)


def _to_meta(values: Mapping[int, bytes | str], syntax: str, media_sop: str) -> InstanceMeta:
    sop_uid = _uid(values, "SOPInstanceUID")
    if not sop_uid:
        if media_sop:
            raise NotIndexable("truncated or damaged: no SOPInstanceUID after the meta header")
        raise NotIndexable("no SOPInstanceUID")
    study_uid = _uid(values, "StudyInstanceUID")
    if not study_uid:
        raise NotIndexable("no StudyInstanceUID")
    series_uid = _uid(values, "SeriesInstanceUID")
    if not series_uid:
        raise NotIndexable("no SeriesInstanceUID")
    text = _TextReader(values)
    return InstanceMeta(
        sop_uid=sop_uid,
        sop_class_uid=_uid(values, "SOPClassUID"),
        transfer_syntax=_clean(syntax),
        study_uid=study_uid,
        series_uid=series_uid,
        patient_name=text("PatientName").rstrip("="),  # empty trailing name groups
        patient_id=text("PatientID"),
        patient_birth_date=_date(text("PatientBirthDate")),
        study_date=_date(text("StudyDate")),
        study_time=_time(text("StudyTime")),
        study_description=text("StudyDescription"),
        accession=text("AccessionNumber"),
        modality=text("Modality").upper(),
        station_name=text("StationName"),
        series_number=_integer(text("SeriesNumber")),
        series_description=text("SeriesDescription"),
        instance_number=_integer(text("InstanceNumber")),
    )


# Plain ints: pydicom's BaseTag compares in Python, a third of the lean reader's time.
_TAGS = {keyword: int(Tag(keyword)) for keyword in WANTED_TAGS}
_CHARSET_TAG = int(Tag("SpecificCharacterSet"))
_WANTED = frozenset({*_TAGS.values(), _CHARSET_TAG})
_LAST_WANTED = max(_TAGS.values())
_INSTANCE_MARKERS = (_TAGS["SOPInstanceUID"], _TAGS["StudyInstanceUID"], _TAGS["SOPClassUID"])
# Bytes that separate values and name components; escape sequences reset at each.
_DELIMITERS = {0x5C, 0x5E, 0x3D}
# Character sets under which UTF-8 bytes are often written by mistake.
_LATIN_SETS = frozenset({"", "ISO_IR 100", "ISO_IR 6", "ISO 2022 IR 6", "ISO 2022 IR 100"})


def _value(ds: Dataset, tag: int) -> bytes | str | None:
    """The element's raw bytes (still undecoded), or its value as text, or None."""
    try:
        elem = ds.get_item(tag)
    except Exception:
        return None
    if elem is None:
        return None
    value = elem.value
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def _uid(values: Mapping[int, bytes | str], keyword: str) -> str:
    """A UID whole: two UIDs that differ anywhere are two instances (or series...)."""
    value = values.get(_TAGS[keyword])
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    uid = _clean(value or "", limit=None)
    if len(uid) > MAX_TEXT:
        raise NotIndexable(f"{keyword} longer than {MAX_TEXT} characters")
    return uid


def charset_terms(declared: bytes | str | None) -> list[str]:
    """A SpecificCharacterSet's values, as declared (raw, or text)."""
    if isinstance(declared, bytes):
        declared = declared.decode("ascii", errors="replace")
    return [t.strip() for t in (declared or "").strip("\x00 ").split("\\")]


def may_be_utf8(terms: list[str]) -> bool:
    """Whether text declared in these character sets may be UTF-8 written by mistake:
    Latin-1, or none declared."""
    return "\\".join(terms) in _LATIN_SETS


class _TextReader:
    """Decodes raw text values with the file's character set."""

    def __init__(self, values: Mapping[int, bytes | str]) -> None:
        self.values = values
        terms = charset_terms(values.get(_CHARSET_TAG))
        self.may_be_utf8 = may_be_utf8(terms)
        try:
            self.encodings = convert_encodings(terms if any(terms) else ["ISO_IR 6"])
        except Exception:
            self.encodings = ["iso8859"]  # an unknown character set: Latin-1 loses nothing

    def __call__(self, keyword: str) -> str:
        value = self.values.get(_TAGS[keyword])
        if isinstance(value, bytes):
            value = self._decode(value)
        return _clean(value or "")

    def _decode(self, raw: bytes) -> str:
        if raw.isascii() and b"\x1b" not in raw:  # ESC starts an ISO 2022 switch
            return raw.decode("ascii")
        if self.may_be_utf8:
            # UTF-8 bytes declared as Latin-1 (or not declared): decode them as UTF-8.
            with contextlib.suppress(UnicodeError):
                return raw.decode("utf-8")
        try:
            return decode_bytes(raw, self.encodings, _DELIMITERS)
        except Exception:
            return raw.decode("latin-1")


def _clean(text: str, limit: int | None = MAX_TEXT) -> str:
    """Strip padding and control characters; cap the length at limit."""
    text = text.replace("\x00", "").strip()
    if not text.isascii() or not text.isprintable():
        text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return text[:limit]


def _date(value: str) -> str:
    """YYYYMMDD, or empty when missing or not a date."""
    value = value.replace(".", "").replace("-", "")
    return value if _DATE.match(value) else ""


def _time(value: str) -> str:
    value = value.replace(":", "")
    return value if _TIME.match(value) else ""


def _integer(value: str) -> int | None:
    with contextlib.suppress(ValueError):
        number = int(float(value.split("\\")[0]))
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
