"""Thumbnails of series from files no one here wrote (pydicom's own test files, as they
ship, never downloaded): uncompressed, RLE, JPEG, JPEG-LS and JPEG 2000 decode to a
picture; what no plugin decodes gets the placeholder. Made once, kept in the store's
own directory, made again when the series grows, gone with the series."""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomfs.dicom import corpus
from dicomfs.life import expiry
from dicomfs.store import thumbnails
from dicomfs.store.index import Index
from dicomfs.store.indexer import reconcile
from dicomfs.store.writer import IndexWriter


def pydicom_file(name: str) -> Path:
    found = get_testdata_file(name, download=False)
    assert found is not None, f"{name} does not ship with pydicom"
    return Path(str(found))


def alone_in(store: Path, name: str) -> Index:
    (store / "in").mkdir(parents=True)
    shutil.copy(pydicom_file(name), store / "in" / name)
    index = Index(store)
    reconcile(index, store)
    return index


def only_series(index: Index) -> int:
    (series,) = index.conn.execute("SELECT id FROM series").fetchone()
    return int(series)


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # explicit VR little endian, 16 bit
        "MR_small_RLE.dcm",  # RLE lossless
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR colour
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
        "JPEG2000.dcm",  # JPEG 2000
        "SC_rgb_rle_2frame.dcm",  # two frames, RGB
        "examples_palette.dcm",  # palette colour
    ],
)
def test_a_series_gets_a_picture_of_its_image(store: Path, name: str) -> None:
    before = hashlib.sha256(pydicom_file(name).read_bytes()).hexdigest()
    with alone_in(store, name) as index:
        png = thumbnails.of_series(store, index.conn, only_series(index))
    assert png is not None
    assert png != thumbnails.placeholder("no preview")
    image = Image.open(io.BytesIO(png))
    assert max(image.size) <= thumbnails.SIZE
    assert np.asarray(image).std() > 10  # a picture, not a flat square
    # Read, never written: the stored file is as it came.
    assert hashlib.sha256((store / "in" / name).read_bytes()).hexdigest() == before


def test_what_no_plugin_decodes_gets_the_placeholder(store: Path) -> None:
    with alone_in(store, "JPEG-lossy.dcm") as index:  # 12-bit extended JPEG
        png = thumbnails.of_series(store, index.conn, only_series(index))
    assert png == thumbnails.placeholder("no preview")


def test_made_once_kept_in_the_store_s_own_directory_and_gone_with_the_series(
    store: Path,
) -> None:
    with alone_in(store, "CT_small.dcm") as index:
        series = only_series(index)
        (uid,) = index.conn.execute("SELECT series_uid FROM series").fetchone()
        first = thumbnails.of_series(store, index.conn, series)
        kept = store / thumbnails.THUMBS_DIR / f"{uid}.png"
        assert kept.read_bytes() == first
        assert [p.name for p in (store / "in").iterdir()] == ["CT_small.dcm"]  # DICOM only
        # Asked again: read back, not made again.
        kept.write_bytes(b"the kept one")
        assert thumbnails.of_series(store, index.conn, series) == b"the kept one"
        # The series grows: made again.
        index.conn.execute("UPDATE series SET last_received = ?", (time.time() + 60,))
        assert thumbnails.of_series(store, index.conn, series) == first
    writer = IndexWriter(store)
    try:
        assert expiry.delete_series(writer, store, series, "a test", "someone")
    finally:
        writer.close()
    assert not kept.exists()


def test_a_sweep_removes_the_pictures_of_series_no_longer_indexed(store: Path) -> None:
    with alone_in(store, "CT_small.dcm") as index:
        thumbnails.of_series(store, index.conn, only_series(index))
        stray = store / thumbnails.THUMBS_DIR / "1.2.3.png"
        stray.write_bytes(b"of a series removed by hand")
        assert thumbnails.sweep(store, index.conn) == 1
        assert [p.name for p in (store / thumbnails.THUMBS_DIR).iterdir()] != []
        assert not stray.exists()


def test_a_bare_data_set_gets_its_picture_and_a_file_without_pixels_says_so(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus.write(store / "bare.dcm", corpus.Spec(patient_id="RAW1", matrix=64), with_meta=False)
    shutil.copy(pydicom_file("waveform_ecg.dcm"), store / "ecg.dcm")
    shutil.copy(pydicom_file("JPEG-lossy.dcm"), store / "lossy.dcm")
    with Index(store) as index, caplog.at_level(logging.INFO):
        reconcile(index, store)
        pictures = {
            patient: thumbnails.of_series(store, index.conn, series)
            for series, patient in index.conn.execute(
                """SELECT se.id, p.patient_id FROM series se JOIN studies st ON st.id = se.study
                   JOIN patients p ON p.id = st.patient"""
            )
        }
    patient_of = {name: str(dcmread(store / name).PatientID) for name in ("ecg.dcm", "lossy.dcm")}
    assert pictures["RAW1"] not in (None, thumbnails.placeholder("no preview"))
    assert pictures[patient_of["ecg.dcm"]] == thumbnails.placeholder("no image")
    assert pictures[patient_of["lossy.dcm"]] == thumbnails.placeholder("no preview")
    # A decoder's failure is told once, at INFO: not as pydicom's ERRORs with tracebacks.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("no thumbnail of lossy.dcm" in r.getMessage() for r in caplog.records)


def test_a_series_whose_files_went_by_hand_loses_its_picture_at_the_next_reconcile(
    store: Path,
) -> None:
    with alone_in(store, "CT_small.dcm") as index:
        thumbnails.of_series(store, index.conn, only_series(index))
        assert pictures_kept(store)
        (store / "in" / "CT_small.dcm").unlink()
        reconcile(index, store)
    assert pictures_kept(store) == []


def pictures_kept(store: Path) -> list[str]:
    folder = store / thumbnails.THUMBS_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
