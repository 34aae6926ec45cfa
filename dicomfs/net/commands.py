"""DIMSE command sets (PS3.7 9.3, E.1) read and written with struct.

A command set is a few elements of group 0000 in Implicit VR Little Endian. The
receiver reads C-ECHO-RQ and C-STORE-RQ, and answers them, once per instance:
through pydicom datasets that costs up to a millisecond of CPU each way, a large
part of what one instance costs; here, microseconds.
"""

from __future__ import annotations

import dataclasses
import struct

_ELEMENT = struct.Struct("<HHL")  # group, element, value length
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
NO_DATA_SET = 0x0101  # CommandDataSetType: no data set follows
ERROR_COMMENT_LENGTH = 64  # LO


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    field: int  # CommandField: C_STORE_RQ, C_ECHO_RQ, ...
    message_id: int
    sop_class: str  # AffectedSOPClassUID
    sop_instance: str  # AffectedSOPInstanceUID ("" for C-ECHO)
    has_data_set: bool
    move_originator: str = ""  # MoveOriginatorApplicationEntityTitle: a C-MOVE's sub-operation


def read(command: bytes | bytearray | memoryview) -> Request:
    """The request a command set carries; ValueError if it is not a well-formed one."""
    values: dict[int, bytes] = {}
    position, end = 0, len(command)
    while position < end:
        if position + _ELEMENT.size > end:
            raise ValueError("a command element cut short")
        group, element, length = _ELEMENT.unpack_from(command, position)
        start = position + _ELEMENT.size
        if group != 0x0000 or start + length > end:
            raise ValueError(f"a malformed command element ({group:04X},{element:04X})")
        values[element] = bytes(command[start : start + length])
        position = start + length
    try:
        field = _us(values[0x0100])
        message_id = _us(values[0x0110])
        data_set_type = _us(values[0x0800])
    except (KeyError, struct.error) as exc:
        raise ValueError(
            "a command set without its command field, message ID or data set type"
        ) from exc
    return Request(
        field=field,
        message_id=message_id,
        sop_class=_text(values.get(0x0002, b""), b"\x00 "),
        sop_instance=_text(values.get(0x1000, b""), b"\x00 "),
        has_data_set=data_set_type != NO_DATA_SET,
        move_originator=_text(values.get(0x1030, b""), b" "),
    )


def response(request: Request, status: int, error_comment: str = "") -> bytes:
    """The response (C-STORE-RSP or C-ECHO-RSP) to a request, with this status."""
    field = C_STORE_RSP if request.field == C_STORE_RQ else C_ECHO_RSP
    elements = _uid(0x0002, request.sop_class) + _us_element(0x0100, field)
    elements += _us_element(0x0120, request.message_id) + _us_element(0x0800, NO_DATA_SET)
    elements += _us_element(0x0900, status)
    if error_comment:
        comment = error_comment.encode("ascii", "replace")[:ERROR_COMMENT_LENGTH]
        elements += _element(0x0902, comment + b" " * (len(comment) % 2))
    if request.field == C_STORE_RQ:
        elements += _uid(0x1000, request.sop_instance)
    return _element(0x0000, struct.pack("<L", len(elements))) + elements


def _us(value: bytes) -> int:
    return int(struct.unpack("<H", value)[0])


def _text(value: bytes, pad: bytes) -> str:
    return value.rstrip(pad).decode("ascii", "replace")


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0x0000, element, len(value)) + value


def _us_element(element: int, value: int) -> bytes:
    return _element(element, struct.pack("<H", value))


def _uid(element: int, value: str) -> bytes:
    data = value.encode("ascii")
    return _element(element, data + b"\x00" * (len(data) % 2))  # UI pads with NUL
