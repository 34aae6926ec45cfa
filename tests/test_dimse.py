"""The DICOM messages module at its own level, without a network: the C-STORE handler stores a
spooled instance and answers Success, or refuses it with the status the standard names for why
(a full disk, a dataset it cannot read, an error of ours); the contexts an association asks
for fit in one; each socket gets quick ACKs, or at least TCP_NODELAY."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dicomfs.dicom import corpus
from dicomfs.net import dimse, ingest, spool
from dicomfs.net.tcp import QuickAckSocket
from dicomfs.store import files
from dicomfs.store.index import Index, Sender
from dicomfs.store.writer import IndexWriter

SENDER = Sender(aet="BAY3T", address="10.1.2.3", called_aet="DICOMFS", user="alice")
SPEC = corpus.Spec(study_uid="1.2.840.7", series_uid="1.2.840.7.1", sop_uid="1.2.840.7.1.1")


@pytest.fixture
def writer(store: Path) -> Iterator[IndexWriter]:
    writer = IndexWriter(store)
    yield writer
    writer.close()


@pytest.fixture
def recorded() -> list[tuple[Sender, dimse.Outcome]]:
    return []


@pytest.fixture
def handler(
    store: Path, writer: IndexWriter, recorded: list[tuple[Sender, dimse.Outcome]]
) -> dimse.StoreHandler:
    return dimse.StoreHandler(
        store, writer, lambda event: SENDER, lambda event, sender, o: recorded.append((sender, o))
    )


def spooled(store: Path, data: bytes) -> spool.SpoolFile:
    """A dataset as pynetdicom leaves it in the spool before it calls the handler."""
    received = spool.SpoolFile(files.tmp_dir(store))
    received.write(data)
    return received


def c_store(received: spool.SpoolFile | Path) -> Any:
    """The parts of pynetdicom's EVT_C_STORE event the handler reads."""
    path = received if isinstance(received, Path) else Path(received.name)
    return SimpleNamespace(dataset_path=path, request=SimpleNamespace(AffectedSOPInstanceUID="1.9"))


def instance_bytes(tmp_path: Path) -> bytes:
    source = tmp_path / "source.dcm"
    corpus.write(source, SPEC)
    return source.read_bytes()


def indexed(store: Path) -> str | None:
    """The path the index has for SPEC's instance, if any."""
    with Index(store, readonly=True) as index:
        found = index.instance_by_sop(SPEC.sop_uid)
        return found[1] if found else None


def test_an_instance_is_stored_and_answered_with_success(
    store: Path, tmp_path: Path, handler: dimse.StoreHandler, recorded: list[Any]
) -> None:
    received = spooled(store, instance_bytes(tmp_path))
    try:
        status = handler(c_store(received))
    finally:
        received.close()
    assert status == dimse.SUCCESS == 0x0000
    path = files.canonical_path(SPEC.study_uid, SPEC.series_uid, SPEC.sop_uid)
    assert indexed(store) == path
    assert (store / path).read_bytes() == instance_bytes(tmp_path)
    ((sender, outcome),) = recorded
    assert sender == SENDER
    assert outcome.stored is not None
    assert (outcome.stored.path, outcome.stored.meta.study_uid) == (path, SPEC.study_uid)


def test_on_a_full_disk_it_is_refused_as_out_of_resources(
    store: Path, tmp_path: Path, handler: dimse.StoreHandler, recorded: list[Any]
) -> None:
    received = spooled(store, instance_bytes(tmp_path))
    received.error = OSError(28, "No space left on device")  # as its write met it
    try:
        status = handler(c_store(received))
    finally:
        received.close()
    assert status == dimse.OUT_OF_RESOURCES == 0xA700
    assert indexed(store) is None
    ((_, outcome),) = recorded
    assert (outcome.stored, outcome.reason) == (None, "the store's disk is full")


def test_what_is_not_dicom_is_refused_as_cannot_understand(
    store: Path, handler: dimse.StoreHandler, recorded: list[Any]
) -> None:
    received = spooled(store, b"\0" * 128 + b"DICM" + b"not a dataset at all")
    try:
        status = handler(c_store(received))
    finally:
        received.close()
    assert status == dimse.CANNOT_UNDERSTAND == 0xC210
    assert indexed(store) is None
    assert list(files.walk(store)) == []
    ((_, outcome),) = recorded
    assert outcome.stored is None
    assert outcome.reason


def test_a_dataset_that_was_not_spooled_is_refused_as_out_of_resources(
    store: Path, handler: dimse.StoreHandler
) -> None:
    elsewhere = files.tmp_dir(store) / "rx-elsewhere.dcm"
    corpus.write(elsewhere, SPEC)
    assert handler(c_store(elsewhere)) == dimse.OUT_OF_RESOURCES
    assert indexed(store) is None


