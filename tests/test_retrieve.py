"""C-GET and C-MOVE: what the index names for a retrieval, then serve sending instances to
real requesters (dcmtk's getscu and movescu, Orthanc as a workstation, pynetdicom) and
to real destinations (dcmtk's storescp, Orthanc), and what it records."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomfs import config
from dicomfs.dicom import corpus, header
from dicomfs.net import commands
from dicomfs.store.index import Index, query
from dicomfs.store.indexer import reconcile

from .peers import Orthanc, dcmtk, free_port, serving, terminate

pytestmark = pytest.mark.usefixtures("index_engine")

STUDY = f"{corpus.UID_ROOT}1.0.0"  # the first patient's study: two series of three
OTHER_STUDY = f"{corpus.UID_ROOT}1.1.0"  # the second patient's
SERIES = f"{STUDY}.1"
MATRIX = 256  # 128 KB of pixels: a typical MR slice


@pytest.fixture(autouse=True)
def pynetdicom_as_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """An earlier test's receiver in this process may have made pynetdicom spool what it
    receives (spool.install), into a directory gone since: these requesters take their
    instances in memory, as pynetdicom does unless told."""
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", False)


def made(store: Path, *, instances: int = 3) -> None:
    corpus.write_regular(store / "incoming", patients=2, studies=1, series=2,
                         instances=instances, matrix=MATRIX)  # fmt: skip
    with Index(store) as index:
        reconcile(index, store)


def in_index(store: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with Index(store, readonly=True) as index:
        return [tuple(row) for row in index.conn.execute(sql, args).fetchall()]


def stored_files(store: Path) -> dict[str, Path]:
    """SOP instance UID -> its file in the store."""
    rows = in_index(store, "SELECT sop_uid, path FROM instances")
    return {uid: store / path for uid, path in rows}


def dicomfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomfs", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def same_instance(received: Path, stored: Path) -> None:
    """The data set arrived as it is stored: every element and the pixels' bytes."""
    theirs, ours = pydicom.dcmread(received), pydicom.dcmread(stored)
    assert theirs.file_meta.TransferSyntaxUID == ours.file_meta.TransferSyntaxUID
    assert theirs == ours


# --- what the index names -----------------------------------------------------------------


def test_a_retrieval_names_what_it_wants_and_gets_it_in_order(store: Path) -> None:
    made(store)
    with Index(store, readonly=True) as index:
        study = query.retrievable(index.conn, "STUDY", {"StudyInstanceUID": STUDY})
        assert [i.sop_uid for i in study] == [f"{STUDY}.{s}.{n}" for s in (1, 2) for n in (1, 2, 3)]
        assert {i.patient_id for i in study} == {"ID00000"}
        two = query.retrievable(
            index.conn,
            "SERIES",
            {"StudyInstanceUID": STUDY, "SeriesInstanceUID": f"{SERIES}\\{OTHER_STUDY}.2"},
        )
        assert len(two) == 3  # the other series is another study's: not in this one  # fmt: skip
        with pytest.raises(query.BadQuery, match="no wildcards"):  # never "every patient"
            query.retrievable(index.conn, "PATIENT", {"PatientID": "ID0000*"})
        with pytest.raises(query.BadQuery, match="StudyInstanceUID"):
            query.retrievable(index.conn, "STUDY", {"StudyInstanceUID": "", "PatientID": "ID00001"})


@pytest.mark.parametrize(
    "name", ["MR_small.dcm", "CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm",
             "ExplVR_BigEnd.dcm", "no_meta.dcm", "image_dfl.dcm"],
)  # fmt: skip
def test_the_data_set_starts_where_pydicom_says(name: str) -> None:
    path = Path(pydicom.data.get_testdata_file(name))  # type: ignore[arg-type]
    head = path.read_bytes()
    found = header.data_set_start(head)
    dataset = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in dataset.file_meta or head[128:132] != b"DICM":
        assert found is None
        return
    assert found is not None
    offset, syntax = found
    assert syntax == dataset.file_meta.TransferSyntaxUID
    assert offset == 132 + 12 + dataset.file_meta.FileMetaInformationGroupLength


