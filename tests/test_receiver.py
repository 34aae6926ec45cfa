"""`dicomfs serve` against real peers: dcmtk's echoscu and storescu, pynetdicom clients."""

from __future__ import annotations

import hashlib
import json
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.sop_class import MRImageStorage, Verification  # type: ignore[attr-defined]

from dicomfs.dicom import corpus
from dicomfs.net import ingest
from dicomfs.net.receiver import Receiver
from dicomfs.store import running
from dicomfs.store.index import Index, audit
from dicomfs.store.writer import IndexWriter

from . import peers
from .peers import Serve, dcmtk, free_port, self_signed, serving

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/storescu").exists(), reason="needs dcmtk (scripts/install --test)"
)


def rows(store: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(store / ".dicomfs" / "index.sqlite")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def stored_dataset(store: Path, sop_uid: str) -> pydicom.Dataset:
    ((path,),) = rows(store, "SELECT path FROM instances WHERE sop_uid = ?", sop_uid)
    return pydicom.dcmread(store / str(path))


def client(user: str | None = None, aet: str = "PYCLIENT") -> tuple[AE, list[object]]:
    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    ae.add_requested_context(MRImageStorage)
    ext: list[object] = []
    if user:
        identity = UserIdentityNegotiation()
        identity.user_identity_type = 1
        identity.primary_field = user.encode()
        ext.append(identity)
    return ae, ext


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Serve]:
    with serving(tmp_path / "store") as running:
        yield running


def test_echoscu_is_answered(server: Serve) -> None:
    result = dcmtk("echoscu", "-aec", "DICOMFS", "127.0.0.1", str(server.port))
    assert result.returncode == 0, result.stderr


