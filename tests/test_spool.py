"""Where an incoming dataset is written while it arrives: a file in the store's own tmp, a
write error kept for the C-STORE handler instead of breaking the association, and what an
association leaves half-written dropped."""

from __future__ import annotations

import io
import os
import resource
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE, _config, dimse_messages, evt
from pynetdicom.dsutils import create_file_meta

from dicomfs.dicom import corpus
from dicomfs.net import spool
from dicomfs.store import files

from .peers import free_port


@pytest.fixture
def tmp(store: Path) -> Path:
    return files.tmp_dir(store)


@pytest.fixture
def spooled(tmp: Path) -> Iterator[spool.SpoolFile]:
    received = spool.SpoolFile(tmp)
    yield received
    received.close()


def part10(spec: corpus.Spec) -> bytes:
    buffer = io.BytesIO()
    corpus.dataset(spec).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_the_file_meta_is_what_pydicom_writes_for_pynetdicom(syntax: str) -> None:
    uids = {"sop_class_uid": MRImageStorage, "sop_instance_uid": "1.2.3.4",
            "transfer_syntax": syntax}  # fmt: skip
    theirs = io.BytesIO()
    write_file_meta_info(theirs, create_file_meta(**uids))  # type: ignore[arg-type]
    assert spool.file_meta(**uids) == theirs.getvalue()
    odd = {**uids, "sop_instance_uid": "1.2.3.45"}  # an odd length is padded
    theirs = io.BytesIO()
    write_file_meta_info(theirs, create_file_meta(**odd))  # type: ignore[arg-type]
    assert spool.file_meta(**odd) == theirs.getvalue()


def test_an_instance_is_spooled_in_the_stores_tmp_and_handed_over_whole(
    tmp: Path, spooled: spool.SpoolFile
) -> None:
    data = part10(corpus.Spec(matrix=256))
    assert Path(spooled.name).parent == tmp
    for start in range(0, len(data), 16384):  # as pynetdicom writes it, one fragment at a time
        assert spooled.write(data[start : start + 16384]) == min(16384, len(data) - start)
        spooled.flush()
    spooled.complete()
    spooled.sync()
    assert spooled.size == len(data)
    assert Path(spooled.name).read_bytes() == data
    assert pydicom.dcmread(spooled.name).Rows == 256


def test_a_write_error_is_kept_for_the_handler_and_the_writes_go_on(
    spooled: spool.SpoolFile,
) -> None:
    """As on a full disk: no file may grow past 1 MB here."""
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, previous[1]))
    try:
        for _ in range(8):  # 2 MB, past the limit: pynetdicom must not see an error
            assert spooled.write(b"\0" * (256 << 10)) == 256 << 10
        with pytest.raises(OSError, match="File too large") as caught:
            spooled.complete()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
        signal.signal(signal.SIGXFSZ, handler)
    assert spooled.error is caught.value  # kept: the handler answers with it
    with pytest.raises(OSError, match="File too large"):
        spooled.complete()  # and it stays


def test_a_claimed_file_is_left_to_its_handler_and_an_unclaimed_one_is_dropped(
    tmp: Path,
) -> None:
    being_stored, half_written = spool.SpoolFile(tmp), spool.SpoolFile(tmp)
    for received in (being_stored, half_written):
        received.write(b"half an instance")
    assert spool.SpoolFile.claim(being_stored.name) is being_stored
    spool.SpoolFile.discard_unfinished(threading.get_ident())  # its association ended
    assert os.listdir(tmp) == [os.path.basename(being_stored.name)]
    being_stored.close()
    assert spool.SpoolFile.claim(being_stored.name) is None  # closed: no longer ours


def test_files_left_by_associations_whose_thread_ended_are_dropped(tmp: Path) -> None:
    made: list[spool.SpoolFile] = []
    thread = threading.Thread(target=lambda: made.append(spool.SpoolFile(tmp)))
    thread.start()
    thread.join()
    mine = spool.SpoolFile(tmp)  # of a thread still alive
    spool.SpoolFile.discard_orphans()
    assert os.listdir(tmp) == [os.path.basename(mine.name)]
    assert spool.SpoolFile.claim(made[0].name) is None
    mine.close()


@pytest.fixture
def installed(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """spool.install for this test only: pynetdicom is put back as it was afterwards."""
    for name in ("NamedTemporaryFile", "create_file_meta", "write_file_meta_info"):
        monkeypatch.setattr(dimse_messages, name, getattr(dimse_messages, name))
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", False)
    spool.install(tmp)
    return tmp


def test_pynetdicom_spools_a_received_instance_there(installed: Path) -> None:
    seen: list[tuple[Path, bool, bytes]] = []

    def on_store(event: evt.Event) -> int:
        path = Path(event.dataset_path)
        received = spool.SpoolFile.claim(str(path))
        assert received is not None
        received.complete()
        seen.append((path.parent, os.path.exists(path), path.read_bytes()))
        return 0x0000

    scp = AE("SPOOL")
    scp.add_supported_context(MRImageStorage, ExplicitVRLittleEndian)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False,
                              evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    try:
        scu = AE("SENDER")
        scu.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
        assoc = scu.associate("127.0.0.1", port, ae_title="SPOOL")
        assert assoc.is_established
        sent = corpus.dataset(corpus.Spec(matrix=64))
        assert assoc.send_c_store(sent).Status == 0x0000
        assoc.release()
    finally:
        server.shutdown()
    ((directory, existed, data),) = seen
    assert (directory, existed) == (installed, True)
    stored = pydicom.dcmread(io.BytesIO(data))
    assert stored.file_meta.MediaStorageSOPInstanceUID == sent.SOPInstanceUID
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert stored.PixelData == sent.PixelData
    assert os.listdir(installed) == []  # pynetdicom removes it once the handler returns