def test_a_store_request_reads_back_as_sent() -> None:
    sent = commands.store_request(7, MRImageStorage, "1.2.3.4", move_originator="WS",
                                  move_originator_id=3)  # fmt: skip
    read = commands.read(sent)
    assert (read.field, read.message_id, read.sop_class, read.sop_instance) == (
        commands.C_STORE_RQ, 7, MRImageStorage, "1.2.3.4")  # fmt: skip
    assert (read.move_originator, read.has_data_set) == ("WS", True)


# --- serve sending to real peers ----------------------------------------------------------


def test_getscu_gets_a_study_as_stored_and_that_is_an_access(tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "got"
    made(store)
    out.mkdir()
    with serving(store) as serve:
        result = dcmtk("getscu", "-aet", "SLICER", "-aec", "DICOMFS", "-S", "-od", str(out),
                       "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}",
                       "127.0.0.1", str(serve.port))  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = stored_files(store)
    received = sorted(out.iterdir())
    assert len(received) == 6
    for path in received:
        same_instance(path, files[str(pydicom.dcmread(path).SOPInstanceUID)])
    records = in_index(store, "SELECT calling_aet, series_uid, instances, bytes, outcome, detail "
                       "FROM audit WHERE event = 'retrieved' ORDER BY series_uid")  # fmt: skip
    sizes = dict(in_index(store, "SELECT se.series_uid, sum(i.size) FROM instances i "
                          "JOIN series se ON se.id = i.series GROUP BY se.id"))  # fmt: skip
    assert records == [("SLICER", f"{STUDY}.{s}", 3, sizes[f"{STUDY}.{s}"], "ok",
                        "C-GET to the requester") for s in (1, 2)]  # fmt: skip
    accessed = in_index(store, "SELECT st.study_uid, count(*) FROM instances i JOIN series se "
                        "ON se.id = i.series JOIN studies st ON st.id = se.study "
                        "WHERE i.last_access IS NOT NULL GROUP BY st.id")  # fmt: skip
    assert accessed == [(STUDY, 6)]  # the other patient's study was not sent


@pytest.fixture
def storescp(tmp_path: Path) -> Any:
    """dcmtk's storescp, as a workstation that receives, on a port chosen now."""
    port, out = free_port(), tmp_path / "storescp"
    out.mkdir()
    process = subprocess.Popen([str(Path("/usr/bin/storescp")), "-aet", "WORKSTATION", "-od",
                                str(out), str(port)], stderr=subprocess.DEVNULL)  # fmt: skip
    while dcmtk("echoscu", "-aec", "WORKSTATION", "127.0.0.1", str(port)).returncode:
        assert process.poll() is None, "storescp did not start"
        time.sleep(0.05)
    try:
        yield port, out
    finally:
        terminate(process)


def test_movescu_sends_a_series_to_a_named_destination_and_no_other(
    tmp_path: Path, storescp: tuple[int, Path]
) -> None:
    store = tmp_path / "store"
    made(store)
    port, out = storescp
    with serving(store) as serve:
        move = ("-aec", "DICOMFS", "-S", "-k", "QueryRetrieveLevel=SERIES", "-k",
                f"StudyInstanceUID={STUDY}", "-k", f"SeriesInstanceUID={SERIES}", "127.0.0.1",
                str(serve.port))  # fmt: skip
        refused = dcmtk("movescu", "-v", "-aem", "WORKSTATION", *move)
        assert "MoveDestinationUnknown" in refused.stderr + refused.stdout
        assert "dicomfs remote add NAME WORKSTATION@HOST:PORT --move-destination" in (
            serve.log.read_text())  # fmt: skip
        added = dicomfs("remote", "add", "ws", f"WORKSTATION@127.0.0.1:{port}",
                        "--move-destination", "--store", str(store))  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert "a move destination" in added.stdout
        moved = dcmtk("movescu", "-v", "-aem", "WORKSTATION", *move)
        assert moved.returncode == 0, moved.stderr
        assert "Received Final Move Response (Success)" in moved.stderr + moved.stdout
    files = stored_files(store)
    received = sorted(out.iterdir())
    assert [pydicom.dcmread(p).SOPInstanceUID for p in received] == [
        f"{SERIES}.{n}" for n in (1, 2, 3)]  # fmt: skip
    for path in received:
        same_instance(path, files[str(pydicom.dcmread(path).SOPInstanceUID)])
    records = in_index(store, "SELECT outcome, instances, detail FROM audit "
                       "WHERE event = 'retrieved' ORDER BY id")  # fmt: skip
    assert records[0][0].startswith("refused: no move destination 'WORKSTATION'")
    assert records[1] == ("ok", 3, f"C-MOVE to WORKSTATION@127.0.0.1:{port}")


def orthanc_rest(orthanc: Orthanc, path: str, body: Any = None) -> Any:
    data = (
        body.encode()
        if isinstance(body, str)
        else None
        if body is None
        else json.dumps(body).encode()
    )
    request = urllib.request.Request(f"http://127.0.0.1:{orthanc.http_port}{path}", data=data)
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_orthanc_as_a_workstation_queries_and_retrieves_and_movescu_sends_to_it(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    made(store)
    with serving(store) as serve:
        orthanc = Orthanc(tmp_path / "orthanc", serve.port)
        try:
            added = dicomfs("remote", "add", "orthanc", orthanc.address, "--move-destination",
                            "--store", str(store))  # fmt: skip
            assert added.returncode == 0, added.stderr
            asked = orthanc_rest(
                orthanc,
                "/modalities/dicomfs/query",
                {"Level": "Study", "Query": {"PatientID": "ID00000"}},
            )
            answers = orthanc_rest(orthanc, f"/queries/{asked['ID']}/answers?expand")
            assert [a["0020,000d"]["Value"] for a in answers] == [STUDY]
            orthanc_rest(orthanc, f"/queries/{asked['ID']}/retrieve", "ORTHANC")
            assert len(orthanc_rest(orthanc, "/instances")) == 6
            moved = dcmtk("movescu", "-aec", "DICOMFS", "-aem", "ORTHANC", "-S", "-k",
                          "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={OTHER_STUDY}",
                          "127.0.0.1", str(serve.port))  # fmt: skip
            assert moved.returncode == 0, moved.stderr
            assert len(orthanc_rest(orthanc, "/instances")) == 12
        finally:
            orthanc.stop()


# --- pynetdicom for what dcmtk cannot ask -------------------------------------------------


def c_get(port: int, identifier: Dataset, *, syntaxes: list[str], cancel_after: int = 0,
          storage: str = MRImageStorage, apart: list[str] | None = None,
          ) -> tuple[list[Dataset], list[Dataset]]:  # fmt: skip
    """A C-GET by pynetdicom taking images of one storage SOP class in these transfer
    syntaxes (offered in one context, and those `apart` each in one of its own): the
    instances it got, and every response (pending ones, then the final)."""
    got: list[Dataset] = []

    def stored(event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        got.append(dataset)
        return 0x0000

    ae = AE(ae_title="REQUESTER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(storage, syntaxes)
    for syntax in apart or []:
        ae.add_requested_context(storage, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMFS",
                         ext_neg=[build_role(storage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, stored)])  # fmt: skip
    assert assoc.is_established
    responses = []
    try:
        for status, answer in assoc.send_c_get(
            identifier, StudyRootQueryRetrieveInformationModelGet
        ):
            responses.append(status)
            if status.Status == 0xFF00 and len(responses) == cancel_after:
                assoc.send_c_cancel(1, query_model=StudyRootQueryRetrieveInformationModelGet)
            if answer is not None:
                status.update(answer)
    finally:
        assoc.release()
    return got, responses


def study_identifier(uid: str = STUDY) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = uid
    return identifier


def test_a_cancel_stops_a_retrieval_between_two_instances(tmp_path: Path) -> None:
    store = tmp_path / "store"
    made(store, instances=20)
    with serving(store) as serve:
        got, responses = c_get(serve.port, study_identifier(), syntaxes=[ExplicitVRLittleEndian],
                               cancel_after=1)  # fmt: skip
    first, final = responses[0], responses[-1]
    assert (first.Status, first.NumberOfCompletedSuboperations) == (0xFF00, 1)
    assert final.Status == 0xFE00
    # The cancel went before the requester answered the second instance: no third.
    assert final.NumberOfCompletedSuboperations == 2
    assert final.NumberOfRemainingSuboperations == 38
    assert len(got) == 2


def test_a_file_gone_behind_the_index_is_a_failed_sub_operation_and_leaves_the_index(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    made(store)
    gone = f"{SERIES}.2"
    with serving(store) as serve:
        stored_files(store)[gone].unlink()  # after serve's start, which would see it
        got, responses = c_get(serve.port, study_identifier(), syntaxes=[ExplicitVRLittleEndian])
        log = serve.log.read_text()
    final = responses[-1]
    assert (final.Status, final.NumberOfCompletedSuboperations,
            final.NumberOfFailedSuboperations) == (0xB000, 5, 1)  # fmt: skip
    assert final.FailedSOPInstanceUIDList == gone
    assert len(got) == 5
    assert in_index(store, "SELECT 1 FROM instances WHERE sop_uid = ?", gone) == []
    assert "gone from the store behind the index, dropping its row" in log
    (outcome,) = in_index(store, "SELECT outcome FROM audit WHERE series_uid = ?", SERIES)[0]
    assert outcome.startswith("1 not sent: its file")
    assert "has gone from the store" in outcome


def image_identifier(uid: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.SOPInstanceUID = uid
    return identifier


def test_an_instance_goes_as_stored_or_uncompressed_to_a_requester_that_takes_only_that(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    (store / "incoming").mkdir(parents=True)
    files = {name: Path(pydicom.data.get_testdata_file(name))  # type: ignore[arg-type]
             for name in ("MR_small_RLE.dcm", "MR_small_bigendian.dcm",
                          "JPEG2000.dcm")}  # fmt: skip
    shutil.copy(files["MR_small_RLE.dcm"], store / "incoming" / "rle.dcm")
    shutil.copy(files["JPEG2000.dcm"], store / "incoming" / "j2k.dcm")
    bare = corpus.Spec(study_uid=f"{corpus.UID_ROOT}8", series_uid=f"{corpus.UID_ROOT}8.1",
                       sop_uid=f"{corpus.UID_ROOT}8.1.1", matrix=16)  # fmt: skip
    no_meta = corpus.write(store / "incoming" / "bare.dcm", bare, with_meta=False)
    big = pydicom.dcmread(files["MR_small_bigendian.dcm"])  # the same image: new UIDs
    big.SOPInstanceUID = big.file_meta.MediaStorageSOPInstanceUID = f"{corpus.UID_ROOT}9.1"
    big.SeriesInstanceUID = f"{corpus.UID_ROOT}9"
    big.save_as(store / "incoming" / "big.dcm")
    with Index(store) as index:
        reconcile(index, store)
    rle = pydicom.dcmread(files["MR_small_RLE.dcm"])
    j2k = pydicom.dcmread(files["JPEG2000.dcm"])
    with serving(store) as serve:
        port, rle_uid = serve.port, image_identifier(str(rle.SOPInstanceUID))
        (as_stored,), _ = c_get(port, rle_uid, syntaxes=[ImplicitVRLittleEndian],
                                apart=[RLELossless])  # fmt: skip
        # dcmtk's getscu offers compressed and uncompressed syntaxes in one context:
        # the uncompressed one is taken, which carries every instance.
        (one_context,), _ = c_get(port, rle_uid, syntaxes=[RLELossless, ExplicitVRLittleEndian])
        (converted,), _ = c_get(port, rle_uid, syntaxes=[ImplicitVRLittleEndian])
        (j2k_converted,), _ = c_get(port, image_identifier(str(j2k.SOPInstanceUID)),
                                    syntaxes=[ExplicitVRLittleEndian],
                                    storage=SecondaryCaptureImageStorage)  # fmt: skip
        (headerless,), _ = c_get(port, image_identifier(bare.sop_uid),
                                 syntaxes=[ExplicitVRLittleEndian])  # fmt: skip
        (big_as_stored,), _ = c_get(port, image_identifier(big.SOPInstanceUID),
                                    syntaxes=[ExplicitVRBigEndian])  # fmt: skip
        none, (big_refused,) = c_get(port, image_identifier(big.SOPInstanceUID),
                                     syntaxes=[ExplicitVRLittleEndian])  # fmt: skip
        no_class, (unoffered,) = c_get(port, rle_uid, syntaxes=[ExplicitVRLittleEndian],
                                       storage=CTImageStorage)  # fmt: skip
    assert as_stored.file_meta.TransferSyntaxUID == RLELossless
    assert as_stored.PixelData == rle.PixelData  # the stored bytes, not re-encoded
    assert one_context.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert converted.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    rle.decompress()
    for received in (one_context, converted):
        assert received.pixel_array.tobytes() == rle.pixel_array.tobytes()
    # JPEG 2000 too, decoded by pylibjpeg's plugin (installed for index.html's thumbnails).
    assert j2k_converted.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert j2k_converted.pixel_array.tolist() == j2k.pixel_array.tolist()
    assert headerless.PixelData == no_meta.PixelData
    assert big_as_stored.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert big_as_stored.pixel_array.tolist() == big.pixel_array.tolist()
    # Never converted to the other byte order: pydicom would not swap the pixels' bytes.
    assert (none, big_refused.Status) == ([], 0xA702)
    assert "big endian" in str(big_refused.ErrorComment)
    assert (no_class, unoffered.Status, unoffered.NumberOfFailedSuboperations) == ([], 0xA702, 1)


def test_getscu_takes_a_deflated_instance_of_odd_length_padded(tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "got"
    (store / "incoming").mkdir(parents=True)
    deflated = Path(pydicom.data.get_testdata_file("image_dfl.dcm"))  # type: ignore[arg-type]
    shutil.copy(deflated, store / "incoming")
    with Index(store) as index:
        reconcile(index, store)
    out.mkdir()
    uid = str(pydicom.dcmread(deflated).SOPInstanceUID)
    with serving(store) as serve:
        result = dcmtk("getscu", "-aec", "DICOMFS", "-S", "+xd", "-od", str(out), "-k",
                       "QueryRetrieveLevel=IMAGE", "-k", f"SOPInstanceUID={uid}", "127.0.0.1",
                       str(serve.port))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Odd Fragment Length" not in result.stderr + result.stdout
    (received,) = out.iterdir()
    assert pydicom.dcmread(received) == pydicom.dcmread(deflated)


def test_who_may_send_is_who_may_retrieve(tmp_path: Path) -> None:
    store = tmp_path / "store"
    made(store)
    keys = ("-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}")
    with serving(store, "--allow-aet", "WORKSTATION") as serve:
        port = str(serve.port)
        refused = dcmtk("getscu", "-aet", "STRANGER", "-aec", "DICOMFS", "-S", "-od",
                        str(tmp_path), "127.0.0.1", port, *keys)  # fmt: skip
        assert refused.returncode != 0
        assert "Association Rejected" in refused.stderr + refused.stdout
    assert not list(tmp_path.glob("MR.*"))
    assert in_index(store, "SELECT count(*) FROM audit WHERE event = 'retrieved'") == [(0,)]


def c_move(port: int, identifier: Dataset, destination: str) -> list[Dataset]:
    """A C-MOVE by pynetdicom: every response, the failed UIDs merged into the last."""
    ae = AE(ae_title="REQUESTER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMFS")
    assert assoc.is_established
    responses = []
    try:
        for status, answer in assoc.send_c_move(
            identifier, destination, StudyRootQueryRetrieveInformationModelMove
        ):
            if answer is not None:
                status.update(answer)
            responses.append(status)
    finally:
        assoc.release()
    return responses


def test_a_destination_that_refuses_some_instances_gets_the_rest_and_a_warning(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    made(store)
    refused = f"{SERIES}.2"
    stored: list[str] = []

    def store_but_one(event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid == refused:
            return 0xA700  # out of resources
        stored.append(uid)
        return 0x0000

    destination = AE(ae_title="PICKY")
    destination.add_supported_context(MRImageStorage, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    server = destination.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, store_but_one)])  # fmt: skip
    try:
        with serving(store) as serve:
            assert dicomfs("remote", "add", "picky", f"PICKY@127.0.0.1:{port}",
                           "--move-destination", "--store", str(store)).returncode == 0  # fmt: skip
            final = c_move(serve.port, study_identifier(), "PICKY")[-1]
            unreachable = dicomfs("remote", "add", "gone", f"GONE@127.0.0.1:{free_port()}",
                                  "--move-destination", "--store", str(store))  # fmt: skip
            assert unreachable.returncode == 0
            nowhere = c_move(serve.port, study_identifier(), "GONE")[-1]
            (unknown,) = c_move(serve.port, study_identifier(), "NOBODY")
            assert dicomfs("remote", "add", "self", f"DICOMFS@127.0.0.1:{serve.port}",
                           "--move-destination", "--store", str(store)).returncode == 0  # fmt: skip
            (itself,) = c_move(serve.port, study_identifier(), "DICOMFS")
    finally:
        server.shutdown()
    assert (final.Status, final.NumberOfCompletedSuboperations,
            final.NumberOfFailedSuboperations) == (0xB000, 5, 1)  # fmt: skip
    assert final.FailedSOPInstanceUIDList == refused
    assert sorted(stored) == sorted(f"{STUDY}.{s}.{n}" for s in (1, 2) for n in (1, 2, 3)
                                    if f"{STUDY}.{s}.{n}" != refused)  # fmt: skip
    assert (nowhere.Status, nowhere.NumberOfFailedSuboperations) == (0xA702, 6)
    assert "cannot connect to GONE@127.0.0.1" in str(nowhere.ErrorComment)
    assert unknown.Status == 0xA801  # move destination unknown
    assert (itself.Status, str(itself.ErrorComment)) == (
        0xA801,
        "a C-MOVE to this node itself: it has them",
    )
    outcomes = in_index(store, "SELECT series_uid, outcome FROM audit WHERE event = 'retrieved' "
                        "AND detail LIKE '%PICKY%' ORDER BY series_uid")  # fmt: skip
    assert outcomes == [(SERIES, "1 not sent: the destination answered 0xA700 (refused: "
                                 "out of resources)"), (f"{STUDY}.2", "ok")]  # fmt: skip


def test_a_destination_that_aborts_ends_the_move_at_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    made(store)
    stored: list[str] = []

    def abort_at_the_second(event: Any) -> int:
        if stored:
            event.assoc.abort()
            return 0xC000
        stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    destination = AE(ae_title="ABORTER")
    destination.add_supported_context(MRImageStorage, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    handlers = [(evt.EVT_C_STORE, abort_at_the_second)]
    server = destination.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        with serving(store) as serve:
            assert dicomfs("remote", "add", "aborter", f"ABORTER@127.0.0.1:{port}",
                           "--move-destination", "--store", str(store)).returncode == 0  # fmt: skip
            started = time.monotonic()
            final = c_move(serve.port, study_identifier(), "ABORTER")[-1]
            took = time.monotonic() - started
    finally:
        server.shutdown()
    assert (final.Status, final.NumberOfCompletedSuboperations,
            final.NumberOfFailedSuboperations) == (0xB000, 1, 5)  # fmt: skip
    # Not a release waiting out the peer timeout (30 s) on an association already gone.
    assert took < config.PEER_TIMEOUT / 2
