"""C-STORE responses encoded at once, not through pydicom.

pynetdicom turns every response into a pydicom Dataset, computes its group length by
encoding it, then encodes it again: up to a millisecond of CPU for seven elements, a
quarter of the Python that one instance cost the receiver. A C-STORE
response (PS3.7 9.3.1.2) without an error comment or offending element is always the
same command set in Implicit VR Little Endian, the same bytes pynetdicom would send
(tests/test_store_response.py compares them), so we write them with struct.

`install` wraps one association's DIMSEServiceProvider.send_msg: a plain C-STORE
response goes out as one P-DATA-TF PDU of ours through the association's own
send_pdu; every other message takes pynetdicom's way. Only the pynetdicom versions
this was read and tested against are adjusted; with any other, or with
DICOMFS_STORE_RESPONSE=stock in the environment, pynetdicom answers as it always
does and a log line says so once.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Any

import pynetdicom
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

log = logging.getLogger(__name__)

TESTED_VERSIONS = frozenset({"3.0.4"})
_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101
_LAST_COMMAND_FRAGMENT = b"\x03"  # message control header: command, last fragment
_said = False


def is_adjustable() -> bool:
    return (
        os.environ.get("DICOMFS_STORE_RESPONSE") != "stock"
        and pynetdicom.__version__ in TESTED_VERSIONS
    )


def install(assoc: Any) -> bool:
    """Send this association's plain C-STORE responses as encoded here; False (and
    nothing changed) where this pynetdicom is not one we tested."""
    global _said
    if not is_adjustable():
        if not _said:
            _said = True
            log.info("pynetdicom %s encodes the C-STORE responses itself (ours are for "
                     "versions %s, without DICOMFS_STORE_RESPONSE=stock)",
                     pynetdicom.__version__, ", ".join(sorted(TESTED_VERSIONS)))  # fmt: skip
        return False
    dimse = assoc.dimse
    stock = dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        command = encode(primitive)
        if command is None:
            stock(primitive, context_id)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, _LAST_COMMAND_FRAGMENT + command))
        dimse.dul.send_pdu(pdata)

    dimse.send_msg = send_msg
    return True


def encode(primitive: Any) -> bytes | None:
    """The command set of a plain C-STORE response, or None for any other message."""
    if (
        type(primitive) is not C_STORE
        or primitive.MessageIDBeingRespondedTo is None
        or primitive.ErrorComment is not None
        or primitive.OffendingElement is not None
        or primitive.Status is None
    ):
        return None
    elements = (
        _uid(0x0002, primitive.AffectedSOPClassUID)
        + _us(0x0100, _C_STORE_RSP)
        + _us(0x0120, primitive.MessageIDBeingRespondedTo)
        + _us(0x0800, _NO_DATA_SET)
        + _us(0x0900, primitive.Status)
        + _uid(0x1000, primitive.AffectedSOPInstanceUID)
    )
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(elements)) + elements


def _us(element: int, value: int) -> bytes:
    return struct.pack("<HHLH", 0x0000, element, 2, value)


def _uid(element: int, value: Any) -> bytes:
    data = str(value or "").encode("ascii")
    if len(data) % 2:
        data += b"\x00"  # a UI value is padded to even length with NUL
    return struct.pack("<HHL", 0x0000, element, len(data)) + data
