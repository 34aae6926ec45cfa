"""C-FIND as a workstation asks it (PS3.4 C.4.1): an identifier in, its matches out;
and the identifier of a C-MOVE or C-GET (C.4.2, C.4.3): the instances it names.

The identifier says the query's level and, in each of its attributes, a key: one
with a value is matched, one without is asked for. Each match answers every key the
identifier holds: with its value where the index has one, empty where it has none
(the standard's way of saying "not known here"), in UTF-8 (ISO_IR 192) whatever
character set the identifier came in.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from io import BytesIO

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import decode

from ..dicom.meta import charset_terms, may_be_utf8
from ..store.index import query
from ..store.index.engine import Connection
from ..store.index.query import Retrievable

CHARACTER_SET = "ISO_IR 192"
_SKIPPED = ("QueryRetrieveLevel", "SpecificCharacterSet")


class Refused(Exception):
    """The query cannot be answered: (status, why) for the requester."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


IDENTIFIER_DOES_NOT_MATCH = 0xA900  # C-FIND: the identifier is not one of this SOP class
UNABLE_TO_PROCESS = 0xC000


def read(
    identifier: bytes, syntax: str, study_root: bool = False
) -> tuple[Dataset, str, dict[str, str]]:
    """A C-FIND's, C-MOVE's or C-GET's identifier: as a dataset, its level, and its
    keys (keyword -> value, empty for universal matching). study_root: the Study
    Root model's, which has no PATIENT level."""
    implicit, little = syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian
    asked = decode(BytesIO(identifier), implicit, little)
    if asked is None:
        raise Refused(IDENTIFIER_DOES_NOT_MATCH, "an identifier that cannot be read")
    if _utf8_by_mistake(asked):
        asked.set_original_encoding(implicit, little, convert_encodings([CHARACTER_SET]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's on values like UI `1.2*`: refused below
        level = str(asked.get("QueryRetrieveLevel", "")).strip().upper()
        keys = {element.keyword: _value(element) for element in asked if element.keyword}
    for keyword in _SKIPPED:
        keys.pop(keyword, None)
    if study_root and level == "PATIENT":
        raise Refused(IDENTIFIER_DOES_NOT_MATCH, "no PATIENT level in the Study Root model")
    return asked, level, keys


def _utf8_by_mistake(asked: Dataset) -> bool:
    """Whether the identifier's text is UTF-8 declared as Latin-1 or not declared at
    all: what findscu sends from a UTF-8 terminal (`-k PatientName=Müller`). Read as
    UTF-8 then, as the index reads such files."""
    declared = getattr(asked.get_item(0x00080005), "value", None)
    if not may_be_utf8(charset_terms(declared)):
        return False
    found = False
    for tag in asked.keys():  # noqa: SIM118 (iterating a Dataset decodes its values)
        value = getattr(asked.get_item(tag), "value", None)
        if isinstance(value, bytes) and not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeError:
                return False
            found = True
    return found


def retrievable(
    conn: Connection, identifier: bytes, syntax: str, study_root: bool = False
) -> list[Retrievable]:
    """The instances a C-MOVE's or C-GET's identifier names."""
    _, level, keys = read(identifier, syntax, study_root)
    try:
        return query.retrievable(conn, level, keys)
    except query.BadQuery as exc:
        raise Refused(IDENTIFIER_DOES_NOT_MATCH, str(exc)) from None


def matches(
    conn: Connection, identifier: bytes, syntax: str, aet: str, study_root: bool = False
) -> Iterator[bytes]:
    """Each match of the identifier, encoded in the presentation context's syntax."""
    asked, level, keys = read(identifier, syntax, study_root)
    try:
        found = query.find(conn, level, keys)
        answer = _Answer(asked, level, aet, syntax)
        for row in found:
            yield answer.encode(row)
    except query.BadQuery as exc:
        raise Refused(IDENTIFIER_DOES_NOT_MATCH, str(exc)) from None


class _Answer:
    """A match's data set, written with struct: building and encoding a pydicom
    dataset per match costs a third of a millisecond, which a study list of a
    thousand matches would wait for. The elements are those asked, in the order of
    their tags; those whose value is the same in every match are encoded once."""

    def __init__(self, asked: Dataset, level: str, aet: str, syntax: str) -> None:
        self._explicit = syntax != ImplicitVRLittleEndian
        self._order = "<" if syntax != ExplicitVRBigEndian else ">"
        fixed = {0x00080005: ("CS", CHARACTER_SET), 0x00080052: ("CS", level)}
        parts: dict[int, bytes | tuple[str, str]] = {
            tag: self._element(tag, vr, value) for tag, (vr, value) in fixed.items()
        }
        for element in asked:
            keyword, tag = element.keyword, int(element.tag)
            if not keyword or keyword in _SKIPPED or tag >> 16 < 0x0008:
                continue  # private, or no part of a data set (a file meta element, say)
            vr = _vr(tag, str(element.VR))
            if keyword == "RetrieveAETitle":
                parts[tag] = self._element(tag, vr, aet)
            elif query.answerable(keyword) and vr != "SQ":
                parts[tag] = (keyword, vr)  # its value is the match's
            else:
                parts[tag] = self._element(tag, vr, "")  # not known here: empty
        self._parts = sorted(parts.items())

    def encode(self, row: dict[str, str]) -> bytes:
        out = bytearray()
        for tag, part in self._parts:
            if isinstance(part, bytes):
                out += part
            else:
                keyword, vr = part
                out += self._element(tag, vr, row.get(keyword, ""))
        return bytes(out)

    def _element(self, tag: int, vr: str, text: str) -> bytes:
        value = text.encode("utf-8")
        if len(value) % 2:
            value += b"\x00" if vr == "UI" else b" "
        group, element, order = tag >> 16, tag & 0xFFFF, self._order
        if not self._explicit:
            return struct.pack(f"{order}HHL", group, element, len(value)) + value
        if vr in _LONG_LENGTH:
            return struct.pack(f"{order}HH2s2xL", group, element, vr.encode(), len(value)) + value
        value = value[:0xFFFE]  # the most a short length says
        return struct.pack(f"{order}HH2sH", group, element, vr.encode(), len(value)) + value


_LONG_LENGTH = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _vr(tag: int, asked: str) -> str:
    """A key's VR as the dictionary has it (the requester's if the dictionary says
    more than one, or nothing)."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = asked
    return vr if len(vr) == 2 else asked if len(asked) == 2 else "UN"


def _value(element: object) -> str:
    """A key's value as text: a list of values joined with backslashes; a sequence
    (a key this node cannot match) as nothing."""
    value = getattr(element, "value", None)
    if value is None or getattr(element, "VR", "") == "SQ":
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)
