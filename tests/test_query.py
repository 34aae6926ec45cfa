"""C-FIND: the index's matching, then serve answering real query tools (dcmtk's findscu,
pynetdicom), and answering what Orthanc answers for the same corpus."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.dimse_messages import C_CANCEL_RQ, C_FIND_RQ
from pynetdicom.dimse_primitives import C_CANCEL, C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from dicomfs.dicom import corpus
from dicomfs.net import reactor
from dicomfs.store.index import Index, query
from dicomfs.store.index.engine import SQLITE
from dicomfs.store.indexer import reconcile

from .peers import Orthanc, dcmtk, serving

pytestmark = pytest.mark.usefixtures("index_engine")

STUDY_ROOT = "-S"
PATIENT_ROOT = "-P"


def made(store: Path) -> None:
    corpus.write_regular(store / "incoming", patients=4, studies=2, series=2, instances=2)
    for name, patient_id, date in (("Müller^Jürgen", "MU1", "20050315"),
                                   ("MÜLLER^ANNA", "MU2", "20050316")):  # fmt: skip
        uid = f"{corpus.UID_ROOT}8.{patient_id[-1]}"
        corpus.write(store / "named" / f"{patient_id}.dcm", corpus.Spec(
            patient_name=name, patient_id=patient_id, study_uid=uid, series_uid=f"{uid}.1",
            sop_uid=f"{uid}.1.1", study_date=date, accession=f"ACC-{patient_id}",
            modality="CT", charset="ISO_IR 100"))  # fmt: skip
    with Index(store) as index:
        reconcile(index, store)


@pytest.fixture
def conn(store: Path) -> Iterator[sqlite3.Connection]:
    made(store)
    with Index(store, readonly=True) as index:
        yield index.conn


def studies(conn: sqlite3.Connection, **keys: str) -> set[str]:
    rows = query.find(conn, "STUDY", {"StudyInstanceUID": "", **keys})
    return {row["StudyInstanceUID"] for row in rows}


def test_each_kind_of_matching_the_standard_names(conn: sqlite3.Connection) -> None:
    everything = studies(conn)
    assert len(everything) == 10  # universal matching: no value, no condition
    assert studies(conn, PatientID="ID00001") == {
        f"{corpus.UID_ROOT}1.1.0", f"{corpus.UID_ROOT}1.1.1"}  # fmt: skip
    assert studies(conn, PatientID="ID0000?") == everything - studies(conn, PatientID="MU*")
    assert len(studies(conn, AccessionNumber="ACC-*")) == 2
    assert studies(conn, StudyDate="20050315") == {f"{corpus.UID_ROOT}8.1"}
    assert studies(conn, StudyDate="20050315-20050316") == studies(conn, PatientID="MU*")
    assert studies(conn, StudyDate="20050316-") | studies(conn, StudyDate="-20050315") == (
        everything
    )
    wanted = f"{corpus.UID_ROOT}1.0.0\\{corpus.UID_ROOT}8.2"
    assert studies(conn, StudyInstanceUID=wanted) == set(wanted.split("\\"))
    with_ct = query.find(conn, "SERIES", {"StudyInstanceUID": "", "Modality": "CT"})
    assert studies(conn, ModalitiesInStudy="CT") == {row["StudyInstanceUID"] for row in with_ct}
    assert studies(conn, ModalitiesInStudy="CT\\MR") == everything  # any of a list
    assert studies(conn, StudyDescription="nothing like it") == set()


def test_a_patient_name_matches_whatever_its_case_and_accents(conn: sqlite3.Connection) -> None:
    both = studies(conn, PatientID="MU*")
    assert studies(conn, PatientName="muller*") == both
    assert studies(conn, PatientName="MÜLLER*") == both
    assert studies(conn, PatientName="Muller^Jurgen") == {f"{corpus.UID_ROOT}8.1"}
    assert studies(conn, PatientName="*^ANNA") == {f"{corpus.UID_ROOT}8.2"}
    assert studies(conn, PatientName="Muller") == set()  # single value: the whole name


def test_each_level_answers_its_own_keys_and_counts(conn: sqlite3.Connection) -> None:
    (patient,) = query.find(conn, "PATIENT", {
        "PatientID": "ID00002", "PatientName": "", "NumberOfPatientRelatedStudies": "",
        "NumberOfPatientRelatedSeries": "", "NumberOfPatientRelatedInstances": "",
        "StudyDate": ""})  # fmt: skip
    assert patient == {
        "PatientID": "ID00002",
        "PatientName": "PATIENT00002^TEST",
        "NumberOfPatientRelatedStudies": "2",
        "NumberOfPatientRelatedSeries": "4",
        "NumberOfPatientRelatedInstances": "8",
    }  # fmt: skip  (no StudyDate here)
    study = f"{corpus.UID_ROOT}8.1"
    (found,) = query.find(conn, "STUDY", {"StudyInstanceUID": study, "ModalitiesInStudy": "",
        "NumberOfStudyRelatedSeries": "", "NumberOfStudyRelatedInstances": "",
        "PatientName": ""})  # fmt: skip
    assert found["ModalitiesInStudy"] == "CT"
    assert (found["NumberOfStudyRelatedSeries"], found["NumberOfStudyRelatedInstances"]) == (
        "1",
        "1",
    )
    asked = {"StudyInstanceUID": f"{corpus.UID_ROOT}1.0.0", "SeriesInstanceUID": "",
             "SeriesNumber": "", "NumberOfSeriesRelatedInstances": ""}  # fmt: skip
    series = list(query.find(conn, "SERIES", asked))
    assert sorted(s["SeriesNumber"] for s in series) == ["1", "2"]
    assert {s["NumberOfSeriesRelatedInstances"] for s in series} == {"2"}
    asked = {"SeriesInstanceUID": series[0]["SeriesInstanceUID"], "SOPInstanceUID": "",
             "InstanceNumber": "1"}  # fmt: skip
    images = list(query.find(conn, "IMAGE", asked))
    assert len(images) == 1
    with pytest.raises(query.BadQuery):
        list(query.find(conn, "FRAME", {}))


@pytest.mark.sqlite_only("SQLite's query plans")
def test_every_query_of_a_patient_or_study_seeks_through_an_index(conn: sqlite3.Connection) -> None:
    """What a workstation asks most (a patient ID, a study UID, a date range, a study's
    series) is found through an index, never by reading every row."""
    for level, keys in (
        ("PATIENT", {"PatientID": "ID00001"}),
        ("STUDY", {"StudyInstanceUID": "1.2.3"}),
        ("STUDY", {"StudyDate": "20040101-20041231"}),
        ("STUDY", {"AccessionNumber": "ACC0000100"}),
        ("SERIES", {"StudyInstanceUID": "1.2.3"}),
        ("IMAGE", {"SeriesInstanceUID": "1.2.3.4"}),
    ):
        sql, arguments = query.sql(level, keys, SQLITE)
        plan = " ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", arguments))
        first = plan.split("SCAN")[0] if "SCAN" in plan else plan
        assert "SEARCH" in first, (level, keys, plan)
        assert "USING" in first, (level, keys, plan)


# --- serve answering real query tools ----------------------------------------------------


def findscu(port: int, aet: str, root: str, out: Path, *keys: str) -> list[Dataset]:
    """The matches dcmtk's findscu gets (each response it writes to out)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    args = ["-aec", aet, root, "-X", "-od", str(out), "127.0.0.1", str(port)]
    for key in keys:
        args += ["-k", key]
    result = dcmtk("findscu", *args)
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