def test_an_error_of_ours_is_a_processing_failure_and_never_raises(
    store: Path,
    handler: dimse.StoreHandler,
    recorded: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> ingest.Stored:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ingest, "store_spooled", broken)
    assert handler(c_store(files.tmp_dir(store) / "rx-x.dcm")) == dimse.PROCESSING_FAILURE == 0x0110
    ((_, outcome),) = recorded
    assert outcome.reason == "could not store it: RuntimeError: a bug"


def test_the_handler_spools_into_the_stores_own_tmp(store: Path, writer: IndexWriter) -> None:
    dimse.StoreHandler(store, writer, lambda event: SENDER)
    from pynetdicom import dimse_messages

    made = dimse_messages.NamedTemporaryFile()  # what pynetdicom opens for a dataset
    try:
        assert Path(made.name).parent == files.tmp_dir(store)
    finally:
        made.close()
        Path(made.name).unlink()


# --- statuses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "service", "meaning"),
    [
        (0xA702, "move", "Refused: Out of resources, unable to perform sub-operations"),
        (0xA7FF, "", "refused: out of resources"),
        (0xA900, "get", "Identifier does not match SOP class"),
        (0xC123, "", "unable to process"),
        (0x1234, "", "a status the standard does not define"),
    ],
)
def test_a_status_says_what_the_standard_means_by_it(
    status: int, service: str, meaning: str
) -> None:
    assert dimse.meaning(status, service) == meaning


def test_a_response_without_a_status_means_the_peer_went_away() -> None:
    from pydicom.dataset import Dataset

    answered = Dataset()
    answered.Status = dimse.PENDING
    assert dimse.status_of(answered) == 0xFF00
    assert dimse.status_of(Dataset()) is None
    assert dimse.status_of(None) is None


@pytest.mark.parametrize(
    ("offered", "user"),
    [(b"alice", "alice"), (b" bob ", "bob"), (b"", None), (None, None), (b"   ", None),
     (b"ev\x00il", None), (b"x\x1b[2J", None), (b"a\nb", None), ("müller".encode(), "müller")],
)  # fmt: skip
def test_a_username_with_control_characters_or_blank_is_none(
    offered: bytes | None, user: str | None
) -> None:
    assert dimse.username(offered) == user


# --- AEs and contexts ---------------------------------------------------------------------


def test_the_receiver_takes_every_storage_class_in_every_syntax_and_echo() -> None:
    contexts = dimse.receiving_contexts()
    offered = {context.abstract_syntax for context in contexts}
    assert {"1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.1.4"} <= offered  # echo, MR
    assert len(offered) > 100
    mr = next(c for c in contexts if c.abstract_syntax == "1.2.840.10008.5.1.4.1.1.4")
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.4.90"} <= set(mr.transfer_syntax)


def test_a_c_get_asks_for_contexts_that_fit_one_association() -> None:
    classes = dimse.COMMON_CLASSES[: dimse.CLASSES_PER_ASSOCIATION]
    contexts, roles = dimse.get_contexts(classes)
    assert len(contexts) <= 128
    assert contexts[0] == dimse.GET_MODEL
    assert [role.sop_class_uid for role in roles] == classes
    assert all(role.scp_role for role in roles)
    ae = dimse.requesting_ae("DICOMFS", contexts)
    assert len(ae.requested_contexts) == len(contexts)


# --- quick ACKs -----------------------------------------------------------------------------


def association_on(sock: object) -> Any:
    return SimpleNamespace(dul=SimpleNamespace(socket=SimpleNamespace(socket=sock)))


def test_a_plain_socket_is_wrapped_for_quick_acks_once() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        peer = socket.create_connection(server.getsockname())
        ours, _ = server.accept()
        with ours, peer:
            assoc = association_on(ours)
            dimse.quick_ack(assoc)
            wrapped = assoc.dul.socket.socket
            assert isinstance(wrapped, QuickAckSocket)
            dimse.quick_ack(assoc)
            assert assoc.dul.socket.socket is wrapped


def test_a_tls_socket_stays_itself_with_tcp_nodelay() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        peer = socket.create_connection(server.getsockname())
        ours, _ = server.accept()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls = context.wrap_socket(ours, server_side=True, do_handshake_on_connect=False)
        with tls, peer:
            assoc = association_on(tls)
            dimse.quick_ack(assoc)
            assert assoc.dul.socket.socket is tls
            assert tls.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
