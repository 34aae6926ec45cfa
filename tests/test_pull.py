"""`dicomfs pull` against Orthanc as the scanner or PACS."""

from __future__ import annotations

import json
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
import pytest
from pydicom.uid import generate_uid

from dicomfs.dicom import corpus
from dicomfs.net import puller, remotes

from .peers import Orthanc, free_port, serving

pytestmark = pytest.mark.skipif(
    shutil.which("Orthanc") is None or not Path("/usr/bin/storescu").exists(),
    reason="needs orthanc and dcmtk (scripts/install --test)",
)

STUDY = "1.2.826.0.1.3680043.8.498.5.0.0"


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    orthanc = Orthanc(tmp_path / "orthanc", receiver_port=free_port())
    try:
        yield orthanc
    finally:
        orthanc.stop()


def exam(root: Path, series: int = 2, instances: int = 10, matrix: int = 4) -> list[Path]:
    corpus.write_regular(root, patients=1, studies=1, series=series, instances=instances, seed=5,
                         matrix=matrix)  # fmt: skip
    return sorted(root.rglob("*.dcm"))


def pull(store: Path, pacs: Orthanc, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomfs", "pull", "--store", str(store), "--from", pacs.address,
         "--create", "--port", str(pacs.receiver_port), "--bind", "127.0.0.1", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def stored_sops(store: Path) -> list[str]:
    conn = sqlite3.connect(store / ".dicomfs" / "index.sqlite")
    try:
        return [row[0] for row in conn.execute("SELECT sop_uid FROM instances")]
    finally:
        conn.close()


def sop_of(path: Path) -> str:
    return path.name.removeprefix("MR.").removesuffix(".dcm")


@pytest.mark.parametrize("method", ["move", "get"])
def test_pull_a_study_then_only_what_is_missing(tmp_path: Path, pacs: Orthanc, method: str) -> None:
    files = exam(tmp_path / "exam")
    pacs.upload(*files)
    store = tmp_path / "store"
    first = pull(store, pacs, "--study", STUDY, "--method", method)
    assert first.returncode == 0, first.stderr
    assert sorted(stored_sops(store)) == sorted(map(sop_of, files)), first.stdout + first.stderr
    assert "pulled 20 instances" in first.stdout
    again = pull(store, pacs, "--study", STUDY, "--method", method)
    assert again.returncode == 0, again.stderr
    assert "pulled 0 instances" in again.stdout
    assert len(list(store.rglob("*.dcm"))) == 20  # each instance once
    audit = subprocess.run(
        [sys.executable, "-m", "dicomfs", "audit", "--store", str(store), "--event", "pulled",
         "--json"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    records = json.loads(audit)
    assert [r["instances"] for r in records] == [20, 0]
    assert all(r["user"] and r["calling_aet"] == "ORTHANC" for r in records)


def test_follow_fetches_an_exam_as_it_is_acquired_and_stops_when_idle(
    tmp_path: Path, pacs: Orthanc
) -> None:
    files = exam(tmp_path / "exam", series=2, instances=6)
    pacs.upload(*files[:3])
    store = tmp_path / "store"
    follower = subprocess.Popen(
        [sys.executable, "-m", "dicomfs", "pull", "--store", str(store), "--from", pacs.address,
         "--create", "--port", str(pacs.receiver_port), "--bind", "127.0.0.1", "--study", STUDY,
         "--follow", "--interval", "1", "--until-idle", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for path in files[3:]:  # the scan goes on
            time.sleep(0.4)
            pacs.upload(path)
        _, err = follower.communicate(timeout=120)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert sorted(stored_sops(store)) == sorted(map(sop_of, files))
    assert len(list(store.rglob("*.dcm"))) == len(files)


def test_a_peer_that_is_not_there_or_refuses_gets_a_clear_message(tmp_path: Path) -> None:
    store = tmp_path / "store"
    nobody = subprocess.run(
        [sys.executable, "-m", "dicomfs", "pull", "--create", "--store", str(store), "--from",
         f"NOBODY@127.0.0.1:{free_port()}", "--study", STUDY, "--method", "get"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert nobody.returncode == 1
    assert "could not be reached" in nobody.stderr
    strict = Orthanc(tmp_path / "strict", receiver_port=free_port(), check_called_aet=True)
    try:
        refused = subprocess.run(
            [sys.executable, "-m", "dicomfs", "pull", "--create", "--store", str(store), "--from",
             f"WRONGAET@127.0.0.1:{strict.port}", "--study", STUDY, "--method", "get"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        strict.stop()
    assert refused.returncode == 1
    assert "refused the association" in refused.stderr


def test_a_peer_killed_mid_transfer_keeps_what_arrived_and_a_rerun_fetches_the_rest(
    tmp_path: Path, pacs: Orthanc
) -> None:
    files = exam(tmp_path / "exam", series=1, instances=300, matrix=256)  # 128 KB each
    pacs.upload(*files)
    store = tmp_path / "store"
    puller = subprocess.Popen(
        [sys.executable, "-m", "dicomfs", "pull", "--store", str(store), "--from", pacs.address,
         "--create", "--port", str(pacs.receiver_port), "--bind", "127.0.0.1", "--study", STUDY,
         "--method", "get"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(list(store.rglob("*.dcm"))) < 30:
            assert time.monotonic() < deadline, "nothing arrived"
            time.sleep(0.05)
        pacs.kill()
        _, err = puller.communicate(timeout=120)
    finally:
        puller.kill()
    assert puller.returncode == 1
    assert "went away" in err or "could not be reached" in err or "could not be fetched" in err
    arrived = len(stored_sops(store))
    assert 30 <= arrived < 300
    pacs.start()
    pacs.upload(*files)  # a PACS killed -9 may lose what it had not yet committed itself
    rerun = pull(store, pacs, "--study", STUDY, "--method", "get")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{arrived} were here already" in rerun.stdout
    assert sorted(stored_sops(store)) == sorted(map(sop_of, files))


def test_two_pulls_of_one_study_at_once_store_each_instance_once(
    tmp_path: Path, pacs: Orthanc
) -> None:
    files = exam(tmp_path / "exam", series=2, instances=50)
    pacs.upload(*files)
    store = tmp_path / "store"
    commands = [
        [sys.executable, "-m", "dicomfs", "pull", "--store", str(store), "--from", pacs.address,
         "--create", "--study", STUDY, "--method", "get"]
        for _ in range(2)
    ]  # fmt: skip
    pulls = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]  # fmt: skip
    for process in pulls:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert sorted(stored_sops(store)) == sorted(map(sop_of, files))
    assert len(list(store.rglob("*.dcm"))) == len(files)


COMPRESSED_SAMPLES = (  # pydicom's real files, one per common compressed transfer syntax
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "JPEG2000.dcm",  # JPEG 2000
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "SC_rgb_rle.dcm",  # RLE
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
)


def compressed_study(folder: Path) -> list[Path]:
    """pydicom's compressed samples as the instances of one new study, pixel data as is."""
    folder.mkdir()
    study = generate_uid()
    written = []
    for number, name in enumerate(COMPRESSED_SAMPLES):
        ds = pydicom.dcmread(pydicom.data.get_testdata_file(name))
        ds.PatientID, ds.PatientName = "COMPRESSED", "COMPRESSED^PULL"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        written.append(folder / f"{number}.dcm")
        ds.save_as(written[-1])
    return written


@pytest.mark.parametrize("method", ["get", "move"])
def test_compressed_instances_are_fetched_and_stored_as_sent(
    tmp_path: Path, pacs: Orthanc, method: str
) -> None:
    files = compressed_study(tmp_path / "sent")
    pacs.upload_as_is(*files)
    store = tmp_path / "store"
    study = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    result = pull(store, pacs, "--study", study, "--method", method)
    assert result.returncode == 0, result.stderr
    conn = sqlite3.connect(store / ".dicomfs" / "index.sqlite")
    paths = dict(conn.execute("SELECT sop_uid, path FROM instances").fetchall())
    conn.close()
    for sent in map(pydicom.dcmread, files):
        stored = pydicom.dcmread(store / paths[sent.SOPInstanceUID])
        assert stored.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert stored.PixelData == sent.PixelData


def test_a_move_the_peer_cannot_deliver_names_the_likely_cause(tmp_path: Path) -> None:
    # A PACS that answers queries from anyone but knows no destination at all.
    settings = {"DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True, "DicomModalities": {}}
    pacs = Orthanc(tmp_path / "orthanc", receiver_port=free_port(), settings=settings)
    try:
        pacs.upload(*exam(tmp_path / "exam", series=1, instances=2))
        result = pull(tmp_path / "store", pacs, "--study", STUDY)
    finally:
        pacs.stop()
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert "status 0xC000 (Unable to Process)" in error
    assert f"does not know DICOMFS at {socket.getfqdn()}:{pacs.receiver_port}" in error
    assert "add it on the peer" in error
    assert "--method get" in error


def test_move_receives_through_this_stores_serve_never_through_another_stores(
    tmp_path: Path,
) -> None:
    port = free_port()  # where the PACS sends what we ask for
    pacs = Orthanc(tmp_path / "orthanc", receiver_port=port)
    store, other = tmp_path / "store", tmp_path / "other"
    try:
        files = exam(tmp_path / "exam", series=1, instances=5)
        pacs.upload(*files)
        with serving(other, port=port):  # a serve of another store holds the port
            refused = pull(store, pacs, "--study", STUDY)
        assert refused.returncode == 1
        error = refused.stderr.strip().splitlines()[-1]
        assert f"cannot receive on 127.0.0.1:{port}" in error
        assert "in use by another program or by a dicomfs serve of another store" in error
        assert "--port" in error
        assert "--method get" in error
        assert stored_sops(other) == []  # nothing went into the other store
        assert stored_sops(store) == []
        with serving(store, port=port):  # this store's own serve receives
            pulled = pull(store, pacs, "--study", STUDY)
    finally:
        pacs.stop()
    assert pulled.returncode == 0, pulled.stderr
    assert "pulled 5 instances" in pulled.stdout
    assert sorted(stored_sops(store)) == sorted(map(sop_of, files))


class _SlowToNotice(threading.Event):
    """An Event that its waiter leaves late when it was set: as if pynetdicom's
    association thread were preempted right after its pause checkpoint let it through,
    which on a busy machine it is."""

    def wait(self, timeout: float | None = None) -> bool:
        if self.is_set():
            time.sleep(random.uniform(0, 0.01))
            return True
        return super().wait(timeout)


def test_no_query_response_is_lost_to_pynetdicoms_own_thread(tmp_path: Path, pacs: Orthanc) -> None:
    pacs.upload(*exam(tmp_path / "exam", series=1, instances=10))
    remote = remotes.parse("pacs", pacs.address)
    find_model = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve, FIND
    with puller.associate(remote, "DICOMFS", [find_model]) as assoc:
        checkpoint = _SlowToNotice()
        checkpoint.set()
        assoc._reactor_checkpoint = checkpoint
        take = assoc.dimse.get_msg

        def take_slowly(block: bool = False) -> Any:  # responses wait in the queue a while
            if threading.current_thread() is not assoc:
                time.sleep(0.002)
            return take(block)

        assoc.dimse.get_msg = take_slowly
        for _ in range(200):
            found = puller._find(assoc, remote, "IMAGE", StudyInstanceUID=STUDY,
                                 SeriesInstanceUID=f"{STUDY}.1", SOPInstanceUID="")  # fmt: skip
            assert len(found) == 10


@pytest.mark.parametrize(
    ("method", "status", "cause"),
    [
        ("get", 0xC000, "could not convert it); try --method move"),
        ("move", 0xA801, "add it on the peer (AE title DICOMFS, this host, port 11112)"),
        ("move", 0xC000, "or use --method get"),
        ("get", 0x0122, "does not allow C-GET to us; try --method move"),
        ("move", 0xA702, "short of resources"),
    ],
)
def test_a_refused_retrieve_names_the_status_and_the_likely_cause(
    method: str, status: int, cause: str
) -> None:
    response = pydicom.Dataset()
    response.Status = status
    response.ErrorComment = "Cannot transcode"
    remote = remotes.Remote("pacs", "PACS", "127.0.0.1", 4242)
    destination = puller.Destination("DICOMFS", 11112) if method == "move" else None
    with pytest.raises(puller.PullError) as refused:
        puller._check_retrieve_status(remote, response, method, destination)
    message = str(refused.value)
    assert f"pacs refused the transfer: status 0x{status:04X}" in message
    assert 'saying "Cannot transcode"' in message
    assert cause in message
