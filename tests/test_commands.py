"""The receiver's own command sets and PDVs: the bytes pynetdicom (an independent
implementation) reads and writes, both ways."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom.uid import MRImageStorage
from pynetdicom.dimse_messages import C_ECHO_RQ, C_ECHO_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode as pynetdicom_decode
from pynetdicom.dsutils import encode as pynetdicom_encode

from dicomfs.net import commands, wire

VERIFICATION = "1.2.840.10008.1.1"


def encoded_by_pynetdicom(message: object, primitive: object) -> bytes:
    message.primitive_to_message(primitive)  # type: ignore[attr-defined]
    encoded = pynetdicom_encode(message.command_set, True, True)  # type: ignore[attr-defined]
    assert encoded is not None
    return encoded


def store_request(message_id: int, sop: str, originator: str | None = None) -> bytes:
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = MRImageStorage
    primitive.AffectedSOPInstanceUID = sop
    primitive.Priority = 2
    primitive.DataSet = BytesIO(b"\x08\x00")  # says a data set follows
    if originator:
        primitive.MoveOriginatorApplicationEntityTitle = originator
        primitive.MoveOriginatorMessageID = 3
    return encoded_by_pynetdicom(C_STORE_RQ(), primitive)


@pytest.mark.parametrize(
    ("message_id", "sop", "originator"),
    [(1, "1.2.3.4", None), (65535, "1.2.826.0.1.3680043.8.498.1234567890.1", "PACS")],
)
def test_a_c_store_request_reads_as_pynetdicom_wrote_it(
    message_id: int, sop: str, originator: str | None
) -> None:
    request = commands.read(store_request(message_id, sop, originator))
    assert request == commands.Request(
        field=commands.C_STORE_RQ, message_id=message_id, sop_class=MRImageStorage,
        sop_instance=sop, has_data_set=True, move_originator=originator or "",
    )  # fmt: skip


def test_a_c_echo_request_has_no_data_set() -> None:
    primitive = C_ECHO()
    primitive.MessageID = 9
    primitive.AffectedSOPClassUID = VERIFICATION
    request = commands.read(encoded_by_pynetdicom(C_ECHO_RQ(), primitive))
    assert (request.field, request.message_id, request.has_data_set) == (
        commands.C_ECHO_RQ,
        9,
        False,
    )


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC210, 0x0110, 0xB000])
@pytest.mark.parametrize("comment", ["", "cannot read it", "x" * 100, "odd"])
def test_a_c_store_response_is_the_bytes_pynetdicom_would_send(status: int, comment: str) -> None:
    sop = "1.2.826.0.1.3680043.8.498.12345678901234567890.1"
    request = commands.read(store_request(7, sop))
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = MRImageStorage
    primitive.AffectedSOPInstanceUID = sop
    primitive.Status = status
    if comment:  # a longer one is cut, and says so
        limit = commands.ERROR_COMMENT_LENGTH
        primitive.ErrorComment = comment if len(comment) <= limit else comment[: limit - 3] + "..."
    ours = commands.response(request, status, comment)
    assert ours == encoded_by_pynetdicom(C_STORE_RSP(), primitive)
    decoded = pynetdicom_decode(BytesIO(ours), True, True)
    assert (decoded.Status, decoded.MessageIDBeingRespondedTo) == (status, 7)


def test_a_c_echo_response_is_the_bytes_pynetdicom_would_send() -> None:
    request = commands.Request(commands.C_ECHO_RQ, 3, VERIFICATION, "", has_data_set=False)
    primitive = C_ECHO()
    primitive.MessageIDBeingRespondedTo = 3
    primitive.AffectedSOPClassUID = VERIFICATION
    primitive.Status = 0
    assert commands.response(request, 0) == encoded_by_pynetdicom(C_ECHO_RSP(), primitive)


@pytest.mark.parametrize(
    "command",
    [
        b"",  # nothing at all
        b"\x00\x00\x00\x01\x04\x00",  # cut short in an element's header
        struct.pack("<HHL", 0, 0x0100, 50) + b"\x01\x00",  # a value longer than the set
        struct.pack("<HHL", 8, 0x0016, 2) + b"ab",  # another group than 0000
        struct.pack("<HHLH", 0, 0x0100, 2, 1),  # no message ID, no data set type
        struct.pack("<HHLB", 0, 0x0100, 1, 1) + struct.pack("<HHLH", 0, 0x0110, 2, 1)
        + struct.pack("<HHLH", 0, 0x0800, 2, 1),  # a command field of one byte
    ],
)  # fmt: skip
def test_a_malformed_command_set_is_a_value_error(command: bytes) -> None:
    with pytest.raises(ValueError, match="command"):
        commands.read(command)


def test_pdvs_are_split_as_they_were_sent_and_a_bad_length_is_refused() -> None:
    items = [(1, wire.COMMAND | wire.LAST, b"abcd"), (3, 0, b""), (3, wire.LAST, b"xyz")]
    body = b"".join(wire.PDV_HEADER.pack(len(d) + 2, cx, ctl) + d for cx, ctl, d in items)
    assert [(cx, ctl, bytes(d)) for cx, ctl, d in wire.pdvs(memoryview(body))] == items
    for bad in (body[:-1], body + b"\x00\x00", wire.PDV_HEADER.pack(1, 1, 0)):
        with pytest.raises(ValueError, match="PDV item"):
            wire.pdvs(memoryview(bad))


def test_an_error_comment_too_long_is_cut_at_a_word() -> None:
    request = commands.read(store_request(7, "1.2.3"))
    comment = "a STUDY retrieval needs its StudyInstanceUID, and this one names none at all"
    decoded = pynetdicom_decode(BytesIO(commands.response(request, 0xA900, comment)), True, True)
    assert decoded.ErrorComment == "a STUDY retrieval needs its StudyInstanceUID, and this one..."
