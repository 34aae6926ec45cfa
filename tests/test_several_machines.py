"""Two machines on one host: two `dicomfs serve`, each with its own name and mount
point, share one store directory and one index in PostgreSQL, as a lab's server and
a second receiver would."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicomfs.dicom import corpus
from dicomfs.store.index import INDEX_VARIABLE, Index

from . import peers
from .peers import Serve, dcmtk

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/storescu").exists(), reason="needs dcmtk (scripts/install --test)"
)

SHOWN_WITHIN = 2.0  # seconds: the promise to every mount, whichever machine received


@pytest.fixture
def shared(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every dicomfs the test starts uses this index (as the lab's configuration file
    would say on every machine)."""
    monkeypatch.setenv(INDEX_VARIABLE, postgres_url)
    return postgres_url


@pytest.fixture
def two(tmp_path: Path, shared: str) -> Iterator[tuple[Serve, Serve]]:
    store = tmp_path / "store"
    first = Serve(store, "--name", "first", mount=tmp_path / "on-first")
    try:
        second = Serve(store, "--name", "second", mount=tmp_path / "on-second")
    except BaseException:
        first.stop()
        raise
    try:
        yield first, second
    finally:
        second.stop()
        first.stop()


def send(server: Serve, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return dcmtk("storescu", "-aec", "DICOMFS", "127.0.0.1", str(server.port),
                 *map(str, files))  # fmt: skip


def files_shown(mount: Path) -> set[str]:
    return {path.name for path in (mount / "by-uid").glob("*/*/*.dcm")}


def wait_until(condition: object, deadline: float) -> bool:
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return bool(condition())  # type: ignore[operator]
        time.sleep(0.02)
    return True


def test_half_a_study_sent_to_each_shows_whole_in_both_mounts(
    two: tuple[Serve, Serve], tmp_path: Path
) -> None:
    first, second = two
    sent = tmp_path / "sent"
    corpus.write_regular(sent, patients=1, studies=1, series=2, instances=6)
    files = sorted(sent.rglob("*.dcm"))
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    senders = [
        threading.Thread(target=lambda s=server, f=half, n=name: results.update({n: send(s, f)}))
        for name, server, half in (("first", first, files[::2]), ("second", second, files[1::2]))
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    acknowledged = time.monotonic()
    assert all(result.returncode == 0 for result in results.values()), results
    for server in (first, second):
        assert server.mount is not None
        shown = lambda m=server.mount: len(files_shown(m)) == len(files)  # noqa: E731
        assert wait_until(shown, acknowledged + SHOWN_WITHIN), (
            f"{server.mount}: {len(files_shown(server.mount))} of {len(files)} files"
        )
    for path in (first.mount / "by-uid").glob("*/*/*.dcm"):  # type: ignore[operator]
        stored = pydicom.dcmread(path)
        assert stored == pydicom.dcmread(_source(files, stored.SOPInstanceUID))
    with Index(first.store, readonly=True) as index:
        assert index.counts()["instances"] == len(files)  # none lost, none twice


def _source(files: list[Path], sop_uid: str) -> Path:
    return next(path for path in files if pydicom.dcmread(path).SOPInstanceUID == sop_uid)


def test_what_expire_deletes_on_one_machine_goes_from_every_mount(
    two: tuple[Serve, Serve], tmp_path: Path
) -> None:
    first, second = two
    corpus.write_regular(tmp_path / "sent", patients=1, studies=1, series=1, instances=3)
    assert send(first, sorted((tmp_path / "sent").rglob("*.dcm"))).returncode == 0
    for server in (first, second):
        assert wait_until(lambda m=server.mount: len(files_shown(m)) == 3,  # type: ignore[misc]
                          time.monotonic() + 60)  # fmt: skip
    time.sleep(1.1)  # older than the shortest retention there is, one second
    expired = subprocess.run(
        [sys.executable, "-m", "dicomfs", "expire", "--store", str(second.store),
         "--retention", "1s", "--yes", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert expired.returncode == 0, expired.stderr
    assert len(json.loads(expired.stdout)) == 1, expired.stdout  # the one series
    gone = time.monotonic()
    for server in (first, second):
        assert wait_until(lambda m=server.mount: not files_shown(m), gone + SHOWN_WITHIN), (
            server.mount
        )
    assert not list(first.store.rglob("*.dcm"))


def test_a_receiver_killed_mid_transfer_loses_nothing_it_acknowledged_and_the_other_goes_on(
    two: tuple[Serve, Serve], tmp_path: Path
) -> None:
    first, second = two
    corpus.write_regular(tmp_path / "big", patients=1, studies=1, series=2, instances=150)
    corpus.write_regular(tmp_path / "other", patients=2, studies=1, series=1, instances=5)
    acknowledged = peers.killed_mid_transfer(first, tmp_path / "big", after=100)
    assert len(acknowledged) >= 100
    # The other machine's receiver goes on, and its spool was never touched.
    other = sorted((tmp_path / "other").rglob("*.dcm"))
    assert send(second, other).returncode == 0
    restarted = Serve(first.store, "--name", "first")  # recovers its own spool alone
    try:
        with Index(first.store, readonly=True) as index:
            for path in acknowledged:
                original = pydicom.dcmread(path)
                found = index.instance_by_sop(original.SOPInstanceUID)
                assert found is not None, path
                assert pydicom.dcmread(first.store / found[1]) == original
            others = [pydicom.dcmread(path).SOPInstanceUID for path in other]
            assert all(index.instance_by_sop(uid) is not None for uid in others)
        assert not restarted.spooled()
    finally:
        restarted.stop()


def test_one_serve_at_a_time_sweeps_and_another_takes_over_when_it_goes(
    tmp_path: Path, shared: str
) -> None:
    store = tmp_path / "store"
    every = ("--sweep-interval", "1s")
    first = Serve(store, "--name", "first", *every)
    second = Serve(store, "--name", "second", *every)
    try:
        taking_over = "this serve now expires and reconciles the shared index"
        assert "another serve sharing the index expires" in second.log.read_text()
        first.kill()
        assert wait_until(lambda: taking_over in second.log.read_text(), time.monotonic() + 120)
    finally:
        second.stop()
        first.stop()