QUERIES = (  # (model, keys): what a workstation's browser asks
    (STUDY_ROOT, ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID")),
    (STUDY_ROOT, ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName=PATIENT0000*")),
    (STUDY_ROOT, ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "StudyDate=20040101-20040630")),
    (STUDY_ROOT, ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID=ID0000?")),
    (STUDY_ROOT, ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "AccessionNumber=ACC-MU1")),
    (PATIENT_ROOT, ("QueryRetrieveLevel=PATIENT", "PatientID", "PatientName")),
    (PATIENT_ROOT, ("QueryRetrieveLevel=STUDY", "PatientID=ID00001", "StudyInstanceUID")),
    (STUDY_ROOT, ("QueryRetrieveLevel=SERIES", f"StudyInstanceUID={corpus.UID_ROOT}1.2.1",
                  "SeriesInstanceUID", "Modality")),
    (STUDY_ROOT, ("QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={corpus.UID_ROOT}1.2.1",
                  f"SeriesInstanceUID={corpus.UID_ROOT}1.2.1.2", "SOPInstanceUID")),
)  # fmt: skip


def unique_keys(matches: list[Dataset]) -> set[tuple[str, ...]]:
    keys = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    return {tuple(str(m.get(k, "")) for k in keys if k in m) for m in matches}


def test_findscu_gets_from_dicomfs_what_it_gets_from_orthanc(tmp_path: Path) -> None:
    store = tmp_path / "store"
    made(store)
    with serving(store) as serve:
        orthanc = Orthanc(tmp_path / "orthanc", serve.port, settings={"DicomAlwaysAllowFind": True})
        try:
            orthanc.upload(store / "incoming", store / "named")
            for model, keys in QUERIES:
                ours = findscu(serve.port, "DICOMFS", model, tmp_path / "ours", *keys)
                theirs = findscu(orthanc.port, "ORTHANC", model, tmp_path / "theirs", *keys)
                assert unique_keys(ours) == unique_keys(theirs), keys
                assert ours, keys
        finally:
            orthanc.stop()


def test_findscu_finds_by_accents_and_gets_every_key_it_asks_for(tmp_path: Path) -> None:
    store = tmp_path / "store"
    made(store)
    with serving(store) as serve:
        (match,) = findscu(
            serve.port, "DICOMFS", STUDY_ROOT, tmp_path / "out", "QueryRetrieveLevel=STUDY",
            "PatientName=muller^jurgen", "StudyInstanceUID", "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "StudyDescription",
            "AccessionNumber", "ReferringPhysicianName", "RetrieveAETitle",
        )  # fmt: skip
    assert match.SpecificCharacterSet == "ISO_IR 192"
    assert str(match.PatientName) == "Müller^Jürgen"
    assert (match.ModalitiesInStudy, match.AccessionNumber) == ("CT", "ACC-MU1")
    assert (match.NumberOfStudyRelatedSeries, match.NumberOfStudyRelatedInstances) == (1, 1)
    assert match.ReferringPhysicianName == ""  # asked, not indexed: returned empty
    assert match.RetrieveAETitle == "DICOMFS"
    with Index(store, readonly=True) as index:
        log = index.conn.execute(
            "SELECT calling_aet, detail FROM audit WHERE event = 'queried'"
        ).fetchall()
    assert log == [("FINDSCU", "1 query, 1 match")]


def pdus(message: Any, primitive: Any, context_id: int, max_pdu: int) -> bytes:
    """A DIMSE message as pynetdicom encodes it: the P-DATA-TF PDUs' bytes."""
    message.primitive_to_message(primitive)
    encoded = b""
    for data in message.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(data)
        encoded += pdu.encode()
    return encoded


def test_a_cancel_stops_the_matches_and_says_so(tmp_path: Path) -> None:
    store = tmp_path / "store"
    corpus.write_regular(store / "incoming", patients=60, studies=1, series=1, instances=1)
    with Index(store) as index:
        reconcile(index, store)
    with serving(store) as serve:
        ae = AE(ae_title="CANCELLER")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", serve.port, ae_title="DICOMFS")
        assert assoc.is_established
        try:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.StudyInstanceUID = ""
            find, cancel = C_FIND(), C_CANCEL()
            find.MessageID, find.Priority = 1, 2
            find.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
            (context,) = assoc.accepted_contexts
            syntax = context.transfer_syntax[0]
            find.Identifier = BytesIO(encode(identifier, syntax.is_implicit_VR,
                                             syntax.is_little_endian))  # fmt: skip
            cancel.MessageIDBeingRespondedTo = 1
            context_id = context.context_id
            max_pdu = assoc.acceptor.maximum_length
            # The query and its cancel in one write: the cancel is there before the
            # first match can be sent, however busy the machine is.
            sent = pdus(C_FIND_RQ(), find, context_id, max_pdu)
            sent += pdus(C_CANCEL_RQ(), cancel, context_id, max_pdu)
            statuses: list[int] = []
            with reactor.parked(assoc):
                try:
                    assoc.dul.socket.socket.sendall(sent)
                    while not statuses or statuses[-1] == 0xFF00:
                        _, response = assoc.dimse.get_msg(block=True)
                        statuses.append(int(response.Status))
                finally:
                    assoc._reactor_checkpoint.set()
            assert statuses[-1] == 0xFE00  # cancelled
            assert len(statuses) < 61  # not every one of the 60 matches
            # The association goes on: another query is answered whole.
            identifier.StudyInstanceUID = f"{corpus.UID_ROOT}1.0.0"
            answered = [s.Status for s, _ in assoc.send_c_find(
                identifier, StudyRootQueryRetrieveInformationModelFind)]  # fmt: skip
            assert answered == [0xFF00, 0x0000]
        finally:
            assoc.release()


def test_a_query_of_another_level_or_model_is_refused_with_its_status(tmp_path: Path) -> None:
    store = tmp_path / "store"
    made(store)
    with serving(store) as serve:
        ae = AE(ae_title="ODD")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", serve.port, ae_title="DICOMFS")
        try:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "FRAME"
            (status, _), *_ = assoc.send_c_find(
                identifier, StudyRootQueryRetrieveInformationModelFind
            )
            assert status.Status == 0xA900
            assert "FRAME" in str(status.ErrorComment)
        finally:
            assoc.release()


def test_who_may_send_is_who_may_ask(tmp_path: Path) -> None:
    store = tmp_path / "store"
    made(store)
    keys = ("-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID")
    with serving(store, "--allow-aet", "WORKSTATION") as serve:
        port = str(serve.port)
        refused = dcmtk("findscu", "-aet", "STRANGER", "-aec", "DICOMFS", "-S", "127.0.0.1",
                        port, *keys)  # fmt: skip
        assert refused.returncode != 0
        assert "Association Rejected" in refused.stderr + refused.stdout
        allowed = dcmtk("findscu", "-aet", "WORKSTATION", "-aec", "DICOMFS", "-S", "127.0.0.1",
                        port, *keys)  # fmt: skip
        assert allowed.returncode == 0, allowed.stderr
