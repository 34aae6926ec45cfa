"""Real DICOM peers for tests: `dicomfs serve` in a subprocess, dcmtk's tools, free ports."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom.dimse_primitives import C_STORE

from dicomfs.net import reactor
from dicomfs.store import sharing

DCMTK = Path("/usr/bin")  # pynetdicom installs tools of the same names into the venv


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and its key (PEM), made by openssl in directory."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def terminate(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM, and SIGKILL if that is not enough: a test never leaves a process behind."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def dcmtk(
    tool: str, *args: str, timeout: float = 120, nodelay: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TCP_NODELAY": "1"} if nodelay else None
    return subprocess.run(
        [str(DCMTK / tool), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@contextlib.contextmanager
def _named(name: str | None) -> Iterator[None]:
    """sharing.py's names as a serve of this --name sees them."""
    before = os.environ.get(sharing.NAME_VARIABLE)
    if name is not None:
        os.environ[sharing.NAME_VARIABLE] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(sharing.NAME_VARIABLE, None)
        else:
            os.environ[sharing.NAME_VARIABLE] = before


class Serve:
    """`dicomfs serve` on a loopback port; stopped (and unmounted) by stop()."""

    def __init__(
        self,
        store: Path,
        *extra: str,
        mount: Path | None = None,
        preexec: Callable[[], None] | None = None,
        port: int | None = None,
        config: Path | None = None,
    ) -> None:
        """config: serve from this configuration file alone (store, mount and port are
        then what it says, and only tell this object where to look)."""
        self.store, self.port, self.mount = store, port or free_port(), mount
        self.name = next((extra[i + 1] for i, arg in enumerate(extra[:-1]) if arg == "--name"),
                         None)  # fmt: skip
        where = ["--mount", str(mount)] if mount else ["--no-mount"]
        if mount is not None:
            mount.mkdir(exist_ok=True)
        self.log = store.parent / f"serve-{self.port}.log"
        args = [
            "serve", "--create", "--store", str(store), *where, "--bind", "127.0.0.1",
            "--port", str(self.port), *extra,
        ] if config is None else ["--config", str(config), "serve", *extra]  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dicomfs", *args],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"), preexec_fn=preexec,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"serve did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        if self.mount is not None and not os.path.ismount(self.mount):
            return False
        if not self._announced():
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
            return True
        return False

    def _announced(self) -> bool:
        """Its serve.json says where it listens (not one a crashed serve left)."""
        with contextlib.suppress(OSError, ValueError):
            record = json.loads((self.store / ".dicomfs" / self._own("serve.json")).read_text())
            return bool(record["pid"] == self.process.pid)
        return False

    def _own(self, file_name: str) -> str:
        """Its own file of that name in STORE/.dicomfs, as sharing.py names it."""
        with _named(self.name):
            return sharing.own(self.store, file_name)

    def spooled(self) -> list[Path]:
        """The spool files that hold data: half-received instances. (An association
        makes its next spool file ahead, empty, once it has answered an instance.)"""
        with _named(self.name):
            spool = self.store / ".dicomfs" / sharing.own_spool(self.store, "tmp")
        return [path for path in spool.iterdir() if path.stat().st_size]

    def kill(self) -> None:
        """kill -9: no chance to clean anything up."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._unmount()

    def stop(self) -> int:
        terminate(self.process)
        self._unmount()
        return self.process.returncode

    def _unmount(self) -> None:
        if self.mount is not None:
            subprocess.run(["fusermount3", "-u", "-z", str(self.mount)], capture_output=True)


@contextlib.contextmanager
def serving(
    store: Path, *extra: str, mount: Path | None = None, port: int | None = None
) -> Iterator[Serve]:
    server = Serve(store, *extra, mount=mount, port=port)
    try:
        yield server
    finally:
        server.stop()


class Orthanc:
    """Orthanc from the Debian package, on loopback ports chosen now, knowing our
    receiver as AE title DICOMFS at `receiver_port`."""

    def __init__(
        self,
        root: Path,
        receiver_port: int,
        *,
        check_called_aet: bool = False,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.root, self.port, self.http_port = root, free_port(), free_port()
        self.receiver_port = receiver_port
        self.check_called_aet = check_called_aet
        self.settings = settings or {}  # Orthanc configuration keys, over ours
        (root / "storage").mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        config = {
            "Name": "test", "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"), "DicomAet": "ORTHANC",
            "DicomPort": self.port, "HttpPort": self.http_port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": self.check_called_aet,
            "DicomModalities": {"dicomfs": ["DICOMFS", "127.0.0.1", self.receiver_port]},
            "Plugins": [],
            **self.settings,
        }  # fmt: skip
        (self.root / "config.json").write_text(json.dumps(config))
        self.process = subprocess.Popen(
            ["Orthanc", str(self.root / "config.json")],
            stdout=subprocess.DEVNULL, stderr=(self.root / "orthanc.log").open("ab"),
            env={**os.environ, "TCP_NODELAY": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while dcmtk("echoscu", "-aec", "ORTHANC", "127.0.0.1", str(self.port)).returncode:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.root / "orthanc.log").read_text())
            time.sleep(0.1)

    @property
    def address(self) -> str:
        return f"ORTHANC@127.0.0.1:{self.port}"

    def upload(self, *paths: Path) -> None:
        """Send files with storescu; return once Orthanc answers queries with every one."""
        result = dcmtk("storescu", "-aec", "ORTHANC", "+sd", "+r", "127.0.0.1", str(self.port),
                       *map(str, paths), nodelay=True)  # fmt: skip
        assert result.returncode == 0, result.stderr
        files = [p for path in paths for p in (path.rglob("*") if path.is_dir() else [path])]
        waiting = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                   for p in files if p.is_file()}  # fmt: skip
        deadline = time.monotonic() + 60
        while waiting := {uid for uid in waiting if not self._knows(uid)}:
            assert time.monotonic() < deadline, f"Orthanc never listed {sorted(waiting)[:3]}"
            time.sleep(0.05)

    def _knows(self, sop_uid: str) -> bool:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/tools/lookup", data=sop_uid.encode()
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return any(item["Type"] == "Instance" for item in json.loads(response.read()))

    def upload_as_is(self, *paths: Path) -> None:
        """Store files through Orthanc's REST API: kept in their own transfer syntax,
        whatever dcmtk could negotiate."""
        for path in paths:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.http_port}/instances", data=path.read_bytes()
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.status == 200

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)


MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


def send_raw_store(
    assoc: Any, sop_uid: str, dataset: bytes, context_id: int = 1, sop_class: str = MR_IMAGE
) -> int | None:
    """A C-STORE of dataset bytes as they are (in the context's transfer syntax), bypassing the
    checks pynetdicom makes before it sends; the status, or None if there is no answer."""
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = sop_uid
    request.Priority = 2
    request.DataSet = io.BytesIO(dataset)
    with reactor.parked(assoc):  # the answer is ours to read, not pynetdicom's thread's
        try:
            assoc.dimse.send_msg(request, context_id)
            _, response = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
    return None if response is None else int(response.Status)


def acknowledged(log: list[str]) -> list[Path]:
    """Files storescu -v saw answered with Success."""
    done, current = [], None
    for line in log:
        if match := re.search(r"Sending file: (.*)$", line):
            current = Path(match.group(1).strip())
        elif "Received Store Response (Success)" in line and current is not None:
            done.append(current)
            current = None
    return done


def killed_mid_transfer(server: Serve, folder: Path, after: int) -> list[Path]:
    """storescu -v sends the folder to server, which is killed (kill -9) once `after`
    instances were acknowledged; the files it acknowledged, every one of them."""
    sender = subprocess.Popen(
        [str(DCMTK / "storescu"), "-v", "-aec", "DICOMFS", "+sd", "+r", "127.0.0.1",
         str(server.port), str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    log: list[str] = []
    assert sender.stdout is not None
    for line in sender.stdout:
        log.append(line)
        if sum("Received Store Response (Success)" in entry for entry in log) == after:
            server.kill()  # in the middle of the transfer
            break
    sender.wait(timeout=60)
    log += sender.stdout.readlines()
    return acknowledged(log)