def test_storescu_of_a_corpus_stores_every_instance_with_its_sender(
    server: Serve, tmp_path: Path
) -> None:
    sent = tmp_path / "sent"
    corpus.write_regular(sent, patients=2, studies=2, series=2, instances=5)
    expect = corpus.write_awkward(sent / "odd")
    result = dcmtk("storescu", "-aet", "BAY3T", "-aec", "DICOMFS", "+sd", "+r", "-nh",
                   "127.0.0.1", str(server.port), str(sent))  # fmt: skip
    indexable = {
        ds.SOPInstanceUID: ds
        for ds in (_read(p) for p in sent.rglob("*") if p.is_file())
        if ds is not None and "SOPInstanceUID" in ds and "StudyInstanceUID" in ds
    }
    got = rows(server.store, "SELECT sop_uid, sender_aet, sender_address, called_aet "
                             "FROM instances")  # fmt: skip
    assert {row[0] for row in got} == set(indexable), result.stdout + result.stderr
    assert {row[1:] for row in got} == {("BAY3T", "127.0.0.1", "DICOMFS")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # comparing validates the awkward values
        for sop_uid, original in indexable.items():
            stored = stored_dataset(server.store, sop_uid)
            assert stored == original  # the dataset arrives exactly as sent
    assert expect  # the awkward corpus was part of it


def _read(path: Path) -> pydicom.Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the awkward corpus breaks DICOM's length limits
        try:
            return pydicom.dcmread(path, force=True)
        except Exception:
            return None


def test_several_senders_at_once(server: Serve, tmp_path: Path) -> None:
    senders = []
    for number in range(4):
        folder = tmp_path / f"scanner{number}"
        corpus.write_regular(folder, patients=1, studies=1, series=2, instances=25,
                             seed=number + 10)  # fmt: skip
        senders.append(subprocess.Popen(
            ["/usr/bin/storescu", "-aet", f"SCANNER{number}", "-aec", "DICOMFS", "+sd", "+r",
             "127.0.0.1", str(server.port), str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))  # fmt: skip
    for sender in senders:
        output, _ = sender.communicate(timeout=120)
        assert sender.returncode == 0, output
    counts = rows(server.store, "SELECT sender_aet, count(*) FROM instances GROUP BY 1")
    assert sorted(counts) == [(f"SCANNER{n}", 50) for n in range(4)]


def test_the_same_instance_sent_again_replaces_it(server: Serve, tmp_path: Path) -> None:
    spec = corpus.Spec(sop_uid="1.2.826.0.1.3680043.8.498.77", series_description="first")
    corpus.write(tmp_path / "a.dcm", spec)
    corpus.write(tmp_path / "b.dcm", corpus.Spec(**{**spec.__dict__, "series_description":
                                                   "second"}))  # fmt: skip
    for name in ("a.dcm", "b.dcm"):
        result = dcmtk("storescu", "-aec", "DICOMFS", "127.0.0.1", str(server.port),
                       str(tmp_path / name))  # fmt: skip
        assert result.returncode == 0, result.stderr
    assert rows(server.store, "SELECT count(*) FROM instances") == [(1,)]
    stored = stored_dataset(server.store, spec.sop_uid)
    assert stored.SeriesDescription == "second"


def test_a_bad_instance_fails_alone_and_the_association_goes_on(server: Serve) -> None:
    ae, _ = client()
    assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
    assert assoc.is_established
    no_uid = corpus.dataset(corpus.Spec())
    del no_uid.StudyInstanceUID
    status = assoc.send_c_store(no_uid)
    assert status.Status == 0xC210
    assert "no StudyInstanceUID" in status.ErrorComment  # the sender's log says why
    good = corpus.dataset(corpus.Spec())
    assert assoc.send_c_store(good).Status == 0x0000
    assoc.release()
    assert rows(server.store, "SELECT sop_uid FROM instances") == [(good.SOPInstanceUID,)]
    assert "no StudyInstanceUID" in server.log.read_text()


def test_a_malformed_pdu_ends_only_its_own_connection(server: Serve) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as junk:
        junk.sendall(b"garbage" * 1000)  # a stream that is no DICOM at all
        with socket.create_connection(("127.0.0.1", server.port)) as broken:
            # An A-ASSOCIATE-RQ whose AE titles cannot be decoded.
            broken.sendall(b"\x01\x00\x00\x00\x00\x10" + b"\xff" * 16)
            broken.settimeout(10)
            assert broken.recv(1)[:1] == b"\x07"  # A-ABORT
            assert _closed_by_peer(broken)
        result = dcmtk("echoscu", "-aec", "DICOMFS", "127.0.0.1", str(server.port))
        assert result.returncode == 0, result.stderr


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        while sock.recv(4096):  # an A-ABORT or A-ASSOCIATE-RJ may come first
            pass
    except ConnectionError:
        pass
    return True


def test_the_dicom_username_is_recorded(server: Serve) -> None:
    ae, ext = client(user="alice")
    assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS", ext_neg=ext)
    assert assoc.is_established
    ds = corpus.dataset(corpus.Spec(patient_id="HIPAA-1"))
    assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    assert rows(server.store, "SELECT sender_user, sender_aet FROM instances") == [
        ("alice", "PYCLIENT")
    ]
    audit = wait_for_audit(server.store, "--patient-id", "HIPAA-1")
    assert [(r["event"], r["user"], r["instances"]) for r in audit] == [("received", "alice", 1)]


def wait_for_audit(store: Path, *args: str) -> list[dict[str, object]]:
    """The audit record is written when the association closes: give it a moment."""
    deadline = time.monotonic() + 10
    while True:
        result = subprocess.run(
            [sys.executable, "-m", "dicomfs", "audit", "--store", str(store), "--json", *args],
            capture_output=True, text=True,
        )  # fmt: skip
        records: list[dict[str, object]] = json.loads(result.stdout or "[]")
        if records or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def rejection(assoc: Any) -> tuple[int, int, int]:
    """The A-ASSOCIATE-RJ a refused association heard: (result, source, reason)."""
    assert assoc.is_rejected
    answer = assoc.acceptor.primitive
    return answer.result, answer.result_source, answer.diagnostic


def test_senders_outside_the_policy_are_refused_and_audited(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with serving(store, "--allow-aet", "BAY3T", "--require-user") as server:
        ae, ext = client(user="bob", aet="INTRUDER")
        assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS", ext_neg=ext)
        # Permanent, by the service user: calling AE title not recognised.
        assert rejection(assoc) == (0x01, 0x01, 0x03)
        ae, _ = client(aet="BAY3T")  # the right AE title, but no username
        assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
        assert rejection(assoc) == (0x01, 0x01, 0x01)  # permanent, no reason given
        ae, ext = client(user="carol", aet="BAY3T")
        assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS", ext_neg=ext)
        assert assoc.is_established
        assoc.release()
        refused = wait_for_audit(store, "--event", "rejected")
    assert [(r["calling_aet"], r["user"]) for r in refused] == [("INTRUDER", "bob"),
                                                              ("BAY3T", None)]  # fmt: skip
    assert "not allowed" in str(refused[0]["outcome"])
    assert "user identity" in str(refused[1]["outcome"])


def test_past_max_associations_a_sender_is_refused_for_now(tmp_path: Path) -> None:
    with serving(tmp_path / "store", "--max-associations", "1") as server:
        ae, _ = client()
        first = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
        assert first.is_established
        try:
            second = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
            # Transient, by the service provider: local limit exceeded; it may try again.
            assert rejection(second) == (0x02, 0x03, 0x02)
        finally:
            first.release()
        deadline = time.monotonic() + 30  # once the first has closed, a retry is let in
        again = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
        while not again.is_established:
            assert time.monotonic() < deadline, "still refused after the first association ended"
            time.sleep(0.1)
            again = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
        again.release()


def test_a_write_error_is_a_failure_status_for_that_instance_alone(tmp_path: Path) -> None:
    def small_files() -> None:  # as if the disk filled up: no file may grow past 4 MB
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))

    store = tmp_path / "store"
    server = Serve(store, preexec=small_files)
    try:
        ae, _ = client()
        assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
        big = corpus.dataset(corpus.Spec(matrix=2048))  # 8 MB
        assert assoc.send_c_store(big).Status == 0xA700
        small = corpus.dataset(corpus.Spec())
        assert assoc.send_c_store(small).Status == 0x0000
        assoc.release()
    finally:
        server.stop()
    assert rows(store, "SELECT sop_uid FROM instances") == [(small.SOPInstanceUID,)]
    assert not list((store / ".dicomfs" / "tmp").iterdir())  # nothing half-written left


def test_every_acknowledged_instance_survives_kill_9(tmp_path: Path) -> None:
    store, sent = tmp_path / "store", tmp_path / "sent"
    corpus.write_regular(sent, patients=1, studies=1, series=3, instances=200)
    acknowledged = peers.killed_mid_transfer(Serve(store), sent, after=150)
    assert len(acknowledged) >= 150
    with serving(store):  # restarting recovers by itself
        pass
    for path in acknowledged:
        original = pydicom.dcmread(path)
        assert stored_dataset(store, original.SOPInstanceUID) == original


@pytest.mark.parametrize("step", ingest.STEPS)
def test_a_crash_at_any_durable_step_shows_no_half_file_and_loses_nothing_acknowledged(
    step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve dies (SIGKILL, by itself) at one step of storing an instance: before it
    is fsynced, before its rename, before its directory's fsync, before its row's
    commit, or before Success goes out. What it leaves and what the restart makes of
    it."""
    store, sent = tmp_path / "store", tmp_path / "sent"
    corpus.write_regular(sent, patients=1, studies=1, series=1, instances=2)
    first, second = (pydicom.dcmread(path) for path in sorted(sent.rglob("*.dcm")))
    sources = {ds.SOPInstanceUID: path for ds, path in
               zip((first, second), sorted(sent.rglob("*.dcm")), strict=True)}  # fmt: skip

    def send(sop: str, port: int) -> subprocess.CompletedProcess[str]:
        return dcmtk("storescu", "-aec", "DICOMFS", "127.0.0.1", str(port), str(sources[sop]))

    with serving(store) as server:
        assert send(first.SOPInstanceUID, server.port).returncode == 0  # acknowledged
    monkeypatch.setenv("DICOMFS_TEST_CRASH_AT", step)
    crashing = Serve(store)
    try:
        assert send(second.SOPInstanceUID, crashing.port).returncode != 0  # no Success
        assert crashing.process.wait(timeout=60) == -signal.SIGKILL
    finally:
        crashing.stop()
    monkeypatch.delenv("DICOMFS_TEST_CRASH_AT")

    def placed() -> dict[str, pydicom.Dataset]:
        """Every file under a final name in the store, read whole."""
        found = {}
        for path in store.rglob("*.dcm"):
            if ".dicomfs" not in path.relative_to(store).parts:
                ds = pydicom.dcmread(path)
                found[ds.SOPInstanceUID] = ds
        return found

    reached_its_place = step in ("renamed", "placed", "committed")
    in_place = placed()  # as the crash left them: never part of an instance
    assert set(in_place) == {first.SOPInstanceUID} | (
        {second.SOPInstanceUID} if reached_its_place else set()
    )
    for sop, ds in in_place.items():
        assert ds == pydicom.dcmread(sources[sop])
    with serving(store):  # the restart recovers by itself
        pass
    assert not any((store / ".dicomfs" / "tmp").iterdir())
    assert {sop for (sop,) in rows(store, "SELECT sop_uid FROM instances")} == set(in_place)
    check = subprocess.run([sys.executable, "-m", "dicomfs", "check", "--store", str(store)],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    with serving(store) as server:  # the sender tries again, as it will
        assert send(second.SOPInstanceUID, server.port).returncode == 0
    assert stored_dataset(store, second.SOPInstanceUID) == second
    assert stored_dataset(store, first.SOPInstanceUID) == first


def test_a_stop_mid_transfer_aborts_at_once_and_audits_every_acknowledged_instance(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    server = Serve(store)
    senders, logs, readers = [], [], []
    for number in (1, 2):  # many more than either can send before the stop takes effect
        corpus.write_regular(tmp_path / f"sent{number}", patients=1, studies=1, series=4,
                             instances=500, seed=number)  # fmt: skip
    for number in (1, 2):  # two associations open at the stop
        sent = tmp_path / f"sent{number}"
        sender = subprocess.Popen(
            [str(Path("/usr/bin/storescu")), "-v", "-aet", f"SCANNER{number}", "-aec", "DICOMFS",
             "+sd", "+r", "127.0.0.1", str(server.port), str(sent)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        log: list[str] = []
        readers.append(threading.Thread(target=log.extend, args=(sender.stdout,)))
        readers[-1].start()
        senders.append(sender)
        logs.append(log)
    try:
        deadline = time.monotonic() + 60
        while min(_successes(log) for log in logs) < 50:
            assert time.monotonic() < deadline, "storescu sent nothing"
            time.sleep(0.01)
        stopped = time.monotonic()
        server.process.send_signal(signal.SIGTERM)  # in the middle of both transfers
        server.process.wait(timeout=30)
        took = time.monotonic() - stopped
        for sender, reader in zip(senders, readers, strict=True):
            sender.wait(timeout=60)
            reader.join()
    finally:
        server.stop()
        for sender in senders:
            sender.kill()
            sender.wait()
            if sender.stdout is not None:
                sender.stdout.close()
    assert took < 10, f"serve took {took:.1f} s to stop"
    assert all(sender.returncode != 0 for sender in senders)  # aborted: they send again later
    acknowledged = [pydicom.dcmread(path).SOPInstanceUID for log in logs
                    for path in peers.acknowledged(log)]  # fmt: skip
    assert len(acknowledged) >= 100
    assert max(_successes(log) for log in logs) < 2000  # stopped before either was done
    stored = {str(row[0]) for row in rows(store, "SELECT sop_uid FROM instances")}
    assert set(acknowledged) <= stored
    counted = rows(store, "SELECT calling_aet, sum(instances) FROM audit "
                          "WHERE event = 'received' GROUP BY calling_aet")  # fmt: skip
    # Every instance stored, answered or not, is in the audit trail, with its sender.
    assert counted == rows(store, "SELECT sender_aet, count(*) FROM instances "
                                  "GROUP BY sender_aet")  # fmt: skip
    assert not any("0x0110" in line or "Failure" in line for log in logs for line in log)
    served = server.log.read_text()
    assert "Traceback" not in served, served
    assert "ERROR" not in served, served
    assert "stopped" in served.strip().splitlines()[-1]
    assert not list((store / ".dicomfs" / "tmp").iterdir())  # nothing half-received left


def _successes(log: list[str]) -> int:
    return sum("Received Store Response (Success)" in line for line in list(log))


def test_one_serve_per_store_and_where_it_listens_is_known(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with serving(store) as first:
        second = subprocess.run(
            [sys.executable, "-m", "dicomfs", "serve", "--store", str(store), "--no-mount",
             "--bind", "127.0.0.1", "--port", str(free_port())],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        (error,) = second.stderr.strip().splitlines()
        assert f"another dicomfs serve (pid {first.process.pid}) serves {store}" in error
        assert dcmtk("echoscu", "-aec", "DICOMFS", "127.0.0.1", str(first.port)).returncode == 0
        here = running.Listening(first.process.pid, first.port, "DICOMFS")
        assert running.listening(store) == here
    assert running.listening(store) is None  # stopped: no longer listening
    assert not (store / ".dicomfs" / "serve.json").exists()
    crashed = Serve(store)
    crashed.kill()  # leaves its serve.json, but never its lock
    assert (store / ".dicomfs" / "serve.json").exists()
    assert running.listening(store) is None
    with serving(store) as again:
        assert running.listening(store) == running.Listening(again.process.pid, again.port,
                                                             "DICOMFS")  # fmt: skip


def test_new_instances_show_in_the_mount_within_two_seconds(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    corpus.write(tmp_path / "one.dcm", corpus.Spec(patient_name="FRESH^ONE", patient_id="F1"))
    with serving(store, mount=mnt) as server:
        assert (mnt / "by-patient").is_dir()
        assert not (mnt / "by-patient" / "FRESH_ONE_F1").exists()
        result = dcmtk("storescu", "-aec", "DICOMFS", "127.0.0.1", str(server.port),
                       str(tmp_path / "one.dcm"))  # fmt: skip
        assert result.returncode == 0, result.stderr
        acknowledged = time.monotonic()
        while not (mnt / "by-patient" / "FRESH_ONE_F1").exists():
            assert time.monotonic() - acknowledged < 2, "not visible within 2 s"
            time.sleep(0.05)
        (stored,) = (mnt / "by-patient" / "FRESH_ONE_F1").glob("*/*/*.dcm")
        assert pydicom.dcmread(stored) == pydicom.dcmread(tmp_path / "one.dcm")


PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.mark.parametrize(
    ("name", "propose"),
    [("JPEG2000.dcm", "-xw"), ("SC_rgb_rle.dcm", "-xr"), ("MR_small_jpeg_ls_lossless.dcm", "-xt")],
)
def test_a_compressed_instance_is_accepted_and_stored_as_the_sender_holds_it(
    server: Serve, name: str, propose: str
) -> None:
    """Real files no one here wrote, in syntaxes storescu cannot decompress: the
    receiver must accept each syntax proposed, and store the bytes as they came."""
    sent = pydicom.dcmread(PYDICOM_FILES / name)
    result = dcmtk("storescu", propose, "-aec", "DICOMFS", "127.0.0.1", str(server.port),
                   str(PYDICOM_FILES / name))  # fmt: skip
    assert result.returncode == 0, result.stderr
    stored = stored_dataset(server.store, sent.SOPInstanceUID)
    assert stored.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
    assert stored.PixelData == sent.PixelData


def test_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with serving(tmp_path / "store", "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        context.check_hostname = False
        ae, _ = client()
        assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS",
                             tls_args=(context, None))  # fmt: skip
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        plain = dcmtk("echoscu", "-aec", "DICOMFS", "127.0.0.1", str(server.port))
        assert plain.returncode != 0  # no plain-text DICOM on a TLS port


def test_a_large_instance_is_received_without_holding_it_in_memory(
    server: Serve, tmp_path: Path
) -> None:
    big = tmp_path / "big.dcm"
    corpus.write(big, corpus.Spec(patient_id="BIG", matrix=8192))  # 128 MB of pixels
    result = dcmtk("storescu", "-aec", "DICOMFS", "127.0.0.1", str(server.port), str(big),
                   nodelay=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    ((path,),) = rows(server.store, "SELECT path FROM instances WHERE sop_uid IN "
                                    "(SELECT sop_uid FROM instances)")  # fmt: skip
    stored = server.store / str(path)
    assert _dataset_md5(stored) == _dataset_md5(big)  # the file meta is the receiver's own
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    peak_kb = int(status.split("VmHWM:")[1].split()[0])
    assert peak_kb < 100 * 1024, f"serve peaked at {peak_kb // 1024} MB"


def _dataset_md5(path: Path) -> str:
    """md5 of the dataset after the File Meta Information group."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        head = handle.read(144)  # preamble, DICM, (0002,0000) UL group length
        assert head[128:132] == b"DICM"
        handle.seek(144 + int.from_bytes(head[140:144], "little"))
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_an_instance_resent_under_corrected_uids_leaves_one_copy_but_never_ours_alone(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    mine = store / "mine" / "by" / "hand.dcm"  # a file put into the store by someone
    corpus.write(mine, corpus.Spec(sop_uid="1.2.826.0.1.3680043.8.498.90", study_uid="1.2.3"))
    with serving(store) as server:  # serve indexes it at start
        for sop, study in (("1.2.826.0.1.3680043.8.498.91", "1.2.4"),
                           ("1.2.826.0.1.3680043.8.498.91", "1.2.5"),  # corrected upstream
                           ("1.2.826.0.1.3680043.8.498.90", "1.2.6")):  # fmt: skip
            corpus.write(tmp_path / "send.dcm", corpus.Spec(sop_uid=sop, study_uid=study))
            result = dcmtk("storescu", "-aec", "DICOMFS", "127.0.0.1", str(server.port),
                           str(tmp_path / "send.dcm"))  # fmt: skip
            assert result.returncode == 0, result.stderr
    paths = dict(rows(store, "SELECT sop_uid, path FROM instances"))
    assert str(paths["1.2.826.0.1.3680043.8.498.91"]).startswith("1.2.5/")
    assert not (store / "1.2.4").exists()  # our superseded copy went
    assert str(paths["1.2.826.0.1.3680043.8.498.90"]).startswith("1.2.6/")
    assert mine.exists()  # someone else's file is never deleted


def test_audit_records_the_index_cannot_take_are_held_back_and_written_once_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The instances were acknowledged; the index's server went away before their
    association ended and its audit records were written."""
    store = tmp_path / "store"
    store.mkdir()
    writer = IndexWriter(store)
    receiver = Receiver(store, writer)
    try:
        reachable = writer.run

        def out_of_reach(work: object) -> None:
            raise OSError("the index's server is out of reach")

        monkeypatch.setattr(writer, "run", out_of_reach)
        receiver._audit([audit.Record("received", calling_aet="SCANX", instances=3)])
        assert [record.calling_aet for record in receiver.held_back()] == ["SCANX"]
        assert "held back" in caplog.text
        monkeypatch.setattr(writer, "run", reachable)
        receiver.retry_audit()  # as serve does every few seconds
        assert receiver.held_back() == []
        with Index(store, readonly=True) as index:
            assert [record["calling_aet"] for record in audit.search(index.conn)] == ["SCANX"]
    finally:
        receiver.stop()
        writer.close()
