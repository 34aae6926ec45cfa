"""A lean reader for the start of a DICOM Part 10 file.

Indexing reads a dozen attributes from the first few kilobytes of each file;
going through pydicom's full element machinery for that costs more than the
I/O. This reader walks the elements of the little-endian transfer syntaxes
(which is what scanners and PACS send) up to the last tag asked for, skipping
sequences, and returns the raw bytes of the wanted elements. Anything it does
not handle (no preamble, big endian, deflate, an odd structure) returns None
so that the caller falls back to pydicom.
"""

from __future__ import annotations

import dataclasses
import struct

IMPLICIT_LE = "1.2.840.10008.1.2"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95")

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
# Explicit VRs whose length is 4 bytes after 2 reserved ones.
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class _Unsupported(Exception):
    """A structure this reader leaves to pydicom."""


class TooDeep(ValueError):
    """Sequences nested deeper than any real instance nests them (a hostile file)."""


MAX_DEPTH = 64  # of nested sequences


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    values: dict[int, bytes]  # wanted tag -> raw value bytes
    transfer_syntax: str
    media_sop_uid: str  # from the meta header; tells a truncated file from a bad one
    complete: bool  # False when the data ended before the last wanted tag


def read_header(data: bytes, wanted: frozenset[int]) -> Header | None:
    """Parse the raw values of `wanted` tags from the file's first bytes."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    try:
        meta, pos = _read_meta(data, 132)
        syntax = meta.get(0x00020010, b"").decode("ascii").strip("\x00 ")
        if syntax == BIG_ENDIAN or syntax in DEFLATED:
            return None
        values: dict[int, bytes] = {}
        end = _read_elements(data, pos, syntax != IMPLICIT_LE, wanted, values, max(wanted), 0)
    except (_Unsupported, struct.error, UnicodeDecodeError):
        return None
    media_sop = meta.get(0x00020003, b"").decode("ascii", "replace").strip("\x00 ")
    return Header(values, syntax, media_sop, complete=end < len(data))


def data_set_start(data: bytes) -> tuple[int, str] | None:
    """Where a Part 10 file's data set begins, and its transfer syntax, from the file's
    first bytes; None if they hold no complete Part 10 header (the data set must begin
    within them)."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    try:
        meta, pos = _read_meta(data, 132)
        syntax = meta.get(0x00020010, b"").decode("ascii").strip("\x00 ")
    except (_Unsupported, struct.error, UnicodeDecodeError):
        return None
    return (pos, syntax) if syntax and pos + 8 <= len(data) else None


def _read_meta(data: bytes, pos: int) -> tuple[dict[int, bytes], int]:
    """Group 0002, always explicit VR little endian."""
    meta: dict[int, bytes] = {}
    while pos + 8 <= len(data):
        group, element = _TAG.unpack_from(data, pos)
        if group != 0x0002:
            break
        value_pos, length = _explicit_header(data, pos)
        if length == UNDEFINED:
            raise _Unsupported
        meta[group << 16 | element] = data[value_pos : value_pos + length]
        pos = value_pos + length
    return meta, pos


def _explicit_header(data: bytes, pos: int) -> tuple[int, int]:
    vr = data[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        return pos + 12, _U32.unpack_from(data, pos + 8)[0]
    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
        raise _Unsupported  # not a VR: a damaged file, or implicit VR mislabelled
    return pos + 8, _U16.unpack_from(data, pos + 6)[0]


def _read_elements(
    data: bytes,
    pos: int,
    explicit: bool,
    wanted: frozenset[int],
    values: dict[int, bytes],
    last: int,
    depth: int,
) -> int:
    """Walk elements from pos until past `last`, the end of data, or an item end.

    Returns the position after the item-end marker when one ends the walk.
    A value cut short by the end of data ends the walk: the file is truncated
    and the values read so far are what it has.
    """
    end = len(data)
    while pos + 8 <= end:
        group, element = _TAG.unpack_from(data, pos)
        tag = group << 16 | element
        if tag == ITEM_END:
            return pos + 8
        if tag > last:
            return pos
        if explicit and group != 0xFFFE:
            value_pos, length = _explicit_header(data, pos)
        else:
            value_pos, length = pos + 8, _U32.unpack_from(data, pos + 4)[0]
        if length == UNDEFINED:
            pos = _skip_sequence(data, value_pos, explicit, depth + 1)
            continue
        if value_pos + length > end:
            return end
        if tag in wanted:
            values[tag] = data[value_pos : value_pos + length]
        pos = value_pos + length
    return pos


def _skip_sequence(data: bytes, pos: int, explicit: bool, depth: int) -> int:
    """Skip the items of an undefined-length sequence; return the position after it."""
    if depth > MAX_DEPTH:
        raise TooDeep(f"sequences nested more than {MAX_DEPTH} deep")
    while pos + 8 <= len(data):
        group, element = _TAG.unpack_from(data, pos)
        tag = group << 16 | element
        length = _U32.unpack_from(data, pos + 4)[0]
        pos += 8
        if tag == SEQUENCE_END:
            return pos
        if tag != ITEM:
            raise _Unsupported
        if length == UNDEFINED:
            pos = _read_elements(data, pos, explicit, frozenset(), {}, 0xFFFFFFFF, depth)
        else:
            pos += length
    return len(data)
