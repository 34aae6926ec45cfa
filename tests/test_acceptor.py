"""The pieces of one incoming instance, alone (the receiver's tests send real ones)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from dicomfs.dicom import corpus
from dicomfs.net import commands
from dicomfs.net.acceptor import Spooled, SpoolFiles
from dicomfs.net.receiver import Receiver
from dicomfs.store.writer import IndexWriter

REQUEST = commands.Request(commands.C_STORE_RQ, 1, MRImageStorage, "1.2.3.4", has_data_set=True)


def test_a_spooled_data_set_is_a_part_10_file_pydicom_reads(tmp_path: Path) -> None:
    dataset = corpus.dataset(corpus.Spec(sop_uid="1.2.3.4"))
    encoded = pydicom.filebase.DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(encoded, dataset)
    spooled = Spooled(SpoolFiles(tmp_path).take(), REQUEST, ExplicitVRLittleEndian)
    data = encoded.getvalue()
    spooled.write(data[:100])  # as fragments come
    spooled.write(memoryview(data)[100:])
    read = pydicom.dcmread(spooled.path)
    assert read.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4"
    assert read.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert read.PixelData == dataset.PixelData
    spooled.discard()
    assert not list(tmp_path.iterdir())


def test_without_a_file_the_error_is_kept_for_the_status_and_nothing_raises(
    tmp_path: Path,
) -> None:
    spooled = Spooled(SpoolFiles(tmp_path / "gone").take(), REQUEST, ExplicitVRLittleEndian)
    assert isinstance(spooled.error, FileNotFoundError)
    spooled.write(b"more data")  # dropped: the instance is refused when complete
    spooled.discard()


def test_the_next_spool_file_is_made_ahead_and_removed_if_no_instance_comes(
    tmp_path: Path,
) -> None:
    files = SpoolFiles(tmp_path)
    files.prepare()
    (made,) = tmp_path.iterdir()
    file = files.take()
    assert not isinstance(file, OSError)
    assert file[1] == str(made)
    Spooled(file, REQUEST, ExplicitVRLittleEndian).discard()
    files.prepare()
    assert len(list(tmp_path.iterdir())) == 1
    files.close()  # the association ended: the file made ahead goes
    assert not list(tmp_path.iterdir())


def test_a_spool_file_that_could_not_be_made_ahead_is_tried_again(tmp_path: Path) -> None:
    directory = tmp_path / "tmp"
    files = SpoolFiles(directory)
    files.prepare()  # no directory yet (as if the disk were full): nothing made
    directory.mkdir()
    file = files.take()
    assert not isinstance(file, OSError)
    assert Path(file[1]).parent == directory
    Spooled(file, REQUEST, ExplicitVRLittleEndian).discard()


def test_a_sop_instance_uid_longer_than_dicom_allows_is_refused_and_not_stored(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    writer = IndexWriter(store)
    try:
        receiver = Receiver(store, writer)
        peer: Any = SimpleNamespace(calling_aet="A", address="127.0.0.1", called_aet="B", user=None)
        assert receiver.admit(peer) is None
        request = commands.Request(
            commands.C_STORE_RQ, 1, MRImageStorage, "1.2." + "3" * 70, has_data_set=True
        )
        spooled = Spooled(SpoolFiles(tmp_path).take(), request, ExplicitVRLittleEndian)
        spooled.write(b"\x08\x00\x16\x00UI\x02\x00\x31\x00")
        status, comment = receiver.instance(peer, request, spooled)
    finally:
        writer.close()
    assert (status, comment) == (0xC210, "its SOP Instance UID is longer than 64 characters")
    assert not list(store.glob("1.*"))
