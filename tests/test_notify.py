"""sd_notify: what systemd hears from `dicomfs serve` (the unit is Type=notify)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicomfs import notify

from .peers import free_port, terminate


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """systemd's end: a datagram socket in a directory of its own, named in $NOTIFY_SOCKET."""
    address = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        monkeypatch.setenv("NOTIFY_SOCKET", str(address))
        yield sock


def heard(sock: socket.socket, wanted: str, process: Any = None, timeout: float = 30) -> list[str]:
    """The fields received until one datagram holds `wanted`; fails at the deadline, or
    at once if `process` has ended without saying it."""
    fields: list[str] = []
    deadline = time.monotonic() + timeout
    while wanted not in fields:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"{wanted} not heard within {timeout} s; heard {fields}")
        if process is not None and process.poll() is not None:
            pytest.fail(f"serve ended ({process.returncode}) before {wanted}; heard {fields}")
        sock.settimeout(min(left, 0.2))  # short, to see an early end of the process
        with contextlib.suppress(TimeoutError):
            fields += sock.recv(4096).decode().splitlines()
    return fields


def test_ready_stopping_and_status_reach_the_socket(listener: socket.socket) -> None:
    notify.status("recovering:\nreconciling")
    notify.ready()
    notify.stopping()
    listener.settimeout(5)
    said = [listener.recv(4096).decode() for _ in range(3)]
    assert said == ["STATUS=recovering: reconciling", "READY=1", "STOPPING=1"]


def test_an_abstract_address_starts_with_at(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"dicomfs-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notify.ready()
        sock.settimeout(5)
        assert sock.recv(4096) == b"READY=1"


def test_nothing_is_sent_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notify.ready()  # no socket to send to: nothing happens, nothing is raised
    notify.stopping()


def test_a_socket_nobody_listens_on_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    with caplog.at_level(logging.DEBUG, logger="dicomfs.notify"):
        notify.ready()
    assert "cannot tell systemd 'READY=1'" in caplog.text


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
@pytest.mark.parametrize("mounts", [True, False], ids=["mount", "no-mount"])
def test_serve_is_ready_once_it_receives_and_mounts(
    tmp_path: Path, listener: socket.socket, mounts: bool
) -> None:
    store, mountpoint, port = tmp_path / "store", tmp_path / "dicom", free_port()
    mountpoint.mkdir()
    where = ["--mount", str(mountpoint)] if mounts else ["--no-mount"]
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:  # the environment, $NOTIFY_SOCKET with it, is inherited
        process = subprocess.Popen(
            [sys.executable, "-m", "dicomfs", "serve", "--create", "--store", str(store),
             *where, "--bind", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        said = heard(listener, "READY=1", process)
        # Ready means ready: the mount is up and the port answers the moment it is said.
        assert os.path.ismount(mountpoint) == mounts, log.read_text()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert f"STATUS=receiving on 127.0.0.1:{port} as DICOMFS" in " ".join(said)
        assert said.index("READY=1") > next(
            i for i, field in enumerate(said) if field.startswith("STATUS=recovering")
        )

        process.send_signal(signal.SIGTERM)
        heard(listener, "STOPPING=1")
        assert process.wait(timeout=30) == 0, log.read_text()
        assert not os.path.ismount(mountpoint)
    finally:
        terminate(process)
        if mounts:  # a no-op unless the test failed: no mount, live or stale, is left behind
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
