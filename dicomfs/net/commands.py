"""DIMSE command sets (PS3.7 9.3, E.1) read and written with struct.

A command set is a few elements of group 0000 in Implicit VR Little Endian. The
receiver reads C-ECHO-RQ, C-STORE-RQ, C-FIND-RQ, C-GET-RQ, C-MOVE-RQ and C-CANCEL-RQ
and answers them, once per instance or match; it sends C-STORE-RQ for a retrieval's
instances and reads their C-STORE-RSP. Through pydicom datasets each costs up to a
millisecond of CPU each way, a large part of what one instance costs; here,
microseconds.
"""

from __future__ import annotations

import dataclasses
import struct

_ELEMENT = struct.Struct("<HHL")  # group, element, value length
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_MOVE_RQ, C_MOVE_RSP = 0x0021, 0x8021
C_CANCEL_RQ = 0x0FFF
_RESPONSE_TO = {C_STORE_RQ: C_STORE_RSP, C_ECHO_RQ: C_ECHO_RSP, C_FIND_RQ: C_FIND_RSP,
                C_GET_RQ: C_GET_RSP, C_MOVE_RQ: C_MOVE_RSP}  # fmt: skip
RETRIEVALS = (C_GET_RQ, C_MOVE_RQ)
MEDIUM = 0x0000  # Priority
NO_DATA_SET = 0x0101  # CommandDataSetType: no data set follows
DATA_SET = 0x0000  # CommandDataSetType: a data set follows (any other value says so)
ERROR_COMMENT_LENGTH = 64  # LO


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """A command set as read: a request, or (with a status) the response to one of ours."""

    field: int  # CommandField: C_STORE_RQ, C_ECHO_RQ, ...
    message_id: int  # 0 in a response and a C-CANCEL-RQ, which carry none
    sop_class: str  # AffectedSOPClassUID
    sop_instance: str  # AffectedSOPInstanceUID ("" for C-ECHO)
    has_data_set: bool
    move_originator: str = ""  # MoveOriginatorApplicationEntityTitle: a C-MOVE's sub-operation
    responding_to: int = 0  # MessageIDBeingRespondedTo: what a C-CANCEL-RQ cancels
    status: int = 0  # a response's
    move_destination: str = ""  # a C-MOVE-RQ's


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
        # A C-CANCEL-RQ names the request it cancels instead of a message ID of its
        # own, and so does a response.
        message_id = _us(values[0x0110]) if field != C_CANCEL_RQ and field < 0x8000 else 0
        data_set_type = _us(values[0x0800])
        responding_to = _us(values[0x0120]) if 0x0120 in values else 0
        status = _us(values[0x0900]) if 0x0900 in values else 0
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
        responding_to=responding_to,
        status=status,
        move_destination=_text(values.get(0x0600, b""), b" "),
    )


def response(
    request: Request,
    status: int,
    error_comment: str = "",
    *,
    data_set: bool = False,
    counts: tuple[int | None, int, int, int] | None = None,
) -> bytes:
    """The response to a request, with this status; data_set: an identifier follows
    it (a C-FIND match, a retrieval's failed instances); counts: a retrieval's
    sub-operations (remaining, or None when the response says none; completed,
    failed, warning)."""
    field = _RESPONSE_TO[request.field]
    elements = _uid(0x0002, request.sop_class) + _us_element(0x0100, field)
    elements += _us_element(0x0120, request.message_id)
    elements += _us_element(0x0800, DATA_SET if data_set else NO_DATA_SET)
    elements += _us_element(0x0900, status)
    if error_comment:
        comment = error_comment.encode("ascii", "replace")
        if len(comment) > ERROR_COMMENT_LENGTH:  # cut at a word, and say so
            comment = comment[: ERROR_COMMENT_LENGTH - 3].rsplit(b" ", 1)[0] + b"..."
        elements += _padded(0x0902, comment)
    if request.field == C_STORE_RQ:
        elements += _uid(0x1000, request.sop_instance)
    if counts is not None:
        for element, count in zip((0x1020, 0x1021, 0x1022, 0x1023), counts, strict=True):
            if count is not None:
                elements += _us_element(element, count)
    return _group(elements)


def store_request(
    message_id: int, sop_class: str, sop_instance: str, *, move_originator: str = "",
    move_originator_id: int = 0,
) -> bytes:  # fmt: skip
    """A C-STORE-RQ (a retrieval's sub-operation): a data set follows it. A C-MOVE's
    names the AE title and message that asked for it."""
    elements = _uid(0x0002, sop_class) + _us_element(0x0100, C_STORE_RQ)
    elements += _us_element(0x0110, message_id) + _us_element(0x0700, MEDIUM)
    elements += _us_element(0x0800, DATA_SET) + _uid(0x1000, sop_instance)
    if move_originator:
        elements += _padded(0x1030, move_originator.encode("ascii", "replace"))
        elements += _us_element(0x1031, move_originator_id)
    return _group(elements)


def _group(elements: bytes) -> bytes:
    """The command set: its group length, then its elements (in the order of their tags)."""
    return _element(0x0000, struct.pack("<L", len(elements))) + elements


def _us(value: bytes) -> int:
    return int(struct.unpack("<H", value)[0])


def _text(value: bytes, pad: bytes) -> str:
    return value.rstrip(pad).decode("ascii", "replace")


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0x0000, element, len(value)) + value


def _padded(element: int, text: bytes) -> bytes:
    """A text element, padded to even length with a space (AE, LO)."""
    return _element(element, text + b" " * (len(text) % 2))


def _us_element(element: int, value: int) -> bytes:
    return _element(element, struct.pack("<H", value))


def _uid(element: int, value: str) -> bytes:
    data = value.encode("ascii")
    return _element(element, data + b"\x00" * (len(data) % 2))  # UI pads with NUL
