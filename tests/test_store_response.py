"""C-STORE responses encoded by us are the bytes pynetdicom would send; with a
pynetdicom we did not test, or when told so, pynetdicom's own way answers, and real
senders hear the same statuses either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode as pynetdicom_encode

from dicomfs.dicom import corpus
from dicomfs.net import store_response

from .peers import dcmtk, serving
from .test_receiver import client, rows


def response(status: int, message_id: int, sop_class: str, sop: str) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop
    primitive.Status = status
    return primitive


def pynetdicoms_bytes(primitive: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    encoded = pynetdicom_encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC210, 0x0110, 0xB000])
@pytest.mark.parametrize(
    ("message_id", "sop"),
    [(1, "1.2.3.4"), (65535, "1.2.826.0.1.3680043.8.498.12345678901234567890.1"), (7, "1.2.3")],
)
def test_a_response_is_the_bytes_pynetdicom_would_send(status: int, message_id: int, sop: str):
    primitive = response(status, message_id, "1.2.840.10008.5.1.4.1.1.4", sop)
    assert store_response.encode(primitive) == pynetdicoms_bytes(primitive)


def test_other_messages_take_pynetdicoms_way() -> None:
    with_comment = response(0xC210, 1, "1.2.840.10008.5.1.4.1.1.4", "1.2.3")
    with_comment.ErrorComment = "cannot read it"
    echo = C_ECHO()
    echo.MessageIDBeingRespondedTo = 1
    echo.Status = 0
    request = C_STORE()  # a request, as a C-GET's sub-operation sends
    request.MessageID = 1
    for primitive in (with_comment, echo, request):
        assert store_response.encode(primitive) is None


class _Association:
    def __init__(self) -> None:
        self.dimse = self

    def send_msg(self, primitive: Any, context_id: int) -> None:
        raise AssertionError("not called here")


@pytest.mark.parametrize("how", ["an untested pynetdicom", "DICOMFS_STORE_RESPONSE=stock"])
def test_elsewhere_pynetdicom_answers_as_it_always_does(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "an untested pynetdicom":
        monkeypatch.setattr(pynetdicom, "__version__", "9.9.9")
    else:
        monkeypatch.setenv("DICOMFS_STORE_RESPONSE", "stock")
    assoc = _Association()
    stock = assoc.send_msg
    assert not store_response.install(assoc)
    assert assoc.send_msg == stock


@pytest.mark.skipif(not Path("/usr/bin/storescu").exists(), reason="needs dcmtk")
@pytest.mark.parametrize("way", ["ours", "stock"])
def test_senders_hear_the_same_statuses_either_way(
    way: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if way == "stock":
        monkeypatch.setenv("DICOMFS_STORE_RESPONSE", "stock")  # serve inherits it
    sent = tmp_path / "sent"
    count = corpus.write_regular(sent, patients=1, studies=1, series=2, instances=3)
    store = tmp_path / "store"
    with serving(store) as server:
        result = dcmtk("storescu", "-aec", "DICOMFS", "+sd", "+r", "127.0.0.1",
                       str(server.port), str(sent))  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        ae, _ = client()
        assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
        no_uid = corpus.dataset(corpus.Spec(sop_uid="1.2.826.0.1.3680043.8.498.99"))
        del no_uid.StudyInstanceUID
        assert assoc.send_c_store(no_uid).Status == 0xC210
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        log = server.log.read_text()
    assert len(rows(store, "SELECT sop_uid FROM instances")) == count
    assert ("encodes the C-STORE responses itself" in log) == (way == "stock")
